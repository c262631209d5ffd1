"""Soak: ``inferwatch run`` (every detector on) at a steady rate of live traffic
(wall-clock event times, 20,000 clients cycling) for minutes; resident memory
sampled every few seconds must level off, and the daemon must keep up.
The producer batches for 500 ms: the test broker's memory storage slows down with
every batch stored (see ``bench.latency.LINGER_MS``), and latency is not measured here.

    .venv/bin/python -m bench.soak [--minutes 5] [--rate 1000]
    .venv/bin/python -m bench.soak --full          # the 30-minute soak
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

from bench.harness import DaemonProcess, daemon_config, new_topic, process_cpu_s, start_broker
from bench.latency import traffic
from bench.report import write_section

SOAK_LINGER_MS = 500.0  # few, large produce batches: the test broker keeps up for 30 min


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--full", action="store_true", help="30 minutes")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=5000,
                        help="benign clients cycling (few enough that each one's windows fill early)")
    args = parser.parse_args()
    minutes = 30.0 if args.full else args.minutes
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


if __name__ == "__main__":
    main()
