"""Sizing of one replica for the Helm chart: events/s and memory.

    .venv/bin/python -m bench.sizing [--events 200000] [--clients 20000,200000]

Three measurements, each in a child process of its own (peak RSS from wait4):

1. ``inferwatch run`` as a pod runs it: a 3-partition topic on the embedded broker
   filled beforehand with synthetic events (8 features, two classes, 2,000 clients),
   the daemon started on the chart's default config (SQLite store): events/s from
   its first consumed event to its last (read off /metrics), and peak RSS.
2. ``inferwatch replay --quiet`` over the same events as a JSONL file: events/s and
   peak RSS of the same detectors without Kafka.
3. Memory per tracked client: replays of two files with the same number of events
   (3 per client of the larger count) but few or many distinct clients;
   (RSS_many - RSS_few) / (clients_many - clients_few).

Generated files are cached under bench/.cache/sizing/.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import msgspec
import numpy as np
import yaml

from bench.report import write_section
from monitor.broker import EmbeddedBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache" / "sizing"
T0 = 1_767_225_600.0
FEATURES = ["amount", "merchant_risk", "velocity", "account_age", "hour", "distance_km",
            "device_score", "n_items"]


def inferwatch() -> list[str]:
    script = Path(sys.executable).with_name("inferwatch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "monitor.cli"]


def generate(path: Path, n_events: int, n_clients: int, rate_per_s: float = 200.0) -> Path:
    """Benign traffic of two models at ``rate_per_s`` of event time, ``n_clients`` keys."""
    if path.exists():
        return path
    rng = np.random.default_rng(11)
    weights = rng.normal(0, 1, len(FEATURES))
    enc = msgspec.json.Encoder()
    tmp = path.with_suffix(".part")
    with tmp.open("wb") as fh:
        for start in range(0, n_events, 50_000):
            n = min(50_000, n_events - start)
            x = rng.normal(0, 1, (n, len(FEATURES))).round(4)
            p = 1 / (1 + np.exp(-(x @ weights)))
            clients = rng.integers(0, n_clients, n) if n_clients < n_events else \
                (np.arange(start, start + n) % n_clients)
            for i in range(n):
                k = start + i
                pi = round(float(p[i]), 6)
                ev = {"ts": round(T0 + k / rate_per_s, 3),
                      "model": "fraud-scorer" if k % 2 else "churn-model",
                      "model_version": "1.0.0", "client_id": f"key-{int(clients[i])}",
                      "request_id": f"r{k}",
                      "features": dict(zip(FEATURES, x[i].tolist(), strict=True)),
                      "prediction": "b" if pi >= 0.5 else "a",
                      "probabilities": {"a": round(1 - pi, 6), "b": pi},
                      "latency_ms": 12.5}
                fh.write(enc.encode(ev) + b"\n")
    tmp.rename(path)
    return path


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}")
    return time.perf_counter() - started, usage.ru_maxrss * 1024


def replay(path: Path, config: Path) -> tuple[float, int]:
    return run_child([*inferwatch(), "replay", str(path), "--quiet", "--config", str(config)])


def _events_total(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("inferwatch_events_total{"))


def kafka_run(path: Path, n_events: int, workdir: Path) -> tuple[float, int]:
    """events/s and peak RSS of ``inferwatch run`` draining a pre-filled topic."""
    from kafka import KafkaProducer

    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        broker.create_topic("inference-logs", 3)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20,
                                 batch_size=262_144, acks=1)
        with path.open("rb") as fh:
            for line in fh:
                key = msgspec.json.decode(line)["client_id"].encode()
                producer.send("inference-logs", key=key, value=line.rstrip(b"\n"))
        producer.flush()
        producer.close()
        port = free_port()
        values = yaml.safe_load((ROOT / "deploy/helm/inferwatch/values.yaml").read_text())
        config = values["config"]
        config["kafka"]["bootstrap_servers"] = [broker.bootstrap]
        config["kafka"].update(max_poll_interval_ms=10_000, session_timeout_ms=6_000)
        config["http"] = {"host": "127.0.0.1", "port": port}
        config["alerts"] = {"console": {"enabled": False}}
        config["logging"] = {"level": "WARNING", "format": "json"}
        config["store"] = {"url": f"sqlite:///{workdir / 'store.db'}"}
        cfg = workdir / "run.yaml"
        cfg.write_text(yaml.safe_dump(config))
        proc = subprocess.Popen([*inferwatch(), "run", "--config", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = last = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            seen = _events_total(port)
            now = time.perf_counter()
            if seen > 0 and first is None:
                first = (now, seen)
            if seen >= n_events:
                last = (now, seen)
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, _, usage = os.wait4(proc.pid, 0)
        if first is None or last is None:
            raise RuntimeError("the daemon did not consume the topic in time")
        rate = (last[1] - first[1]) / (last[0] - first[0])
        return rate, usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--clients", default="20000,200000",
                        help="few,many distinct clients for the memory-per-client figure")
    parser.add_argument("--repeat", type=int, default=3, help="replay runs (median)")
    args = parser.parse_args()
    few, many = (int(x) for x in args.clients.split(","))
    load_before = os.getloadavg()[1]
    CACHE.mkdir(parents=True, exist_ok=True)
    traffic = generate(CACHE / f"traffic-{args.events}.jsonl", args.events, 2000)
    few_file = generate(CACHE / f"clients-{few}-of-{3 * many}.jsonl", 3 * many, few,
                        rate_per_s=2000)
    many_file = generate(CACHE / f"clients-{many}-of-{3 * many}.jsonl", 3 * many, many,
                         rate_per_s=2000)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg = work / "replay.yaml"
        cfg.write_text(yaml.safe_dump({"logging": {"level": "WARNING"},
                                       "store": {"url": f"sqlite:///{work / 'r.db'}"}}))
        runs = [replay(traffic, cfg) for _ in range(args.repeat)]
        replay_rate = statistics.median(args.events / s for s, _ in runs)
        replay_rss = statistics.median(r for _, r in runs)
        print(f"replay: {replay_rate:,.0f} events/s, peak RSS {replay_rss / 2**20:.0f} MiB")
        _, rss_few = replay(few_file, cfg)
        _, rss_many = replay(many_file, cfg)
        per_client = (rss_many - rss_few) / (many - few)
        print(f"memory: {rss_few / 2**20:.0f} MiB with {few:,} clients, "
              f"{rss_many / 2**20:.0f} MiB with {many:,}: {per_client:,.0f} bytes per client")
        kafka_rate, kafka_rss = kafka_run(traffic, args.events, work)
        print(f"inferwatch run (Kafka, 3 partitions, 1 replica): {kafka_rate:,.0f} events/s, "
              f"peak RSS {kafka_rss / 2**20:.0f} MiB")

    load = (load_before + os.getloadavg()[1]) / 2
    body = f"""\
