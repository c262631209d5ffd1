"""End-to-end throughput of ``inferwatch run`` (every detector on) against the
physical limit measured in the same run: a bare kafka-python group consumer
that only fetches and decodes the same topic. The daemon runs with each Kafka
client (``kafka.client``), and a bare librdkafka consumer shows that client's
limit. Also the replay path against plain decoding of the same file.

    .venv/bin/python -m bench.throughput [--events 300000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import orjson

from bench import data
from bench.harness import (
    DaemonProcess,
    bare_consume,
    bare_consume_librdkafka,
    daemon_config,
    daemon_rate,
    keyed,
    median,
    new_topic,
    produce,
    start_broker,
)
from bench.report import write_section
from monitor.config import build_config
from monitor.decode import Decoder
from monitor.replay import replay

CLIENTS = ("kafka-python", "confluent-kafka")


def kafka_pairs(lines: list[bytes], partitions: int, repeats: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"bare": [], "bare_librdkafka": [], "alerts": []}
    for client in CLIENTS:
        out[client], out[f"ratio {client}"] = [], []
    broker = start_broker()
    try:
        topic = new_topic(broker, partitions)
        t = time.perf_counter()
        produce(broker.bootstrap, topic, keyed(lines))
        print(f"produced {len(lines):,} events in {time.perf_counter() - t:.1f}s")
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(repeats):
                bare = bare_consume(broker.bootstrap, topic, len(lines))
                out["bare"].append(bare)
                for client in CLIENTS:
                    work = Path(tmp) / f"run{r}-{client}"
                    cfg = daemon_config(broker.bootstrap, topic, work, group=f"iw-{r}-{client}",
                                        kafka={"client": client})
                    d = DaemonProcess(cfg, work)
                    try:
                        rate, _ = daemon_rate(d, len(lines))
                    finally:
                        d.stop()
                    alerts = len((work / "alerts-bench.jsonl").read_bytes().splitlines())
                    out[client].append(rate)
                    out[f"ratio {client}"].append(rate / bare)
                    out["alerts"].append(alerts)
                    print(f"repeat {r}: bare {bare:,.0f}/s, inferwatch ({client}) {rate:,.0f}/s, "
                          f"ratio {rate / bare:.2f}, {alerts} alert records")
                fast = bare_consume_librdkafka(broker.bootstrap, topic, len(lines))
                out["bare_librdkafka"].append(fast)
                print(f"repeat {r}: bare librdkafka {fast:,.0f}/s")
    finally:
        broker.stop()
    return out


def replay_vs_decode(path: Path, repeats: int) -> dict[str, list[float]]:
    config = build_config({"logging": {"level": "WARNING"}}, env={})
    out: dict[str, list[float]] = {"orjson": [], "msgspec_typed": [], "replay": [], "ratio": []}
    decoder = Decoder(config.events)
    n = len(path.read_bytes().splitlines())
    for r in range(repeats):
        t = time.perf_counter()
        for line in path.read_bytes().splitlines():
            orjson.loads(line)
        plain = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for line in path.read_bytes().splitlines():
            decoder.decode(line)
        typed = n / (time.perf_counter() - t)
        t = time.perf_counter()
        replay(path, config, [])
        rep = n / (time.perf_counter() - t)
        out["orjson"].append(plain)
        out["msgspec_typed"].append(typed)
        out["replay"].append(rep)
        out["ratio"].append(rep / plain)
        print(f"repeat {r}: orjson {plain:,.0f}/s, inferwatch Decoder {typed:,.0f}/s, "
              f"replay {rep:,.0f}/s, ratio {rep / plain:.2f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--replay-events", type=int, default=100_000,
                        help="the first N events of the same file for the replay comparison")
    parser.add_argument("--skip-kafka", action="store_true")
    args = parser.parse_args()
    path = data.dataset(args.events)
    lines = path.read_bytes().splitlines()
    size = sum(map(len, lines)) / len(lines)
    replay_file = path.with_name(f"replay-{args.replay_events}.jsonl")
    if not replay_file.exists():
        replay_file.write_bytes(b"\n".join(lines[: args.replay_events]) + b"\n")
    rp = replay_vs_decode(replay_file, args.repeats)
    kp = None if args.skip_kafka else kafka_pairs(lines, args.partitions, args.repeats)

    def row(name: str, xs: list[float], unit: str = "/s") -> str:
        each = ", ".join(f"{x:,.2f}" if unit == "" else f"{x:,.0f}" for x in xs)
        m = median(xs)
        return f"| {name} | {m:,.2f} |" if unit == "" else f"| {name} | {m:,.0f}{unit} |" + (
            f" {each} |")

    body = [
        f"{len(lines):,} events (mean {size:.0f} bytes: 25 features, 10-class probabilities, "
        f"20,000 clients, 3 models), {args.partitions} partitions, local Tansu broker; "
        "every detector on (the defaults of `monitor.config`), SQLite store, JSONL sink. "
        "Each repeat runs the bare consumer, `inferwatch run` with each Kafka client "
        "(`kafka.client`) and the bare librdkafka consumer back-to-back on the same topic; "
        "the ratios are taken per repeat, then the median.",
        "",
    ]
    if kp:
        paired = [c / k for c, k in zip(kp["confluent-kafka"], kp["kafka-python"], strict=True)]
        body += [
            "| Kafka path | median | repeats |", "|---|---|---|",
            row("bare kafka-python consumer: fetch + orjson decode", kp["bare"]),
            row("`inferwatch run`, every detector on (kafka-python, the default)", kp["kafka-python"]),
            row("`inferwatch run`, every detector on, `kafka.client: confluent-kafka`",
                kp["confluent-kafka"]),
            *(f"| **ratio inferwatch ({client}) / bare kafka-python** (target >= 0.5) | "
              f"**{median(kp[f'ratio {client}']):.2f}** | "
              + ", ".join(f"{x:.2f}" for x in kp[f"ratio {client}"]) + " |" for client in CLIENTS),
            "| librdkafka's gain: inferwatch (confluent-kafka) / inferwatch (kafka-python) | "
            + f"{median(paired):.2f} | " + ", ".join(f"{x:.2f}" for x in paired) + " |",
            row("bare librdkafka consumer (confluent-kafka): fetch + orjson decode",
                kp["bare_librdkafka"]),
            "| alert records per run (every run) | "
            + ", ".join(sorted({f"{a:.0f}" for a in kp["alerts"]})) + " | |",
            "",
        ]
    body += [
        f"Replay path: the first {args.replay_events:,} of those events as one JSONL file, "
        "in one process.",
        "",
        "| Replay path (same file) | median | repeats |", "|---|---|---|",
        row("orjson.loads per line", rp["orjson"]),
        row("inferwatch Decoder (msgspec typed + validation)", rp["msgspec_typed"]),
        row("`replay()`, every detector on", rp["replay"]),
        f"| **ratio replay / orjson** (target >= 0.25) | **{median(rp['ratio']):.2f}** | "
        + ", ".join(f"{x:.2f}" for x in rp["ratio"]) + " |",
    ]
    text = "\n".join(body)
    print(text)
    write_section("throughput", "End-to-end throughput against the consumer's limit",
                  f".venv/bin/python -m bench.throughput --events {args.events} "
                  f"--repeats {args.repeats} --replay-events {args.replay_events}", text)


if __name__ == "__main__":
    main()
