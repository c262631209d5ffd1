"""Soak: ``inferwatch run`` (every detector on) at a steady rate of live traffic
(wall-clock event times, 20,000 clients cycling) for minutes; resident memory
sampled every few seconds must level off, and the daemon must keep up.
The producer batches for 500 ms: the test broker's memory storage slows down with
every batch stored (see ``bench.latency.LINGER_MS``), and latency is not measured here.

    .venv/bin/python -m bench.soak [--minutes 5] [--rate 1000]
    .venv/bin/python -m bench.soak --full          # the 30-minute soak
    .venv/bin/python -m bench.soak --in-process --minutes 45 --rate 1500

``--in-process`` runs the daemon's own parts (pipeline, checkpoints to SQLite, outbox
delivery) in this process over the same traffic, with event time running as fast as
they go, and samples the Python heap (``sys.getallocatedblocks``) besides RSS: flat
blocks with growing RSS is the allocator, growing blocks is the daemon's state.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import orjson

from bench.harness import (
    DaemonProcess,
    daemon_config,
    new_topic,
    process_cpu_s,
    rss_kb,
    start_broker,
)
from bench.latency import benign_docs, traffic
from bench.report import write_section
from monitor.config import build_config
from monitor.daemon import Daemon
from monitor.pipeline import Record

SOAK_LINGER_MS = 500.0  # few, large produce batches: the test broker keeps up for 30 min


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--full", action="store_true", help="30 minutes")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--sample-s", type=float, default=10.0,
                        help="wall seconds between samples (--in-process: every 120 s of event time)")
    parser.add_argument("--clients", type=int, default=5000,
                        help="benign clients cycling (few enough that each one's windows fill early)")
    parser.add_argument("--in-process", action="store_true",
                        help="the daemon's parts in this process, event time as fast as they go")
    args = parser.parse_args()
    minutes = 30.0 if args.full else args.minutes
    if args.in_process:
        in_process(minutes, args.rate, args.clients)
        return
    seconds = minutes * 60
    broker = start_broker()
    samples: list[tuple[float, float, int, float, float]] = []
    # (elapsed s, RSS MiB, events read, daemon and broker CPU share since the last sample)
    try:
        topic = new_topic(broker, 3)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            cfg = daemon_config(broker.bootstrap, topic, work, group="soak",
                                kafka={"auto_offset_reset": "latest"})
            d = DaemonProcess(cfg, work)
            try:
                d.wait_ready()
                stop = threading.Event()
                result: dict[str, float] = {}
                t = threading.Thread(target=lambda: result.update(
                    traffic(broker.bootstrap, topic, args.rate, seconds, 1e9, stop,
                            clients=args.clients, linger_ms=SOAK_LINGER_MS)))
                start = time.monotonic()
                cpu0 = d.cpu_s()
                t.start()
                assert broker.proc is not None
                last = (start, cpu0, process_cpu_s(broker.proc.pid))
                broker_cpu0 = last[2]
                while t.is_alive():
                    time.sleep(args.sample_s)
                    now, dc, bc = time.monotonic(), d.cpu_s(), process_cpu_s(broker.proc.pid)
                    span = now - last[0]
                    samples.append((now - start, d.rss_kb() / 1024, d.events(),
                                    (dc - last[1]) / span, (bc - last[2]) / span))
                    last = (now, dc, bc)
                    e, r, n, ds, bs = samples[-1]
                    print(f"{e:6.0f}s RSS {r:7.1f} MiB, {n:,} events, CPU daemon {ds:.0%} "
                          f"broker {bs:.0%}", flush=True)  # progress, also into a file
                cpu = d.cpu_s() - cpu0
                broker_cpu = process_cpu_s(broker.proc.pid) - broker_cpu0
                time.sleep(3)
                final = d.events()
            finally:
                d.stop()
    finally:
        broker.stop()
    sent = int(result["sent"])
    verdict = "kept up" if final >= sent else (
        f"**fell behind**: {sent - final:,} unread 3 s after the traffic stopped")
    third = max(1, len(samples) // 3)
    early = sum(x[1] for x in samples[third:2 * third]) / max(1, len(samples[third:2 * third]))
    late = sum(x[1] for x in samples[-third:]) / third
    peak = max(x[1] for x in samples)
    table = "\n".join(f"| {e:,.0f} | {r:,.1f} | {n:,} | {ds:.0%} | {bs:.0%} |"
                      for e, r, n, ds, bs in samples[:: max(1, len(samples) // 12)])
    arenas = os.environ.get("MALLOC_ARENA_MAX")
    env_note = (f" glibc's `MALLOC_ARENA_MAX={arenas}` was set for the daemon (at most {arenas}"
                " malloc arenas shared by its threads)." if arenas else "")
    body = f"""`inferwatch run`, every detector on, SQLite store, a live 3-partition topic fed at
{result['sent'] / result['seconds']:,.0f} events/s for {minutes:g} minutes
({'the full soak' if args.full else 'the short default; `--full` runs 30 minutes'}); event
times are the wall clock; {args.clients:,} clients cycle ({args.rate / args.clients:.2f} events/s
each), so every client fills its windows (the probing and coverage detectors keep
their counts for 10 and 60 minutes) and reaches its alert state within the first third: a
leak shows as growth from the middle third to the last, warm-up does not. The
producer batches for {SOAK_LINGER_MS:g} ms (so the test broker, which slows with every
stored batch, keeps up).
The daemon read {final:,} of {int(result['sent']):,} events ({verdict}) and used
{cpu / result['seconds']:.0%} of a core, the broker {broker_cpu / result['seconds']:.0%}.{env_note}

