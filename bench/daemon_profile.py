"""Where the time goes in ``inferwatch run`` itself: py-spy samples the daemon while
it consumes the benchmark topic (every detector on, SQLite store), and the samples
are summed by phase of the main loop (poll, decode, the detectors, checkpoints, ...).

    .venv/bin/python -m bench.daemon_profile [--events 200000] [--rate 200]

``bench.profile`` profiles ``Pipeline.process`` alone in one process; this one
shows what the daemon adds around it (fetching, checkpoints, the Kafka client's
network thread). py-spy attaches to the running daemon, so it needs the right to
trace it (root, or ``kernel.yama.ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench import data
from bench.harness import (
    DaemonProcess,
    bare_consume,
    daemon_config,
    daemon_rate,
    keyed,
    new_topic,
    produce,
    start_broker,
)
from bench.report import write_section

# (function names in a sample's stack, phase): the first phase whose names occur wins
PHASES: list[tuple[tuple[str, ...], str]] = [
    (("Thread._bootstrap",), "other threads: Kafka client network I/O, HTTP server"),
    (("Daemon.checkpoint", "Daemon._on_revoke"), "checkpoint: changed clients, alerts, summaries, offsets"),
    (("Pipeline.advance",), "model-wide windows closing on the watermark (drift, confidence)"),
    (("Decoder.decode",), "decode + validate"),
    (("Keyed.prepare",), "per-client batch pass (query sketches and comparisons)"),
    (("Pipeline._tick_clients", "Keyed.update", "AllowListed.update"),
     "per-client updates (fan-out, verdict, signals)"),
    (("Keyed.update_batch",), "model-wide accumulation of the batch"),
    (("SummaryCollector.add",), "window summaries (scheduled jobs)"),
    (("Pipeline._alert",), "alert manager"),
    (("Pipeline.process",), "pipeline loop"),
    (("KafkaSource.poll", "ConfluentSource.poll"), "poll: fetch and unpack records"),
    (("Daemon._journal", "Dispatcher.deliver"), "alert outbox and delivery"),
    (("_find_and_load",), "start-up (imports)"),
]
OTHER = "other: main loop, runtime"
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*):(?P<line>\d+)\)$")


def read_samples(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    """py-spy's raw output: one stack per line (frames from the root, ``;``-separated,
    each ``function (file:line)``) and its sample count. A frame name holding a line
    break (py-spy prints some as found) splits its line: the fragments are skipped."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            m = _FRAME.match(frame)
            frames.append((m["func"], m["file"]) if m else (frame, ""))
        out.append((frames, int(count)))
    return out


def phase_of(functions: set[str]) -> str:
    for names, phase in PHASES:
        if any(n in functions for n in names):
            return phase
    return OTHER


def summarise(samples: list[tuple[list[tuple[str, str]], int]]
              ) -> tuple[Counter[str], Counter[str], int]:
    """Samples per phase and per function (own time: the innermost frame), and the
    total without start-up."""
    phases: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, n in samples:
        phase = phase_of({f for f, _ in frames})
        phases[phase] += n
        if phase != "start-up (imports)" and frames:
            func, file = frames[-1]
            own[f"{func} ({_short(file)})"] += n
    total = sum(n for p, n in phases.items() if p != "start-up (imports)")
    return phases, own, total


def _short(file: str) -> str:
    parts = Path(file).parts
    for root in ("detectors", "monitor", "alerts", "kafka", "numpy", "sqlalchemy"):
        if root in parts:
            return "/".join(parts[parts.index(root):])
    return parts[-1] if parts else file


