"""Property-based: the decoder and validator never raise, whatever arrives, and
what they accept always satisfies the event contract."""

from __future__ import annotations

import math
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.event import Event
from monitor.config import EventsConfig, FieldMap
from monitor.decode import REASONS, BadRecord, Decoder

DECODERS = [
    Decoder(EventsConfig()),
    Decoder(EventsConfig(max_string_length=16, max_features=5, allowed_models=["m"])),
    Decoder(EventsConfig(fields=FieldMap(ts="meta.time", model="meta.model",
                                         client_id="who.id", features="x"))),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=5),
    max_leaves=30,
)
FIELDS = ["ts", "model", "model_version", "client_id", "request_id", "source_ip", "features",
          "embedding", "prediction", "probabilities", "confidence", "latency_ms", "label",
          "meta", "who", "x"]
# objects that look like events: contract field names with arbitrary values
event_like = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS))
plausible = st.fixed_dictionaries(
    {"ts": st.one_of(st.floats(), st.integers(), st.text(max_size=30)),
     "model": st.text(max_size=20), "model_version": st.text(max_size=20)},
    optional={
        "client_id": st.one_of(st.text(max_size=40), st.integers()),
        "features": st.dictionaries(
            st.text(max_size=10),
            st.one_of(st.floats(), st.text(max_size=30), st.booleans(), st.none()),
            max_size=8),
        "embedding": st.lists(st.floats(), max_size=8),
        "probabilities": st.one_of(st.lists(st.floats(), max_size=5),
                                   st.dictionaries(st.text(max_size=5), st.floats(), max_size=5)),
        "confidence": st.floats(),
        "latency_ms": st.floats(),
        "prediction": st.one_of(st.text(max_size=10), st.floats()),
    },
)


def _check(result: Any) -> None:
    assert isinstance(result, Event | BadRecord)
    if isinstance(result, BadRecord):
        assert result.reason in REASONS
        return
    assert math.isfinite(result.ts) and result.ts >= 0
    assert isinstance(result.model, str) and isinstance(result.model_version, str)
    for v in (result.features or {}).values():
        assert not isinstance(v, float) or math.isfinite(v)
    assert all(math.isfinite(x) for x in result.embedding or [])
    if result.confidence is not None:
        assert 0.0 <= result.confidence <= 1.0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    for d in DECODERS:
        _check(d.decode(data))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json_never_raises(doc: Any) -> None:
    raw = msgspec.json.encode(doc)
    for d in DECODERS:
        _check(d.decode(raw))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(event_like, plausible))
def test_event_shaped_json_is_accepted_only_when_it_meets_the_contract(doc: dict) -> None:
    raw = msgspec.json.encode(doc).replace(b"null", b"1e999", 1)  # an infinity too
    for d in DECODERS:
        _check(d.decode(raw))


@settings(max_examples=100, deadline=None)
@given(plausible, st.integers(min_value=0, max_value=200), st.binary(min_size=1, max_size=3))
def test_corrupted_bytes_of_an_event_never_raise(doc: dict, at: int, junk: bytes) -> None:
    raw = msgspec.json.encode(doc)
    at = at % len(raw)
    for d in DECODERS:
        _check(d.decode(raw[:at] + junk + raw[at + 1:]))


def test_deep_nesting_is_counted_not_fatal() -> None:
    d = DECODERS[0]
    assert d.decode(b'{"a":' * 100_000 + b"1" + b"}" * 100_000).reason == "too_deep"
    assert isinstance(d.decode(b"[" * 100_000 + b"]" * 100_000), BadRecord)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(event_like, plausible))
def test_what_the_decoder_saw_before_never_changes_an_outcome(doc: dict) -> None:
    raw = msgspec.json.encode(doc)
    after_text = Decoder(EventsConfig())
    after_text.decode(b'{"ts": "2026-01-01T00:00:00Z", "model": "m", "model_version": "1"}')
    assert after_text.decode(raw) == Decoder(EventsConfig()).decode(raw)
