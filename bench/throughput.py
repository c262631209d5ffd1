"""End-to-end throughput of ``inferwatch run`` (every detector on) against the
physical limit measured in the same run: a bare kafka-python group consumer
that only fetches and decodes the same topic. The daemon runs with each Kafka
client (``kafka.client``), and a bare librdkafka consumer shows that client's
limit. The daemon also runs with every detector off: its own floor (fetching,
decoding, validation, window summaries, checkpoints), which splits its time per
event into what the detectors cost and what the rest costs. Also the replay
path against plain decoding of the same file, with and without the detectors.

    .venv/bin/python -m bench.throughput [--events 300000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench import data
from bench.harness import (
    bare_consume,
    bare_consume_librdkafka,
    daemon_config,
    keyed,
    median,
    new_topic,
    produce,
    run_to_end,
    start_broker,
)
from bench.report import write_section
from monitor.config import build_config
from monitor.decode import Decoder
from monitor.replay import replay

CLIENTS = ("kafka-python", "confluent-kafka")
# every detector off: what is left is the daemon's own work per event
DETECTORS_OFF = {name: {"enabled": False} for name in (
    "flooding", "probing", "out_of_range", "neighbours", "coverage", "confidence", "drift")}
FLOOR = "floor"  # the kafka-python daemon with DETECTORS_OFF


def kafka_pairs(lines: list[bytes], partitions: int, repeats: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"bare": [], "bare_librdkafka": [], "alerts": [], FLOOR: [],
                                   f"ratio {FLOOR}": []}
    for client in CLIENTS:
        out[client], out[f"ratio {client}"] = [], []
    runs: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        (client, {"client": client}, {}) for client in CLIENTS]
    runs.append((FLOOR, {"client": "kafka-python"}, DETECTORS_OFF))
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
                for name, kafka, detectors in runs:
                    work = Path(tmp) / f"run{r}-{name}"
                    cfg = daemon_config(broker.bootstrap, topic, work, group=f"iw-{r}-{name}",
                                        kafka=kafka, detectors=detectors)
                    rate = run_to_end(cfg, work, len(lines))
                    out[name].append(rate)
                    out[f"ratio {name}"].append(rate / bare)
                    if name != FLOOR:
                        alerts = work / "alerts-bench.jsonl"
                        out["alerts"].append(  # no file: the run raised no alert
                            len(alerts.read_bytes().splitlines()) if alerts.exists() else 0)
                    print(f"repeat {r}: bare {bare:,.0f}/s, inferwatch ({name}) {rate:,.0f}/s, "
                          f"ratio {rate / bare:.2f}")
                fast = bare_consume_librdkafka(broker.bootstrap, topic, len(lines))
                out["bare_librdkafka"].append(fast)
                print(f"repeat {r}: bare librdkafka {fast:,.0f}/s")
    finally:
        broker.stop()
    return out


def replay_vs_decode(path: Path, repeats: int) -> dict[str, list[float]]:
    config = build_config({"logging": {"level": "WARNING"}}, env={})
    floor_config = build_config({"logging": {"level": "WARNING"}, "detectors": DETECTORS_OFF},
                                env={})
    out: dict[str, list[float]] = {"orjson": [], "msgspec_typed": [], "replay": [], "ratio": [],
                                   "replay_floor": [], "ratio_floor": []}
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
        t = time.perf_counter()
        replay(path, floor_config, [])
        floor = n / (time.perf_counter() - t)
        out["orjson"].append(plain)
        out["msgspec_typed"].append(typed)
        out["replay"].append(rep)
        out["ratio"].append(rep / plain)
        out["replay_floor"].append(floor)
        out["ratio_floor"].append(floor / plain)
        print(f"repeat {r}: orjson {plain:,.0f}/s, inferwatch Decoder {typed:,.0f}/s, "
              f"replay {rep:,.0f}/s, ratio {rep / plain:.2f}, every detector off {floor:,.0f}/s")
    return out


def time_split(bare: list[float], floor: list[float], full: list[float]) -> list[str]:
    """The daemon's time per event, split by the runs of each repeat: fetching and
    decoding (the bare consumer), the daemon's own work beyond them (floor), the
    detectors (every detector on). The 0.5 target means the last two together
    take no longer than the first."""
    per_repeat = [(1e6 / b, 1e6 / f - 1e6 / b, 1e6 / a - 1e6 / f)
                  for b, f, a in zip(bare, floor, full, strict=True)]
    names = ("fetch + decode (bare kafka-python consumer)",
             "the daemon's own work beyond that (floor - bare): validation, window "
             "summaries, checkpoints, the loop",
             "the detectors (every detector on - floor)")
    lines = ["Time per event of `inferwatch run` (kafka-python), from the runs above; "
             "the 0.5 target asks the last two rows together to take no more than the first:",
             "", "| part | median µs per event | repeats |", "|---|---|---|"]
    for i, name in enumerate(names):
        xs = [r[i] for r in per_repeat]
        lines.append(f"| {name} | {median(xs):.1f} | " + ", ".join(f"{x:.1f}" for x in xs)
                     + " |")
    return [*lines, ""]


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
            row("`inferwatch run`, every detector off (kafka-python): the daemon's own floor",
                kp[FLOOR]),
            f"| ratio floor / bare kafka-python | {median(kp[f'ratio {FLOOR}']):.2f} | "
            + ", ".join(f"{x:.2f}" for x in kp[f"ratio {FLOOR}"]) + " |",
            "",
            *time_split(kp["bare"], kp[FLOOR], kp["kafka-python"]),
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
        row("`replay()`, every detector off: the replay path's own floor", rp["replay_floor"]),
        f"| ratio floor / orjson | {median(rp['ratio_floor']):.2f} | "
        + ", ".join(f"{x:.2f}" for x in rp["ratio_floor"]) + " |",
    ]
    text = "\n".join(body)
    print(text)
    write_section("throughput", "End-to-end throughput against the consumer's limit",
                  f".venv/bin/python -m bench.throughput --events {args.events} "
                  f"--repeats {args.repeats} --replay-events {args.replay_events}", text)


if __name__ == "__main__":
    main()