| resident memory | MiB |
|---|---|
| mean over the middle third | {early:,.1f} |
| mean over the last third | {late:,.1f} |
| **growth, last third vs middle third** | **{(late - early) / early:+.1%}** |
| peak | {peak:,.1f} |

| elapsed s | RSS MiB | events read | daemon CPU | broker CPU |
|---|---|---|---|---|
{table}
"""
    print(body)
    write_section("soak" if not arenas else "soak_arenas",
                  "Soak: memory at a steady rate" + (f" (MALLOC_ARENA_MAX={arenas})" if arenas else ""),
                  (f"MALLOC_ARENA_MAX={arenas} " if arenas else "") +
                  f".venv/bin/python -m bench.soak {'--full' if args.full else f'--minutes {minutes:g}'}"
                  f" --rate {args.rate:g} --clients {args.clients}", body)


def in_process(minutes: float, rate: float, clients: int, partitions: int = 3,
               batch: int = 500, checkpoint_s: float = 5.0, sample_s: float = 120.0) -> None:
    """The soak's traffic through a ``Daemon``'s pipeline, checkpointer and dispatcher
    (no Kafka): ``rate`` events per second of event time for ``minutes``, a checkpoint
    every ``checkpoint_s`` of event time, a sample of the heap every ``sample_s``."""
    docs = benign_docs()
    samples: list[tuple[float, int, float, int, int]] = []
    # (event minutes, allocated blocks, RSS MiB, firing alerts, tracked keys)
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(build_config(daemon_config("127.0.0.1:1", "soak", Path(tmp),
                                                   group="soak"), env={}))
        daemon.store.migrate()
        pipeline = daemon.pipeline
        pids = [("soak", p) for p in range(partitions)]
        for pid in pids:
            pipeline.adopt(pid, None)
        offsets = [0] * partitions
        t0 = float(int(time.time()))
        total = int(rate * minutes * 60)
        last_checkpoint = last_sample = t0
        started = time.monotonic()
        i = 0
        while i < total:
            per: list[list[Record]] = [[] for _ in pids]
            for _ in range(min(batch, total - i)):
                doc = docs[i % len(docs)]
                doc["ts"] = round(t0 + i / rate, 3)
                client = doc["client_id"] = f"client-{i % clients:05d}"
                p = zlib.crc32(client.encode()) % partitions  # keyed by client, as producers are
                per[p].append(Record(offsets[p], orjson.dumps(doc)))
                offsets[p] += 1
                i += 1
            for pid, records in zip(pids, per, strict=True):
                pipeline.process(pid, records)
            pipeline.advance()
            now = t0 + i / rate
            daemon.checkpointer.journal()
            daemon.dispatcher.deliver()
            if now - last_checkpoint >= checkpoint_s:
                daemon.checkpointer.save()
                last_checkpoint = now
            if now - last_sample >= sample_s or i == total:
                last_sample = now
                gc.collect()  # count live objects, not garbage waiting for a collection
                samples.append(((now - t0) / 60, sys.getallocatedblocks(), rss_kb() / 1024,
                                len(pipeline.alerts.firing), pipeline.tracked_clients()))
                m, b, r, f, k = samples[-1]
                print(f"{m:5.0f} min of event time: {b:,} blocks, RSS {r:.1f} MiB, {f:,} alerts "
                      f"firing, {k:,} keys ({time.monotonic() - started:.0f} s)", flush=True)
        daemon.store.close()
    third = max(1, len(samples) // 3)
    middle, last = samples[third:2 * third], samples[-third:]

    def growth(col: int) -> str:
        a = sum(s[col] for s in middle) / len(middle)
        b = sum(s[col] for s in last) / len(last)
        return f"{(b - a) / a:+.2%}"

    table = "\n".join(f"| {m:,.0f} | {b:,} | {r:,.1f} | {f:,} | {k:,} |"
                      for m, b, r, f, k in samples[:: max(1, len(samples) // 12)])
    body = f"""The soak's traffic ({rate:,.0f} events/s of event time, {clients:,} clients cycling,
{partitions} partitions keyed by client) through the daemon's own pipeline, checkpoints
(SQLite, every {checkpoint_s:g} s of event time) and outbox delivery, in one process and
without Kafka, for {minutes:g} minutes of event time ({time.monotonic() - started:,.0f} s of
wall time). Python's heap (`sys.getallocatedblocks()` after a full collection) and RSS,
sampled every {sample_s:g} s of event time:

| growth, last third vs middle third | |
|---|---|
| **Python heap blocks** | **{growth(1)}** |
| RSS | {growth(2)} |

| event minutes | heap blocks | RSS MiB | alerts firing | keys tracked |
|---|---|---|---|---|
{table}
"""
    print(body)
    write_section("soak_in_process",
                  f"Soak in one process: the daemon's state over {minutes:g} minutes of event time",
                  f".venv/bin/python -m bench.soak --in-process --minutes {minutes:g} "
                  f"--rate {rate:g} --clients {clients}", body)


if __name__ == "__main__":
    main()
