"""Where the time goes: a pyinstrument profile of the hot path (the pipeline over
the benchmark events, every detector on), summarised by component.

    .venv/bin/python -m bench.profile [--events 100000] [--skip 50000]

The first ``--skip`` events warm the state up (clients seen, drift references
built) and are not profiled: the figures are the steady state.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

from pyinstrument import Profiler
from pyinstrument.frame import Frame

from bench import data
from bench.report import write_section
from monitor.config import build_config
from monitor.pipeline import Pipeline, Record

ROOT = Path(__file__).resolve().parent.parent
# (path fragment, component) — the first match names a frame's self time
COMPONENTS = [
    ("detectors/neighbours.py", "per-client: query neighbours (evasion)"),
    ("detectors/probing.py", "per-client: low-confidence share (extraction)"),
    ("detectors/out_of_range.py", "per-client: out-of-range share (extraction)"),
    ("detectors/share.py", "per-client: windowed shares (low confidence, out of range)"),
    ("detectors/flooding.py", "per-client: request rate (flooding)"),
    ("detectors/rules.py", "per-client: count rules"),
    ("detectors/attack.py", "per-client: attack verdict"),
    ("detectors/allow.py", "per-client: allow-list"),
    ("detectors/keyed.py", "keyed fan-out (clone, LRU, expiry, findings)"),
    ("detectors/drift.py", "model-wide: drift"),
    ("detectors/reference.py", "model-wide: drift reference / encoding"),
    ("detectors/confidence.py", "model-wide: confidence"),
    ("detectors/windows.py", "model-wide: windows"),
    ("monitor/summaries.py", "window summaries (scheduled jobs)"),
    ("monitor/decode.py", "decode + validate"),
    ("msgspec", "decode + validate"),
    ("alerts/", "alert manager"),
    ("monitor/pipeline.py", "pipeline loop"),
    ("numpy", "numpy"),
    ("scipy", "scipy"),
]


def component(frame: Frame, inherited: str) -> str:
    path = frame.file_path or ""
    for fragment, name in COMPONENTS:
        if fragment in path:
            return name
    return inherited


def attribute(frame: Frame, inherited: str, out: dict[str, float]) -> None:
    name = component(frame, inherited)
    children_time = sum(c.time for c in frame.children)
    out[name] += max(0.0, frame.time - children_time)
    for child in frame.children:
        attribute(child, name, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--skip", type=int, default=50_000)
    args = parser.parse_args()
    lines = data.load(300_000)[: args.skip + args.events]
    pipeline = Pipeline(build_config({}, env={}))
    pid = ("bench", 0)

    def feed(start: int, end: int) -> None:
        for i in range(start, end, 2000):
            pipeline.process(pid, [Record(i + j, v) for j, v in enumerate(lines[i:min(i + 2000, end)])])
            pipeline.advance()
            pipeline.pending.clear()

    feed(0, args.skip)
    profiler = Profiler(interval=0.001)
    t = time.perf_counter()
    profiler.start()
    feed(args.skip, args.skip + args.events)
    profiler.stop()
    wall = time.perf_counter() - t
    root = profiler.last_session.root_frame() if profiler.last_session else None
    assert root is not None
    shares: dict[str, float] = defaultdict(float)
    attribute(root, "other (Python runtime, GC, glue)", shares)
    total = sum(shares.values())
    ordered = sorted(shares.items(), key=lambda kv: -kv[1])
    rows = "\n".join(f"| {name} | {t / total:.0%} | {t / args.events * 1e6:,.1f} |"
                     for name, t in ordered if t / total >= 0.005)
    text = profiler.output_text(unicode=False, color=False)
    (ROOT / "bench" / ".cache").mkdir(exist_ok=True)
    (ROOT / "bench" / ".cache" / "profile.txt").write_text(text)
    body = f"""pyinstrument over `Pipeline.process` + `advance` (what `inferwatch run` and `replay`
run per batch), every detector on, {args.events:,} benchmark events after {args.skip:,} of
warm-up: {args.events / wall:,.0f} events/s in this process while profiled. Self time by
component (a frame's own time, outside the frames it calls):

| component | share | µs per event |
|---|---|---|
{rows}

The full call tree of this run is written to `bench/.cache/profile.txt`.

**Changed because of the profile** (issue 7; results identical, every test green):

- `Detector.clone()` read the constructor signature with `inspect.signature` for every new
  client: 40% of the replay time on a stream with many new clients. The parameter names are
  now read once per class (`detectors/base.py`).
- CPython's cyclic GC ran a young collection every 700 allocations while the state holds
  millions of small long-lived objects: 30% of the time. `monitor.pipeline.tune_gc()` raises
  the thresholds (100,000 / 50 / 100); the hot path makes no reference cycles. Replay of the
  300,000 benchmark events, same run: 7,644 → 10,955 events/s.
- Validation checked each feature value in a Python loop; an all-numeric feature map (the
  common case) is now checked with one C-level `sum`, the exact per-value checks run only
  when that fails: decoding + validation 96,431 → 128,883 events/s (0 differences over
  30,000 events, the malformed corpus and 2,000 corrupted records; `tests/monitor/test_decode_fuzz.py`).
- Model-wide detectors took events one at a time; they now take each batch
  (`Keyed.update_batch` → `update_many`) and encode it on the reference layout in one numpy
  pass: drift reference/encoding 40 → 12 µs, confidence 30 → 20 µs per event in back-to-back
  profiles on a loaded machine (bit-identical results, `tests/detectors/test_model_batch.py`).
- Window summaries fold a batch in columns (13 → 7 CPU-µs per event), decoding goes straight
  into `Event` for Unix-second timestamps (8.7 → 7.8), `Record` is a msgspec struct (1.5 →
  0.2 µs), the replay reader splits 4 MB chunks in C.
- Checkpoints write only the clients that changed (`monitor/checkpoint.py`), no longer every
  tracked client's state each time (see "Scale of state" and "Latency").
- The per-client query-neighbours signal did a dozen small numpy calls per event (38% of
  the hot path). The pipeline now announces each batch (`Keyed.prepare`): queries, sketches,
  group codes and every ring comparison of the batch are a few numpy passes, and `update`
  applies each event's precomputed step (identical findings and state for any cut into
  batches, `tests/detectors/test_batch_prepare.py`). Per-client signals 120 → 62 µs per event
  back to back; the session-start commit against this one, alternating on one topic:
  `inferwatch run` 3,092 → 4,288 events/s (median of 2), replay 6,735 → 11,705 (median of 3).
