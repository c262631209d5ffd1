"""The decoded inference-log event (see DESIGN.md, "Inference-log event — contract")."""

from __future__ import annotations

import msgspec

FeatureValue = float | str | bool | None


class Event(msgspec.Struct, frozen=True, gc=False):
    """One validated inference-log event.

    ``ts`` is event time in Unix seconds. ``confidence`` is filled from
    ``probabilities`` (their maximum) when the producer did not send it.
    """

    ts: float
    model: str
    model_version: str
    client_id: str | None = None
    request_id: str | None = None
    source_ip: str | None = None
    features: dict[str, FeatureValue] | None = None
    embedding: list[float] | None = None
    prediction: str | float | None = None
    probabilities: dict[str, float] | list[float] | None = None
    confidence: float | None = None
    latency_ms: float | None = None
    label: str | float | None = None