def record(events: int, rate_hz: int, out: Path) -> tuple[float, float]:
    """Run the daemon over ``events`` benchmark events under py-spy; its events/s,
    and those of a bare consumer (fetch + decode) on the same topic just before."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        sys.exit("py-spy is not installed: .venv/bin/pip install -e '.[dev]'")
    lines = data.load(max(events, 300_000))[:events]
    broker = start_broker()
    try:
        topic = new_topic(broker, 3)
        produce(broker.bootstrap, topic, keyed(lines))
        bare = bare_consume(broker.bootstrap, topic, events)
        work = Path(tempfile.mkdtemp(prefix="iw-profile-"))
        daemon = DaemonProcess(daemon_config(broker.bootstrap, topic, work, group="profile"), work)
        try:
            sampler = subprocess.Popen([spy, "record", "--pid", str(daemon.proc.pid), "--format",
                                        "raw", "--rate", str(rate_hz), "--nonblocking",
                                        "-o", str(out)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            rate, _ = daemon_rate(daemon, events)
            sampler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            _, err = sampler.communicate(timeout=60)
            if not out.exists():
                sys.exit(f"py-spy recorded nothing: {err.decode(errors='replace')[-500:]}")
        finally:
            daemon.stop()
    finally:
        broker.stop()
    return rate, bare


# the phases that fetch and decode, which the bare consumer does too
FETCH_AND_DECODE = ("decode + validate", "poll: fetch and unpack records",
                    "other threads: Kafka client network I/O, HTTP server")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="iw-spy-")) / "samples.txt"
    rate, bare = record(args.events, args.rate, out)
    phases, own, total = summarise(read_samples(out))
    us = 1e6 / rate
    rows = "\n".join(f"| {p} | {n / total:.0%} | {n / total * us:.1f} |"
                     for p, n in phases.most_common()
                     if p != "start-up (imports)" and n / total >= 0.005)
    fetch_us = sum(phases[p] for p in FETCH_AND_DECODE) / total * us
    budget_us = 1e6 / (0.5 * bare)
    top = "\n".join(f"| `{f}` | {n / total:.1%} |" for f, n in own.most_common(15))
    body = f"""py-spy ({args.rate} samples/s, all threads, idle time excluded) over `inferwatch run`
consuming {args.events:,} benchmark events (25 features, 10 classes, 20,000 clients, 3
partitions, local Tansu broker, SQLite store, every detector on): {rate:,.0f} events/s
while sampled, {total:,} samples after start-up. The µs per event are the share times
1/rate: the main loop's own cost per event, with the other threads' share beside it
(they run in parallel, but hold the same interpreter lock for their Python parts).

| phase (main loop unless named) | share of samples | µs per event |
|---|---|---|
{rows}

Functions by own time (the innermost frame of a sample; numpy's and the drivers' C code
counts for the Python function that called it):

| function | share |
|---|---|
{top}

**What it says about the 0.5 target.** A bare kafka-python consumer read the same topic
at {bare:,.0f} events/s just before ({1e6 / bare:.1f} µs per event). At half that rate the
daemon would have {budget_us:.1f} µs per event for everything; its own fetching and
decoding (the three phases the bare consumer also runs) take {fetch_us:.1f} µs here, which
leaves {max(0.0, budget_us - fetch_us):.1f} µs for the detectors, checkpoints and the loop
against the {us - fetch_us:.1f} µs they take. Trimming per-event Python does not close a
gap of that size. Nor would detectors that cost nothing: `bench.throughput` runs the
daemon with every detector off, and its own work beyond fetching and decoding
(validation, window summaries, checkpoints, the loop) takes about what the target
leaves ("End-to-end throughput"). The target needs native code for that work as well
as the per-client state in columns, updated a batch at a time.

**Changed because of it** (this profile's first run, 2026-12-06): the batch pass's
sketches and row sums used `np.add.accumulate` over short axes (2% and 2.3% of the
samples); they now add one term at a time over the batch, the same additions in the
same order: 7x faster sketches and 3-5x faster row sums on 700-row batches
(microbenchmarks), within the machine's noise for the daemon's rate.
"""
    print(body)
    write_section("daemon_profile", "Where the time goes in `inferwatch run` (py-spy)",
                  f".venv/bin/python -m bench.daemon_profile --events {args.events} "
                  f"--rate {args.rate}", body)


if __name__ == "__main__":
    main()
