"""Shared steps of the Kafka tests: produce events, run daemons, read alert files."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
from kafka import KafkaProducer

from monitor.config import Config, build_config
from monitor.daemon import Daemon


def produce(bootstrap: str, topic: str, values: Iterable[tuple[bytes | None, bytes]]) -> dict[int, int]:
    """Send (key, value) pairs; return the end offset (next offset) per partition."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=262_144,
                             acks="all", max_request_size=20_000_000)
    futures = [producer.send(topic, key=k, value=v) for k, v in values]
    producer.flush()
    ends: dict[int, int] = {}
    for f in futures:
        md = f.get(timeout=30)
        ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
    producer.close()
    return ends


def encode_events(events: Iterable[dict[str, Any]]) -> list[tuple[bytes | None, bytes]]:
    return [(e["client_id"].encode(), msgspec.json.encode(e)) for e in events]


def daemon_config(bootstrap: str, topic: str, store_url: str, jsonl: Path, *,
                  instance: str = "test", group: str = "g", **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "instance_id": instance,
        "kafka": {"bootstrap_servers": [bootstrap], "topics": [topic], "group_id": group,
                  "max_poll_interval_ms": 6000, "session_timeout_ms": 6000,
                  "poll_timeout_ms": 100, "max_poll_records": 500},
        "store": {"url": store_url},
        "checkpoint": {"interval_s": 0.5},
        "http": {"enabled": False},
        "alerts": {"console": {"enabled": False}, "jsonl": {"path": str(jsonl)}},
    }
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def small_detectors() -> dict[str, Any]:
    """Detector settings sized for streams of a few thousand events."""
    return {
        "flooding": {"window_s": 60, "max_events": 300},
        "probing": {"min_queries": 30},
        "confidence": {"bucket_s": 10, "reference_events": 1000},
        "drift": {"bucket_s": 10, "window_events": 150, "max_window_s": 30,
                  "reference_events": 1000, "min_events": 100},
    }


class DaemonThread:
    """A daemon in a thread of the test process, stopped like SIGTERM would."""

    def __init__(self, config: Config) -> None:
        self.daemon = Daemon(config)
        self.thread = threading.Thread(target=self.daemon.run, daemon=True)

    def start(self) -> DaemonThread:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.daemon.stopping.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "daemon did not stop within 60s"


def start_daemon(cfg: dict[str, Any]) -> DaemonThread:
    return DaemonThread(build_config(cfg, env={})).start()


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def read_alerts(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [msgspec.json.decode(line) for line in path.read_bytes().splitlines() if line]


def replayed_alerts(tmp_path: Path, cfg: dict[str, Any], events: Sequence[dict[str, Any]],
                    name: str = "replayed") -> list[dict[str, Any]]:
    """The alert records ``inferwatch replay`` raises over ``events`` in this order:
    what a Kafka run of the same events must match."""
    from alerts.sinks import JsonlSink
    from monitor.replay import replay

    archive = tmp_path / f"{name}-archive.jsonl"
    archive.write_bytes(b"".join(msgspec.json.encode(e) + b"\n" for e in events))
    out = tmp_path / f"{name}.jsonl"
    replay(archive, build_config(cfg, env={}), [JsonlSink(out)])
    return read_alerts(out)


def canonical(records: Sequence[dict[str, Any]]) -> list[bytes]:
    """Records as sorted canonical JSON: equal lists mean the same alerts."""
    enc = msgspec.json.Encoder(order="sorted")
    return sorted(enc.encode(r) for r in records)
