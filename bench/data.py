"""Realistic benchmark traffic: 25 numeric features, 10-class probabilities, many
clients, three models; plus a few flooders and boundary probers so the attack
detectors have work to do. Cached as JSONL under ``bench/.cache`` (git-ignored).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec
import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
N_FEATURES = 25
LABELS = [f"class_{i}" for i in range(10)]
MODELS = [("fraud-scorer", "3.2.0"), ("churn-model", "1.4.0"), ("risk-ranker", "7.0.1")]
FEATURES = [f"f{i:02d}" for i in range(N_FEATURES)]


def generate(n: int, *, clients: int = 20_000, rate_per_s: float = 500.0, seed: int = 3,
             start: float = T0, drift_after: float = 0.7) -> list[bytes]:
    """``n`` encoded events in event-time order, about ``rate_per_s`` per second.

    About 1% of events come from 5 flooders, 0.5% from 5 low-confidence probers;
    the last ``1 - drift_after`` of the stream shifts two features of one model.
    """
    rng = np.random.default_rng(seed)
    ts = start + np.sort(rng.uniform(0, n / rate_per_s, n))
    who = rng.integers(0, clients, n)
    kind = rng.random(n)
    x = rng.normal(0, 1, (n, N_FEATURES)).round(4)
    logits = rng.normal(0, 1.5, (n, len(LABELS)))
    logits[:, 0] += 2.5
    probers = kind >= 0.995
    logits[probers] = rng.normal(0, 0.05, (int(probers.sum()), len(LABELS)))
    p = np.exp(logits)
    p = (p / p.sum(axis=1, keepdims=True)).round(5)
    model_idx = who % len(MODELS)
    drift = (np.arange(n) >= drift_after * n) & (model_idx == 0)
    x[drift, 0] += 1.5
    x[drift, 1] += 1.5
    enc = msgspec.json.Encoder()
    out = []
    for i in range(n):
        if kind[i] >= 0.995:
            client = f"prober-{i % 5}"
        elif kind[i] >= 0.985:
            client = f"flooder-{i % 5}"
        else:
            client = f"key-{who[i]:06d}"
        model, version = MODELS[model_idx[i]]
        probs = dict(zip(LABELS, p[i].tolist(), strict=True))
        out.append(enc.encode({
            "ts": round(float(ts[i]), 3),
            "model": model,
            "model_version": version,
            "client_id": client,
            "request_id": f"req-{i:09d}",
            "source_ip": f"10.{who[i] % 250}.{who[i] % 199}.{who[i] % 97 + 1}",
            "features": dict(zip(FEATURES, x[i].tolist(), strict=True)),
            "prediction": LABELS[int(p[i].argmax())],
            "probabilities": probs,
            "latency_ms": round(float(rng.gamma(4.0, 3.0)), 2),
        }))
    return out


def dataset(n: int = 300_000) -> Path:
    """Path of the cached JSONL file of ``n`` events (generated on first use)."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"events-{n}.jsonl"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(b"\n".join(generate(n)) + b"\n")
        tmp.rename(path)
    return path


def load(n: int = 300_000) -> list[bytes]:
    return dataset(n).read_bytes().splitlines()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    args = parser.parse_args()
    p = dataset(args.events)
    lines = p.read_bytes().splitlines()
    print(f"{p}: {len(lines):,} events, mean {sum(map(len, lines)) / len(lines):.0f} bytes")