Per-replica figures for the Helm chart's sizing advice (README, "Deploying with Helm").
Synthetic benign traffic: 2 models, 8 numeric features, 2-class probabilities, every
detector at its default; the store is SQLite.

| measurement | figure |
|---|---|
| `inferwatch run`, one replica draining a pre-filled 3-partition topic \
({args.events:,} events, embedded broker on the same machine) \
| **{kafka_rate:,.0f} events/s**, peak RSS {kafka_rss / 2**20:.0f} MiB |
| `inferwatch replay --quiet`, same events from a file (median of {args.repeat}, \
process start included) | {replay_rate:,.0f} events/s, peak RSS {replay_rss / 2**20:.0f} MiB |
| peak RSS, replay of {3 * many:,} events from {few:,} clients | {rss_few / 2**20:.0f} MiB |
| peak RSS, replay of {3 * many:,} events from {many:,} clients | {rss_many / 2**20:.0f} MiB |
| memory per tracked client ((many - few) / clients added) | **{per_client:,.0f} bytes** |

The Kafka figure includes fetching and decoding on the same cores as the broker, on a
machine shared with other work (5-minute load average {load:.1f} during the run), and so
is a floor for a replica with a core of its own; the memory figures do not depend on load.
"""
    write_section("sizing", "Sizing one replica (Helm chart)",
                  ".venv/bin/python -m bench.sizing", body)


if __name__ == "__main__":
    main()