- Batched, the query-neighbours signal was still the largest item (34%, 36.9 µs per event in
  this profile's run before): per-event Python objects around numpy passes over small arrays.
  Its walk through a batch (ring comparisons, retries, bisection, sparse and star runs) is now
  one compiled loop (numba, `detectors/query_walk.py`) over the batch's clients copied into
  arrays; `update` copies each event's result back. Alerts and client state are identical
  over 100,000 benchmark events cut into random batches with all three keyings, and
  `bench.attacks` gives the same table. `Pipeline.process` 48.5 → 42.6 and 50.4 → 44.3 µs
  per event in two alternating pairs; `inferwatch run` 14,694 → 17,681 events/s (1.20x,
  `bench.ab`). The price: numba and llvmlite (~210 MB installed, ~110 MiB resident:
  `bench.sizing` 255 → 372 MiB peak) and about 1 s of compilation when the first batch
  arrives (since compiled at start-up, before the daemon joins the group).
- Drift's fold, the out-of-range signal, the confidence table and the window summaries read
  feature maps and probabilities row by row (a getter and a type check per row: about 3 µs
  per event in drift's fold alone). A batch whose maps are plain dicts with the same keys in
  one order and only numbers (one model's events) is now read with one C-level `sum` as the
  type check and one `fromiter` (`detectors.reference.uniform_columns`), and a windowed count
  whose whole window has passed is zeroed in one copy. Smaller than its share suggested:
  callgrind counts 295,048 → 288,635 instructions per event (2.2% fewer) in `Pipeline.process`
  over 20,000 benchmark events after 40,000 of warm-up, and `inferwatch run` went 14,770 →
  15,137 events/s back to back (1.03x, 0.92 to 1.10 per pair, `bench.ab`). Batched and
  one-by-one reads stay identical (`tests/detectors/test_feature_matrix.py`,
  `test_summaries_batching.py`, `test_confidence.py`).
- A profile of the daemon itself (`inferwatch run` under pyinstrument) showed checkpoints at a
  third of its time: at 4,500 events/s nearly all 20,000 clients change within one 5 s
  interval. A client's state is now read with one `attrgetter` call, keys are written as JSON
  text without `json.dumps`, window counts are stored as bytes: checkpoints 14.3 → 10.0 s of
  the same 100,000-event run.

**Still to do**: the profile above is `Pipeline.process` alone, where pyinstrument inflates
small Python calls (compare the profiled rate above with replay's in "End-to-end
throughput"). The Kafka path pays more than replay: fetching, the Kafka client's network
thread, and checkpoints, whose fixed costs (merging window summaries, pickling the
model-wide state) and per-client rows are also what the latency tail waits for;
`bench.daemon_profile` measures those shares in `inferwatch run` itself. Past that, the
cost is per-event Python in the
per-client fan-out (`Keyed`, the verdict, five signals): reaching the 0.5 ratio needs the
per-client state in columns (arrays indexed by a client's slot) so that a batch updates all
its clients in compiled passes like the query walk's, without copying them in and out — a
redesign of `detectors/keyed.py` and the signals.
"""
    print(body)
    write_section("profile", "Where the time goes: profile of the hot path",
                  f".venv/bin/python -m bench.profile --events {args.events} --skip {args.skip}",
                  body)


if __name__ == "__main__":
    main()
