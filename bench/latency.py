"""Latency from an event's produce time to its alert record, while ``inferwatch
run`` (every detector on) consumes a steady stream at a given rate.

Benign traffic (the benchmark events, re-stamped with the wall clock) flows at
``--rate`` events/s; every ``--every`` seconds a new client sends a burst just
over the flooding budget, and the event that crosses it raises an alert whose
``last_seen`` is that event's produce time. Latency = the moment the alert
record appears in the JSONL sink minus ``last_seen``.

The same traffic is first read by a bare kafka-python consumer (in its own
process, on a topic of its own): the time from produce to its poll for the same
burst events is the floor the broker and the client set on this machine, which
the daemon cannot go below. The traffic comes from librdkafka (confluent-kafka)
so that the load generator takes as little of the shared cores as it can.

    .venv/bin/python -m bench.latency [--rate 1000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition

from bench import data
from bench.harness import (
    CONSUMER_SETTINGS,
    DaemonProcess,
    daemon_config,
    new_topic,
    percentile,
    start_broker,
)
from bench.report import write_section

BUDGET = 20  # flooding.max_events for the benchmark: a burst of BUDGET + 1 fires
PARTITIONS = 3  # of each topic: the daemon's and the floor consumer's
# The producer's linger (librdkafka's default is 5 ms). Tansu's memory storage keeps each
# produced batch as one object and its fetch time grows with the objects stored: with
# 2 ms batches at 7,000 events/s, a bare consumer's produce-to-poll p50 grew from 0.03 s
# to 0.89 s within 90 s (and the broker took a whole core after 75,000 events at
# 1,000/s), a cost of the test broker that Kafka's indexed log does not have. At 20 ms
# the same consumer stays at p50 0.15 s, p99 0.30 s for the whole run.
LINGER_MS = 20.0


def benign_docs() -> list[dict]:
    """The benign traffic's event bodies: the first 50,000 of the benchmark stream."""
    return [orjson.loads(line) for line in data.load(300_000)[:50_000]]


def traffic(bootstrap: str, topic: str, rate: float, seconds: float, every: float,
            stop: threading.Event, clients: int | None = None,
            linger_ms: float = LINGER_MS) -> dict[str, float]:
    """Benign events at ``rate`` per second, stamped with the wall clock as they
    are sent, and every ``every`` seconds a new client's burst of ``BUDGET + 1``;
    ``clients``: the benign events come from that many clients (default: the
    benchmark stream's own client ids, 20,000); ``linger_ms``: how long the
    producer gathers a batch (see ``LINGER_MS``)."""
    docs = benign_docs()
    model, version = data.MODELS[0]
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms, "acks": 1,
                         "log_level": 3})
    start = time.time()
    sent = bursts = i = 0
    next_burst = start + every
    while not stop.is_set() and time.time() - start < seconds:
        now = time.time()
        due = int((now - start) * rate)
        while sent < due:
            doc = docs[i % len(docs)]
            i += 1
            doc["ts"] = round(time.time(), 3)
            if clients is not None:
                doc["client_id"] = f"client-{i % clients:05d}"
            producer.produce(topic, key=doc["client_id"].encode(), value=orjson.dumps(doc))
            sent += 1
        if now >= next_burst:
            client = f"burst-{bursts:05d}"  # one client, one model: its requests count together
            for _ in range(BUDGET + 1):
                doc = {**docs[i % len(docs)], "client_id": client, "model": model,
                       "model_version": version, "ts": round(time.time(), 3)}
                i += 1
                producer.produce(topic, key=client.encode(), value=orjson.dumps(doc))
            bursts += 1
            next_burst += every
        producer.poll(0)
        time.sleep(0.002)
    producer.flush(30)
    return {"sent": sent, "bursts": bursts, "seconds": time.time() - start}


