"""Decoding: the contract event in, bad input out as a counted reason, never an exception."""

from __future__ import annotations

import math
import time

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.event import Event
from monitor.config import EventsConfig, FieldMap
from monitor.decode import REASONS, BadRecord, Decoder

GOOD = {"ts": "2026-01-01T00:00:00Z", "model": "m", "model_version": "1", "client_id": "c",
        "features": {"a": 1, "b": "x", "c": None, "d": True}, "probabilities": {"yes": 0.7,
        "no": 0.3}, "prediction": "yes", "latency_ms": 3}


def decode(doc: object, **cfg: object) -> Event | BadRecord:
    return Decoder(EventsConfig(**cfg)).decode(msgspec.json.encode(doc))


def test_a_contract_event_decodes_with_derived_confidence_and_event_time() -> None:
    ev = decode(GOOD)
    assert isinstance(ev, Event)
    assert ev.ts == 1_767_225_600.0
    assert ev.confidence == 0.7
    assert ev.features == {"a": 1.0, "b": "x", "c": None, "d": True}


def test_unix_seconds_and_offsets_are_both_event_time() -> None:
    a = decode({**GOOD, "ts": 1_767_225_600})
    b = decode({**GOOD, "ts": "2026-01-01T01:00:00+01:00"})
    assert isinstance(a, Event) and isinstance(b, Event) and a.ts == b.ts


def test_remapped_dotted_paths_read_existing_log_shapes() -> None:
    doc = {"time": 1_767_225_600, "meta": {"name": "m", "ver": "2"},
           "req": {"key": "tenant-9", "inputs": {"x": 0.5}}, "out": {"score": 0.9}}
    fields = FieldMap(ts="time", model="meta.name", model_version="meta.ver",
                      client_id="req.key", features="req.inputs", confidence="out.score")
    ev = decode(doc, fields=fields)
    assert isinstance(ev, Event)
    assert (ev.model, ev.model_version, ev.client_id, ev.confidence) == ("m", "2", "tenant-9", 0.9)
    missing = decode({"time": 1, "meta": {"name": "m"}}, fields=fields)
    assert isinstance(missing, BadRecord) and missing.reason == "missing_field"


def test_each_kind_of_bad_input_has_its_reason() -> None:
    d = Decoder(EventsConfig(max_message_bytes=1024, allowed_models=["m"]))
    enc = msgspec.json.encode
    cases = {
        b"nope": "not_json",
        b'{"ts": 1, "model": "\xff", "model_version": "1"}': "not_utf8",
        b"[1, 2]": "not_object",
        enc({"ts": 1, "model": "m"}): "missing_field",
        enc({**GOOD, "model": 7}): "wrong_type",
        enc({**GOOD, "features": {"a": [1]}}): "wrong_type",
        b'{"ts": 1, "model": "m", "model_version": "1", "confidence": 1e999}': "not_finite",
        enc({**GOOD, "confidence": 1.5}): "out_of_range",
        enc({**GOOD, "latency_ms": -1}): "out_of_range",
        enc({**GOOD, "ts": "last tuesday"}): "bad_timestamp",
        enc({**GOOD, "ts": time.time() + 3600}): "future_timestamp",
        enc({**GOOD, "model": "other"}): "unknown_model",
        enc({**GOOD, "client_id": "x" * 2000}): "too_large",
        b"{" + b" " * 2000 + b"}": "too_large",
        None: "not_json",
    }
    for raw, reason in cases.items():
        got = d.decode(raw)
        assert isinstance(got, BadRecord), raw
        assert got.reason == reason, (raw, got)
        assert got.reason in REASONS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert isinstance(Decoder(EventsConfig()).decode(raw), Event | BadRecord)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*GOOD, "embedding", "label", "confidence"]),
                       json_values, max_size=10))
def test_arbitrary_json_objects_never_raise_and_good_ones_are_finite(doc: dict) -> None:
    got = decode({**GOOD, **doc})
    assert isinstance(got, Event | BadRecord)
    if isinstance(got, Event):
        assert math.isfinite(got.ts)
        assert got.confidence is None or 0 <= got.confidence <= 1


def test_numeric_and_text_timestamps_interleaved_decode_as_each_does_alone() -> None:
    d = Decoder(EventsConfig())
    enc = msgspec.json.encode
    number, text = enc({**GOOD, "ts": 1_767_225_600}), enc(GOOD)
    bad = enc({**GOOD, "confidence": 1.5, "ts": 5})
    for raw in [number, text, number, bad, text, bad, text, number]:
        assert d.decode(raw) == Decoder(EventsConfig()).decode(raw)
    ev = d.decode(number)
    assert isinstance(ev, Event) and ev.ts == 1_767_225_600.0 and ev.confidence == 0.7
