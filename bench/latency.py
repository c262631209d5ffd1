"""Latency from an event's produce time to its alert record, while ``inferwatch
run`` (every detector on) consumes a steady stream at a given rate.

Benign traffic (the benchmark events, re-stamped with the wall clock) flows at
``--rate`` events/s; every ``--every`` seconds a new client sends a burst just
over the flooding budget, and the event that crosses it raises an alert whose
``last_seen`` is that event's produce time. Latency = the moment the alert
record appears in the JSONL sink minus ``last_seen``.

    .venv/bin/python -m bench.latency [--rate 1000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import orjson
from kafka import KafkaProducer

from bench import data
from bench.harness import DaemonProcess, daemon_config, new_topic, percentile, start_broker
from bench.report import write_section

BUDGET = 20  # flooding.max_events for the benchmark: a burst of BUDGET + 1 fires


def _stamp(line: bytes, ts: float, client: str | None = None) -> bytes:
    doc = orjson.loads(line)
    doc["ts"] = round(ts, 3)
    if client is not None:  # one client, one model: its requests count together
        doc["client_id"] = client
        doc["model"], doc["model_version"] = data.MODELS[0]
    return orjson.dumps(doc)


def traffic(bootstrap: str, topic: str, rate: float, seconds: float, every: float,
            stop: threading.Event) -> dict[str, float]:
    lines = data.load(300_000)[:50_000]
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks=1)
    start = time.time()
    sent = 0
    next_burst = start + every
    bursts = 0
    i = 0
    while not stop.is_set() and time.time() - start < seconds:
        now = time.time()
        due = int((now - start) * rate)
        while sent < due:
            line = lines[i % len(lines)]
            i += 1
            v = _stamp(line, time.time())
            producer.send(topic, key=orjson.loads(v)["client_id"].encode(), value=v)
            sent += 1
        if now >= next_burst:
            client = f"burst-{bursts:05d}"
            for _ in range(BUDGET + 1):
                producer.send(topic, key=client.encode(),
                              value=_stamp(lines[i % len(lines)], time.time(), client))
                i += 1
            producer.flush()
            bursts += 1
            next_burst += every
        time.sleep(0.002)
    producer.flush()
    producer.close()
    return {"sent": sent, "bursts": bursts, "seconds": time.time() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="benign events/s (half the measured maximum)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=0.25, help="seconds between bursts")
    parser.add_argument("--checkpoint-interval", type=float, default=None,
                        help="checkpoint.interval_s (default: the daemon's default)")
    args = parser.parse_args()
    broker = start_broker()
    seen: dict[str, float] = {}
    try:
        topic = new_topic(broker, 3)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            extra = {}
            if args.checkpoint_interval is not None:
                extra["checkpoint"] = {"interval_s": args.checkpoint_interval}
            cfg = daemon_config(broker.bootstrap, topic, work, group="latency",
                                kafka={"auto_offset_reset": "latest"},
                                detectors={"flooding": {"max_events": BUDGET, "window_s": 60}},
                                **extra)
            d = DaemonProcess(cfg, work)
            try:
                d.wait_ready()
                stop = threading.Event()
                result: dict[str, float] = {}
                t = threading.Thread(target=lambda: result.update(
                    traffic(broker.bootstrap, topic, args.rate, args.seconds, args.every, stop)))
                t.start()
                alerts = work / "alerts-bench.jsonl"
                pos = 0
                draining = False
                deadline = float("inf")  # set once production ends
                cpu0 = d.cpu_s()
                while t.is_alive() or not draining or time.monotonic() < deadline:
                    if not t.is_alive() and not draining:
                        draining = True
                        deadline = time.monotonic() + 60  # a backlog drains before its alerts
                    if alerts.exists():
                        with alerts.open("rb") as fh:
                            fh.seek(pos)
                            chunk = fh.read()
                        complete = chunk[: chunk.rfind(b"\n") + 1]
                        pos += len(complete)
                        now = time.time()
                        for line in complete.splitlines():
                            rec = orjson.loads(line)
                            client = rec["subject"].get("client_id", "")
                            if (rec["status"] == "firing"
                                    and client.startswith("burst-") and client not in seen):
                                last = datetime.fromisoformat(rec["last_seen"]).timestamp()
                                seen[client] = now - last
                    time.sleep(0.01)
                    if not t.is_alive() and len(seen) >= result.get("bursts", 1e9):
                        break
                cpu = d.cpu_s() - cpu0
                m = d.metrics()
                cp_n = m.get("inferwatch_checkpoint_seconds_count", 0.0)
                cp_mean = m.get("inferwatch_checkpoint_seconds_sum", 0.0) / max(1.0, cp_n)
                tracked = m.get("inferwatch_tracked_clients", 0.0)
            finally:
                d.stop()
    finally:
        broker.stop()
    lat = sorted(seen.values())
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    worst = lat[-1] if lat else float("nan")
    rate = (result["sent"] + result["bursts"] * (BUDGET + 1)) / result["seconds"]
    interval = args.checkpoint_interval or 5.0
    body = f"""`inferwatch run` with every detector on (flooding budget {BUDGET} per minute for the
benchmark), consuming a live 3-partition topic at {rate:,.0f} events/s for {result['seconds']:.0f} s
(`--rate {args.rate:g}`: about half the maximum `inferwatch run` rate measured by
`bench.throughput` on this machine); the daemon used {cpu / result['seconds']:.0%} of a core.
A new client crosses its budget every {args.every:g} s; latency is from the produce time of the
event that crossed it to the alert record in the JSONL sink (checkpoint interval
{interval:g} s; an alert triggers its checkpoint after `checkpoint.alert_flush_s` = 0.5 s).

{cp_n:.0f} checkpoints of {tracked:,.0f} tracked clients took {cp_mean:.2f} s each on average.

| alerts measured | p50 | p99 | max | target |
|---|---|---|---|---|
| {len(lat)} of {result['bursts']} | {p50:.2f} s | {p99:.2f} s | {worst:.2f} s | p99 < 2 s |
"""
    print(body)
    write_section("latency", "Latency: produce time to alert record",
                  f".venv/bin/python -m bench.latency --rate {args.rate:g} "
                  f"--seconds {args.seconds:g}", body)


if __name__ == "__main__":
    main()
