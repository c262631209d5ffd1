"""Synthetic inference logs for the demo and the tests: a benign population, a
flooder, a boundary-probing extraction attacker and a drift episode.

Two toy models answer from a logistic score of their features, so confidence
is low exactly near the decision boundary, as with a real classifier.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class Scenario:
    """Who sends what, in minutes of event time from ``start``."""

    minutes: float = 30.0
    benign_clients: int = 300
    benign_rate_per_s: float = 0.2  # per client
    flooder: str = "key-flood-7"
    flood_from_min: float = 8.0
    flood_minutes: float = 3.0
    flood_rate_per_s: float = 40.0
    attacker: str = "key-17"
    attack_from_min: float = 5.0
    attack_rate_per_s: float = 1.0
    drift_model: str = "fraud-scorer"
    drift_from_min: float = 20.0
    drift_shift: float = 1.5  # in standard deviations, on two features
    start: float = T0
    seed: int = 7


MODELS = {
    "fraud-scorer": ("3.2.0", ["amount", "merchant_risk", "velocity", "account_age", "hour",
                               "distance_km", "device_score", "n_items"], ["legit", "fraud"]),
    "churn-model": ("1.4.0", ["tenure", "monthly_spend", "support_calls", "usage_drop",
                              "plan_age", "discounts"], ["stay", "churn"]),
}


class _Model:
    def __init__(self, name: str, rng: np.random.Generator) -> None:
        self.name = name
        self.version, self.features, self.labels = MODELS[name]
        self.weights = rng.normal(0, 1.5, len(self.features))
        self.weights /= np.linalg.norm(self.weights) / 3.0

    def answer(self, x: np.ndarray) -> tuple[str, dict[str, float]]:
        z = float(x @ self.weights)
        p = 1.0 / (1.0 + math.exp(-z))
        probs = {self.labels[0]: round(1 - p, 6), self.labels[1]: round(p, 6)}
        return (self.labels[1] if p >= 0.5 else self.labels[0]), probs


def events(s: Scenario) -> Iterator[dict[str, Any]]:
    """All events of the scenario in event-time order (deterministic per seed)."""
    rng = np.random.default_rng(s.seed)
    models = {name: _Model(name, rng) for name in MODELS}
    names = list(models)
    total_s = s.minutes * 60.0
    arrivals: list[tuple[float, str, str]] = []  # (t, client, kind)
    n_benign = rng.poisson(s.benign_clients * s.benign_rate_per_s * total_s)
    for t, c in zip(rng.uniform(0, total_s, n_benign),
                    rng.integers(0, s.benign_clients, n_benign), strict=True):
        arrivals.append((float(t), f"key-{1000 + int(c)}", "benign"))
    # episodes end with the scenario: one set to start after its end sends nothing
    f0 = s.flood_from_min * 60
    f1 = max(f0, min(f0 + s.flood_minutes * 60, total_s))
    n_flood = int(s.flood_rate_per_s * (f1 - f0))
    arrivals += [(float(t), s.flooder, "benign") for t in rng.uniform(f0, f1, n_flood)]
    a0 = s.attack_from_min * 60
    n_attack = int(s.attack_rate_per_s * max(0.0, total_s - a0))
    arrivals += [(float(t), s.attacker, "attack")
                 for t in rng.uniform(a0, max(a0, total_s), n_attack)]
    arrivals.sort()
    for i, (t, client, kind) in enumerate(arrivals):
        model = models["fraud-scorer"] if kind == "attack" else models[names[hash_client(client) % 2]]
        x = rng.normal(0, 1, len(model.features))
        if kind == "attack":
            # walk the decision boundary: remove most of the component along the weights
            w = model.weights / np.linalg.norm(model.weights)
            x = x - (x @ w) * w * 0.97 + rng.normal(0, 0.05) * w
        if model.name == s.drift_model and t >= s.drift_from_min * 60 and kind == "benign":
            x[0] += s.drift_shift
            x[1] += s.drift_shift
        prediction, probs = model.answer(x)
        yield {
            "ts": round(s.start + t, 3),
            "model": model.name,
            "model_version": model.version,
            "client_id": client,
            "request_id": f"req-{i:08d}",
            "source_ip": f"10.0.{hash_client(client) % 250}.{hash_client(client) % 200 + 1}",
            "features": {f: round(float(v), 4) for f, v in zip(model.features, x, strict=True)},
            "prediction": prediction,
            "probabilities": probs,
            "latency_ms": round(float(rng.gamma(4.0, 3.0)), 2),
        }


def hash_client(client: str) -> int:
    """A stable small hash (Python's ``hash`` is salted per process)."""
    h = 2166136261
    for ch in client.encode():
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    return h
