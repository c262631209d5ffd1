"""Seeded inference-log streams for the job tests, fed through the real pipeline and
checkpoints into a real store."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import msgspec
import numpy as np

from monitor.checkpoint import Checkpointer
from monitor.config import Config, build_config
from monitor.pipeline import Pipeline, Record
from monitor.store import Store

MONDAY = 1_767_571_200.0  # 2026-01-05T00:00:00Z, a Monday
DAY = 86_400.0
FEATURES = ("amount", "velocity", "age", "score")


def config(url: str, tmp: str, **jobs: Any) -> Config:
    """Detectors off (the jobs read summaries only), hourly buckets."""
    off = {"enabled": False}
    return build_config({
        "instance_id": "test",
        "store": {"url": url},
        "detectors": {"flooding": off, "probing": off, "neighbours": off, "confidence": off,
                      "drift": off},
        "jobs": {"reports_dir": tmp, **jobs},
    }, env={})


def stream(*, model: str, version: str, start: float, hours: float, per_hour: int,
           seed: int, drift_from: float | None = None, shift: float = 1.5,
           latency_scale: float = 3.0, confidence_bias: float = 0.0,
           rid_prefix: str = "r") -> Iterator[dict[str, Any]]:
    """``per_hour`` events an hour; from ``drift_from`` on, feature ``amount`` shifts."""
    rng = np.random.default_rng(seed)
    w = np.array([1.2, -0.8, 0.5, 1.0])
    n = int(hours * per_hour)
    ts = np.sort(rng.uniform(start, start + hours * 3600, n))
    x = rng.normal(0, 1, (n, len(FEATURES)))
    lat = rng.gamma(4.0, latency_scale, n)
    for i in range(n):
        row = x[i].copy()
        if drift_from is not None and ts[i] >= drift_from:
            row[0] += shift
        z = float(row @ w)
        p = 1 / (1 + math.exp(-z))
        conf = min(1.0, max(p, 1 - p) + confidence_bias)
        pred = "fraud" if p >= 0.5 else "legit"
        yield {"ts": round(float(ts[i]), 3), "model": model, "model_version": version,
               "client_id": f"c{i % 50}", "request_id": f"{rid_prefix}-{i}",
               "features": {f: round(float(v), 4) for f, v in zip(FEATURES, row, strict=True)}
               | {"country": ["de", "fr", "us"][i % 3]},
               "prediction": pred, "confidence": round(conf, 6),
               "latency_ms": round(float(lat[i]), 2)}


def ingest(cfg: Config, events: list[dict[str, Any]], *, partitions: int = 2,
           every: int = 3000) -> None:
    """Events through the pipeline (``partitions`` partitions, by client) with a
    checkpoint every ``every`` records, as the daemon does."""
    store = Store(cfg.store.url.get_secret_value())
    store.migrate()
    pipeline = Pipeline(cfg)
    cp = Checkpointer(store, pipeline, group="g", producer="test")
    pids = [("logs", p) for p in range(partitions)]
    resume = cp.restore(pids)  # a later ingest continues the partitions where they stopped
    events = sorted(events, key=lambda e: e["ts"])
    per: dict[tuple[str, int], list[Record]] = {pid: [] for pid in pids}
    for e in events:
        pid = pids[hash_str(e["client_id"]) % partitions]
        offset = (resume[pid] or 0) + len(per[pid])
        per[pid].append(Record(offset, msgspec.json.encode(e)))
    for pid, recs in per.items():
        for i in range(0, len(recs), every):
            pipeline.process(pid, recs[i:i + every])
            cp.save()
    store.close()


def hash_str(s: str) -> int:
    return sum(s.encode()) * 2654435761 % (1 << 32)
