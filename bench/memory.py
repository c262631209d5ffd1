"""Scale of state: resident memory per tracked client (10^6 distinct clients,
every detector on) and the size of the model-wide state as traffic grows (it
must not grow with traffic). Also what a checkpoint of that state costs.

    .venv/bin/python -m bench.memory [--clients 1000000]
"""

from __future__ import annotations

import argparse
import gc
import pickle
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np

from bench import data
from bench.harness import rss_kb
from bench.report import write_section
from monitor.checkpoint import Checkpointer
from monitor.config import build_config
from monitor.pipeline import Pipeline, Record
from monitor.store import Store


def client_batches(n: int, batch: int = 2000, seed: int = 5):
    """``n`` events, each from a new client, realistic bodies (25 features,
    10-class probabilities), one second of event time per 1000 events."""
    rng = np.random.default_rng(seed)
    enc = msgspec.json.Encoder()
    for start in range(0, n, batch):
        m = min(batch, n - start)
        x = rng.normal(0, 1, (m, data.N_FEATURES)).round(4)
        p = rng.dirichlet(np.ones(len(data.LABELS)), m).round(5)
        out = []
        for j in range(m):
            i = start + j
            model, version = data.MODELS[i % len(data.MODELS)]
            out.append(Record(i, enc.encode({
                "ts": data.T0 + i / 1000, "model": model, "model_version": version,
                "client_id": f"client-{i:07d}", "request_id": f"r{i}",
                "features": dict(zip(data.FEATURES, x[j].tolist(), strict=True)),
                "probabilities": dict(zip(data.LABELS, p[j].tolist(), strict=True)),
                "prediction": data.LABELS[int(p[j].argmax())],
            })))
        yield out


