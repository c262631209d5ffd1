"""Decode and validate inference-log events; bad input becomes a counted reason.

The identity field mapping decodes straight into a typed msgspec struct (type
checks in C); a remapped one decodes to a dict, picks the dotted paths, and
converts with the same struct, so both apply exactly the same rules.

An event with a Unix-seconds timestamp decodes straight into ``Event`` (no copy);
any failure there, or an RFC 3339 timestamp, is decoded again as ``_Wire``, which
decides the outcome exactly as before.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from detectors.event import Event, FeatureValue
from monitor.config import EventsConfig

REASONS = (
    "too_large",
    "not_utf8",
    "not_json",
    "not_object",
    "too_deep",
    "missing_field",
    "wrong_type",
    "not_finite",
    "out_of_range",
    "bad_timestamp",
    "future_timestamp",
    "unknown_model",
    "too_many_versions",  # monitor.versions: decided by the pipeline, not the decoder
)


class _Wire(msgspec.Struct):
    ts: str | float
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


_WIRE_FIELDS = tuple(_Wire.__struct_fields__)


@dataclass(frozen=True, slots=True)
class BadRecord:
    reason: str
    detail: str


class Decoder:
    """``decode(bytes) -> Event | BadRecord``; never raises on any input.

    >>> d = Decoder(EventsConfig())
    >>> ev = d.decode(b'{"ts": 1, "model": "m", "model_version": "1", "probabilities": [0.2, 0.8]}')
    >>> ev.ts, ev.model, ev.confidence
    (1.0, 'm', 0.8)
    >>> d.decode(b'{"ts": 1, "model": "m"}')
    BadRecord(reason='missing_field', detail='Object missing required field `model_version`')
    """

    def __init__(self, config: EventsConfig) -> None:
        self.config = config
        self._typed = msgspec.json.Decoder(_Wire)
        self._event = msgspec.json.Decoder(Event)
        self._text_ts = False  # the last event had an RFC 3339 timestamp: skip the Event try
        self._generic = msgspec.json.Decoder()
        self._identity = config.fields.is_identity()
        self._paths = {
            name: getattr(config.fields, name).split(".") for name in _WIRE_FIELDS
        }
        self._allowed = frozenset(config.allowed_models)
        # the limits, read once (a pydantic attribute costs as much as a check)
        self._max_bytes = config.max_message_bytes
        self._max_string = config.max_string_length
        self._max_features = config.max_features
        self._max_embedding = config.max_embedding
        self._max_future = math.inf if config.max_future_s is None else config.max_future_s

    def decode(self, value: bytes | None) -> Event | BadRecord:
        try:
            return self._decode(value)
        except RecursionError:  # nesting deeper than the decoder's stack allows
            return BadRecord("too_deep", "JSON nested too deeply")
        except Exception as exc:  # never let one record break the loop
            return BadRecord("wrong_type", f"{type(exc).__name__}: {exc}"[:200])

    def _decode(self, value: bytes | None) -> Event | BadRecord:
        if value is None:
            return BadRecord("not_json", "empty message (tombstone)")
        if len(value) > self._max_bytes:
            return BadRecord("too_large", f"{len(value)} bytes > {self._max_bytes}")
        try:
            wire = self._identity_decode(value) if self._identity else self._remapped(value)
        except UnicodeDecodeError as exc:
            return BadRecord("not_utf8", str(exc)[:200])
        except msgspec.DecodeError as exc:
            return self._classify(exc)
        if isinstance(wire, BadRecord):
            return wire
        return self._validate(wire)

    def _identity_decode(self, value: bytes) -> Event | _Wire:
        if not self._text_ts:
            try:
                return self._event.decode(value)
            except Exception:  # _Wire decides: a text timestamp, or the reason  # noqa: S110
                pass
        wire = self._typed.decode(value)
        self._text_ts = isinstance(wire.ts, str)
        return wire

    def _remapped(self, value: bytes) -> _Wire | BadRecord:
        doc = self._generic.decode(value)
        if not isinstance(doc, dict):
            return BadRecord("not_object", f"top level is {type(doc).__name__}")
        picked: dict[str, Any] = {}
        for name, path in self._paths.items():
            node: Any = doc
            for part in path:
                if not isinstance(node, dict) or part not in node:
                    node = msgspec.UNSET
                    break
                node = node[part]
            if node is not msgspec.UNSET:
                picked[name] = node
        return msgspec.convert(picked, _Wire)

    @staticmethod
    def _classify(exc: msgspec.DecodeError) -> BadRecord:
        text = str(exc)
        if isinstance(exc, msgspec.ValidationError):
            if "missing required field" in text:
                reason = "missing_field"
            elif "Expected `object`" in text and "- at" not in text:
                reason = "not_object"
            elif "out of range" in text:
                reason = "not_finite"
            else:
                reason = "wrong_type"
        else:
            reason = "not_utf8" if "utf-8" in text.lower() else "not_json"
        return BadRecord(reason, text[:200])

    def _check_features(self, features: dict[str, FeatureValue]) -> BadRecord | None:
        """The exact per-feature checks, for the rare record the fast path doubts."""
        limit = self._max_string
        for key, v in features.items():
            if isinstance(v, float) and not math.isfinite(v):
                return BadRecord("not_finite", f"feature {key[:80]!r}")
            if isinstance(v, str) and len(v) > limit:
                return BadRecord("too_large", f"feature {key[:80]!r} value too long")
        return None

    def _validate(self, w: _Wire | Event) -> Event | BadRecord:
        ts = parse_timestamp(w.ts)
        if ts is None:
            return BadRecord("bad_timestamp", f"ts {str(w.ts)[:40]!r} is not RFC 3339 or Unix seconds")
        ahead = ts - time.time()
        if ahead > self._max_future:
            return BadRecord("future_timestamp", f"ts {ts:.3f} is {ahead:.0f}s ahead of this "
                             f"host's clock (events.max_future_s: {self._max_future:g})")
        if self._allowed and w.model not in self._allowed:
            return BadRecord("unknown_model", f"model {w.model[:80]!r} is not allow-listed")
        limit = self._max_string
        if (len(w.model) > limit or len(w.model_version) > limit
                or (w.client_id is not None and len(w.client_id) > limit)
                or (w.request_id is not None and len(w.request_id) > limit)
                or (w.source_ip is not None and len(w.source_ip) > limit)):
            for name in ("model", "model_version", "client_id", "request_id", "source_ip"):
                text = getattr(w, name)
                if text is not None and len(text) > limit:
                    return BadRecord("too_large", f"{name} longer than {limit}")
        features = w.features
        if features is not None:
            if len(features) > self._max_features:
                return BadRecord("too_large", f"{len(features)} features > {self._max_features}")
            if not _all_finite_numbers(features.values()):
                bad = self._check_features(features)
                if bad is not None:
                    return bad
        if w.embedding is not None:
            if len(w.embedding) > self._max_embedding:
                return BadRecord("too_large", f"embedding of {len(w.embedding)} > {self._max_embedding}")
            if not _all_finite_numbers(w.embedding) and not all(map(math.isfinite, w.embedding)):
                return BadRecord("not_finite", "embedding")
        confidence = w.confidence
        probabilities = w.probabilities
        if probabilities is not None:
            probs = probabilities.values() if isinstance(probabilities, dict) else probabilities
            if len(probs) > self._max_features:
                return BadRecord("too_large", f"{len(probs)} probabilities")
            if probs:
                top = max(probs)
                if not (_all_finite_numbers(probs) and min(probs) >= 0.0 and top <= 1.0):
                    return BadRecord("out_of_range", "probabilities outside [0, 1]")
                if confidence is None:
                    confidence = top
        if confidence is not None and not 0.0 <= confidence <= 1.0:
            return BadRecord("out_of_range", f"confidence {confidence!r} outside [0, 1]")
        prediction, latency_ms, label = w.prediction, w.latency_ms, w.label
        if isinstance(prediction, float) and not math.isfinite(prediction):
            return BadRecord("not_finite", "prediction")
        if latency_ms is not None and not math.isfinite(latency_ms):
            return BadRecord("not_finite", "latency_ms")
        if isinstance(label, float) and not math.isfinite(label):
            return BadRecord("not_finite", "label")
        if latency_ms is not None and latency_ms < 0:
            return BadRecord("out_of_range", "latency_ms < 0")
        if isinstance(w, Event):
            return w if confidence is w.confidence else msgspec.structs.replace(
                w, confidence=confidence)
        return Event(ts, w.model, w.model_version, w.client_id, w.request_id, w.source_ip,
                     features, w.embedding, prediction, probabilities, confidence, latency_ms, label)


def _all_finite_numbers(values: Any) -> bool:
    """True when every value is a finite int, float or bool: one C-level sum
    (a str or None raises TypeError; NaN or an infinity makes the sum non-finite;
    a finite sum that overflows only sends the caller to the exact slow path)."""
    try:
        total = sum(values, 0.0)
    except TypeError:
        return False
    return total - total == 0.0


def parse_timestamp(value: str | float) -> float | None:
    """Unix seconds from the event contract's ``ts``: a non-negative finite number, or
    RFC 3339 text (without an offset, UTC); None when it is neither."""
    if isinstance(value, float):
        return value if math.isfinite(value) and value >= 0 else None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:  # RFC 3339 needs an offset; take a bare one as UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