def floor_consumer(bootstrap: str, topic: str, bursts_expected: int) -> None:
    """(Child process.) Read ``topic`` like the daemon's consumer and print, as JSON,
    the produce-to-poll delay of each burst's crossing event (its last, the
    ``BUDGET + 1``-th)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest",
                             **{k: v for k, v in CONSUMER_SETTINGS.items()
                                if k not in ("max_poll_interval_ms", "session_timeout_ms")})
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    counts: dict[bytes, int] = {}
    delays: list[float] = []
    idle_since = time.monotonic()
    while len(delays) < bursts_expected and time.monotonic() - idle_since < 30:
        polled = consumer.poll(timeout_ms=500, max_records=CONSUMER_SETTINGS["max_poll_records"])
        now = time.time()
        if polled:
            idle_since = time.monotonic()
        for records in polled.values():
            for r in records:
                if r.key is not None and r.key.startswith(b"burst-"):
                    counts[r.key] = counts.get(r.key, 0) + 1
                    if counts[r.key] == BUDGET + 1:
                        delays.append(now - orjson.loads(r.value)["ts"])
    consumer.close()
    print(orjson.dumps(delays).decode())


def measure_floor(bootstrap: str, topic: str, args: argparse.Namespace) -> list[float]:
    """The bare consumer's produce-to-poll delays for the same traffic."""
    bursts = int(args.seconds / args.every)
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.latency", "--floor-consumer", bootstrap, topic,
         str(bursts)], stdout=subprocess.PIPE)
    traffic(bootstrap, topic, args.rate, args.seconds, args.every, threading.Event())
    out, _ = child.communicate(timeout=120)
    return sorted(orjson.loads(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="benign events/s (half the measured maximum)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=0.25, help="seconds between bursts")
    parser.add_argument("--checkpoint-interval", type=float, default=None,
                        help="checkpoint.interval_s (default: the daemon's default)")
    parser.add_argument("--floor-consumer", nargs=3, metavar=("BOOTSTRAP", "TOPIC", "BURSTS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_consumer:
        bootstrap, topic, bursts = args.floor_consumer
        floor_consumer(bootstrap, topic, int(bursts))
        return
    broker = start_broker()
    seen: dict[str, float] = {}
    try:
        floor = measure_floor(broker.bootstrap, new_topic(broker, PARTITIONS), args)
        print(f"floor: bare consumer p50 {percentile(floor, 50):.2f} s, "
              f"p99 {percentile(floor, 99):.2f} s over {len(floor)} bursts")
        topic = new_topic(broker, PARTITIONS)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            extra: dict[str, Any] = {}
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
    f50, f99 = percentile(floor, 50), percentile(floor, 99)
    fmax = floor[-1] if floor else float("nan")
    body = f"""`inferwatch run` with every detector on (flooding budget {BUDGET} per minute for the
benchmark), consuming a live 3-partition topic at {rate:,.0f} events/s for {result['seconds']:.0f} s
(`--rate {args.rate:g}`: about half the maximum `inferwatch run` rate measured by
`bench.throughput` on this machine); the daemon used {cpu / result['seconds']:.0%} of a core.
A new client crosses its budget every {args.every:g} s; latency is from the produce time of the
event that crossed it to the alert record in the JSONL sink (checkpoint interval
{interval:g} s; alert records go to the outbox after the batch that raised them,
`checkpoint.alert_flush_s` = 0).

{cp_n:.0f} checkpoints of {tracked:,.0f} tracked clients took {cp_mean:.2f} s each on average.

| path | measured | p50 | p99 | max | target |
|---|---|---|---|---|---|
| produce → alert record, `inferwatch run` | {len(lat)} of {result['bursts']} alerts \
| {p50:.2f} s | **{p99:.2f} s** | {worst:.2f} s | p99 < 2 s |
| floor: produce → poll of a bare consumer, same traffic just before | {len(floor)} bursts \
| {f50:.2f} s | {f99:.2f} s | {fmax:.2f} s | |

The floor is what the broker and kafka-python add on this machine with nothing
else running; the daemon's latency includes it. The producer batches for
{LINGER_MS:g} ms (`linger.ms`; with 2 ms batches the test broker's fetches slow down
as the topic grows, see `LINGER_MS` in `bench/latency.py`).

By quarter of the run (bursts in the order they were sent):

| quarter | alerts | p50 | p99 | max |
|---|---|---|---|---|
{quarters(seen)}
"""
    print(body)
    write_section("latency", "Latency: produce time to alert record",
                  f".venv/bin/python -m bench.latency --rate {args.rate:g} "
                  f"--seconds {args.seconds:g}", body)


def quarters(seen: dict[str, float]) -> str:
    """Latency per quarter of the run: a warm-up or a stall shows where it fell."""
    ordered = [seen[c] for c in sorted(seen)]  # burst-00000, burst-00001, …
    rows = []
    for q in range(4):
        part = sorted(ordered[q * len(ordered) // 4:(q + 1) * len(ordered) // 4])
        if part:
            rows.append(f"| {q + 1} | {len(part)} | {percentile(part, 50):.2f} s "
                        f"| {percentile(part, 99):.2f} s | {part[-1]:.2f} s |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
