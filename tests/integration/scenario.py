"""The seeded stream the integration tests share, and its malformed companions."""

from __future__ import annotations

from typing import Any

import msgspec

from monitor.synthetic import Scenario, events

SMALL = Scenario(minutes=8, benign_clients=60, benign_rate_per_s=0.2, flood_from_min=2,
                 flood_minutes=1, flood_rate_per_s=10, attack_from_min=1,
                 attack_rate_per_s=0.5, drift_from_min=5, seed=11)

ALLOWED_MODELS = ["fraud-scorer", "churn-model"]
MAX_MESSAGE_BYTES = 65_536


def good_events() -> list[dict[str, Any]]:
    return list(events(SMALL))


def malformed(i: int) -> tuple[bytes, str]:
    """The i-th malformed record and the reason it must be counted under."""
    base = {"ts": 1_767_225_600 + i, "model": "fraud-scorer", "model_version": "3.2.0",
            "client_id": f"bad-{i}"}
    enc = msgspec.json.encode
    kinds: list[tuple[bytes, str]] = [
        (b"this is not json", "not_json"),
        (b'{"ts": 1, "model": "\xff\xfe", "model_version": "1"}', "not_utf8"),
        (b'["an", "array"]', "not_object"),
        (enc({k: v for k, v in base.items() if k != "model"}), "missing_field"),
        (enc({**base, "model_version": 3}), "wrong_type"),
        (enc(base)[:-1] + b', "confidence": NaN}', "not_json"),
        (enc({**base, "features": {"x": "y" * MAX_MESSAGE_BYTES}}), "too_large"),
        (enc({**base, "model": "not-allow-listed"}), "unknown_model"),
        (enc({**base, "ts": "yesterday"}), "bad_timestamp"),
        (enc({**base, "probabilities": [0.5, 1.5]}), "out_of_range"),
        (enc({**base, "features": {"x": {"nested": [1, 2]}}}), "wrong_type"),
        (b'{"ts": 1, "model": "fraud-scorer", "model_version": "1", "features": '
         + b'{"a": 1e999}}', "not_finite"),
    ]
    return kinds[i % len(kinds)]


def with_malformed(good: list[dict[str, Any]], every: int = 10) -> tuple[
        list[tuple[bytes | None, bytes]], dict[str, int]]:
    """Good events with a malformed record after every ``every - 1`` good ones."""
    out: list[tuple[bytes | None, bytes]] = []
    expected: dict[str, int] = {}
    enc = msgspec.json.encode
    n_bad = 0
    for i, ev in enumerate(good):
        out.append((ev["client_id"].encode(), enc(ev)))
        if i % (every - 1) == every - 2:
            value, reason = malformed(n_bad)
            out.append((f"bad-{n_bad}".encode(), value))
            expected[reason] = expected.get(reason, 0) + 1
            n_bad += 1
    return out, expected