def per_client(n: int) -> dict[str, float]:
    """RSS per client, live and idle: clients arrive at 1,000 per second of event
    time and a client idle for ``state.pack_idle_after_s`` (300 s) is packed, so
    from 10% to 30% of the run every new client is live, and from 40% to 100% the
    live ones are a constant 300,000 and every added client is an idle (packed) one."""
    config = build_config({}, env={})
    pipeline = Pipeline(config)
    pid = ("bench", 0)
    marks: dict[int, tuple[int, int]] = {}
    probe = {n // 10, n * 3 // 10, n * 4 // 10, n}
    t0 = time.perf_counter()
    done = 0
    for batch in client_batches(n):
        pipeline.process(pid, batch)
        pipeline.advance()  # as the daemon does after every poll: closes model-wide windows
        pipeline.pending.clear()
        done += len(batch)
        if done in probe:
            gc.collect()
            marks[done] = (pipeline.tracked_clients(), rss_kb())
            print(f"{done:,} clients: tracked {marks[done][0]:,}, "
                  f"RSS {marks[done][1] / 1024:,.0f} MiB")
    elapsed = time.perf_counter() - t0
    (c10, r10), (c30, r30), (c40, r40), (c1, r1) = (marks[k] for k in sorted(marks))
    keyed = pipeline.partitions[pid].detectors[0]
    packed = sum(slot.packed is not None for slot in keyed.slots.values())
    return {"clients": len(keyed), "packed": packed, "tracked": c1, "rss_mib": r1 / 1024,
            "live_b": (r30 - r10) * 1024 / (c30 - c10), "idle_b": (r1 - r40) * 1024 / (c1 - c40),
            "events_s": n / elapsed, **checkpoint_costs(pipeline, pid, n)}


def checkpoint_costs(pipeline: Pipeline, pid: tuple[str, int], n: int, again: int = 10_000) -> dict:
    """What checkpoints of that state cost on SQLite: the first (every client new), one
    after ``again`` more events of known clients (only they are written), and a restore
    of the partition into a fresh pipeline (a restart or a rebalance)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/state.db")
        store.migrate()
        checkpointer = Checkpointer(store, pipeline, group="bench", producer="bench")
        t = time.perf_counter()
        checkpointer.save()
        first_s = time.perf_counter() - t
        print(f"first checkpoint: {first_s:.1f} s")
        for batch in client_batches(again, seed=6):
            pipeline.process(pid, [Record(n + r.offset, r.value) for r in batch])
            pipeline.advance()
        pipeline.pending.clear()
        t = time.perf_counter()
        checkpointer.save()
        next_s = time.perf_counter() - t
        fresh = Pipeline(pipeline.config)
        t = time.perf_counter()
        Checkpointer(store, fresh, group="bench", producer="bench").restore([pid])
        restore_s = time.perf_counter() - t
        assert len(fresh.partitions[pid].detectors[0]) == len(pipeline.partitions[pid].detectors[0])
        db_mib = (Path(tmp) / "state.db").stat().st_size / 2**20
        store.close()
    return {"first_checkpoint_s": first_s, "again": again, "next_checkpoint_s": next_s,
            "restore_s": restore_s, "db_mib": db_mib}


def per_model(events: int) -> list[tuple[int, int, float]]:
    """(events seen, pickled model-wide state bytes, RSS MiB) as traffic grows."""
    config = build_config({}, env={})
    pipeline = Pipeline(config)
    lines = data.load(events)
    out = []
    step = 2000
    marks = {events // 6, events // 3, events * 2 // 3, events}
    for i in range(0, len(lines), step):
        pipeline.process(("bench", 0), [Record(i + j, v) for j, v in
                                        enumerate(lines[i:i + step])])
        pipeline.advance()
        pipeline.pending.clear()
        seen = min(i + step, len(lines))
        if seen in marks:
            size = len(pickle.dumps(pipeline.models, protocol=pickle.HIGHEST_PROTOCOL))
            out.append((seen, size, rss_kb() / 1024))
            print(f"{seen:,} events: model-wide state {size / 1024:,.0f} KiB")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--model-events", type=int, default=300_000)
    args = parser.parse_args()
    models = per_model(args.model_events)
    gc.collect()
    c = per_client(args.clients)
    pack_s = build_config({}, env={}).state.pack_idle_after_s
    n_models = len(data.MODELS)
    db, again, nxt = f"{c['db_mib']:,.0f}", f"{c['again']:,}", f"{c['next_checkpoint_s']:.2f}"
    body = f"""One process, `Pipeline` with every detector on (the defaults), events with 25 features
and 10-class probabilities.

**Per tracked client** ({args.clients:,} events, each from a new client, 1,000 new clients
per second of event time, all kept: the default `state.max_clients` is 1,000,000 and none
is idle for an hour of event time; a client idle for `state.pack_idle_after_s`
= {pack_s:,.0f} s keeps its state packed, so the last {pack_s * 1000:,.0f} clients are live):

| figure | value |
|---|---|
| clients tracked | {c['clients']:,} ({c['packed']:,} of them packed) |
| resident memory at the end | {c['rss_mib']:,.0f} MiB |
| **RSS per idle (packed) client** (from 40% to 100% of the run; target < 1 KB) | **{c['idle_b']:,.0f} B** |
| RSS per live client (from 10% to 30%: every client still live) | {c['live_b']:,.0f} B |
| events/s while adding new clients | {c['events_s']:,.0f} |
| first checkpoint (every client new; SQLite) | {c['first_checkpoint_s']:.1f} s, {db} MiB on disk |
| the next checkpoint, after {again} events of known clients (only they are written) | {nxt} s |
| restore of the partition (restart, rebalance) | {c['restore_s']:.1f} s |

**Model-wide state** ({n_models} models x 25 features, the benchmark stream of
`bench.throughput`): the pickled size must stay flat as traffic grows.

| events seen | pickled model-wide state | process RSS |
|---|---|---|
""" + "\n".join(f"| {n:,} | {s / 1024:,.0f} KiB ({s / 1024 / n_models:,.0f} KiB per model) | "
                f"{r:,.0f} MiB |" for n, s, r in models)
    print(body)
    write_section("memory", "Scale of state: memory per client and per model",
                  f".venv/bin/python -m bench.memory --clients {args.clients}", body)


if __name__ == "__main__":
    main()
