"""The contract every detector keeps (river-style), run over all of them.

Detectors are discovered from the package, so a new detector is covered the
moment it lands: it must construct with defaults, show its parameters in
``repr``, clone to a fresh equal-configured instance, survive a pickle round
trip mid-stream (checkpoints depend on it) and then behave exactly like the
original, and report JSON-serialisable evidence.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil

import msgspec
import numpy as np
import pytest

import detectors
from detectors.base import Detector
from detectors.event import Event


def _all_detectors() -> list[type[Detector]]:
    found = {}
    for info in pkgutil.iter_modules(detectors.__path__):
        module = importlib.import_module(f"detectors.{info.name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Detector) and obj is not Detector and not inspect.isabstract(obj):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


def _stream(seed: int, n: int = 3000) -> list[Event]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = float(rng.uniform(0.5, 1.0))
        out.append(Event(
            ts=1_700_000_000 + i * 0.2, model="m", model_version="1",
            client_id=f"c{i % 3}", request_id=f"r{i}", source_ip="10.0.0.1",
            features={"a": float(rng.normal()), "b": float(rng.normal(2 if i > 2000 else 0)),
                      "colour": ["red", "blue"][i % 2]},
            embedding=[float(v) for v in rng.normal(size=4)],
            prediction="yes" if p > 0.7 else "no",
            probabilities={"yes": p, "no": 1 - p}, confidence=p, latency_ms=5.0,
        ))
    return out


def _drive(det: Detector, events: list[Event]) -> list[tuple[bool, str]]:
    trace = []
    for ev in events:
        det.update(ev)
        det.tick(ev.ts)
        trace.append((det.detected, msgspec.json.encode(det.evidence()).decode()))
    return trace


DETECTORS = _all_detectors()


def test_the_package_has_detectors() -> None:
    assert len(DETECTORS) >= 3


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.__name__)
def test_parameters_are_keyword_only_and_shown_by_repr(cls: type[Detector]) -> None:
    params = [p for n, p in inspect.signature(cls.__init__).parameters.items() if n != "self"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params), params
    det = cls()
    text = repr(det)
    assert text.startswith(cls.__name__ + "(")
    for p in params:
        assert f"{p.name}=" in text
    assert det.name and det.kind in (
        "flooding", "extraction", "evasion", "confidence", "drift", "version_regression")


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.__name__)
def test_clone_is_fresh_and_equally_configured(cls: type[Detector]) -> None:
    det = cls()
    _drive(det, _stream(1, 500))
    twin = det.clone()
    assert repr(twin) == repr(det)
    assert twin is not det and not twin.detected
    assert _drive(twin, _stream(2, 300)) == _drive(cls(), _stream(2, 300))


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.__name__)
def test_pickle_round_trip_mid_stream_continues_identically(cls: type[Detector]) -> None:
    events = _stream(3)
    original = cls()
    _drive(original, events[:1500])
    restored = pickle.loads(pickle.dumps(original))
    assert _drive(restored, events[1500:]) == _drive(original, events[1500:])
