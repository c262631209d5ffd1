"""The drift and confidence settings people write in the config reach the detectors,
and mistakes in them are named by their dotted key."""

from __future__ import annotations

import pytest

from detectors.confidence import ConfidenceDrift
from detectors.drift import DistributionDrift
from monitor.config import ConfigError, build_config
from monitor.state import model_detectors


def _protos(raw: dict) -> dict[type, object]:
    config = build_config({"detectors": raw}, env={})
    return {type(k.prototype): k.prototype for k in model_detectors(config)}


def test_the_budget_and_segments_reach_the_drift_detector() -> None:
    protos = _protos({"drift": {"budget": {"false_alarms": 2, "days": 7},
                                "segment_by": "country", "window_events": 500},
                      "confidence": {"min_calibration_shift": 0.2}})
    drift = protos[DistributionDrift]
    assert isinstance(drift, DistributionDrift)
    assert (drift.false_alarms, drift.budget_days, drift.segment_by, drift.window_events) == (
        2.0, 7.0, "country", 500)
    # a looser budget (more false alarms allowed per day) lowers the CUSUM threshold
    strict = _protos({})[DistributionDrift]
    assert isinstance(strict, DistributionDrift)
    assert drift.budget()[1] < strict.budget()[1]
    conf = protos[ConfidenceDrift]
    assert isinstance(conf, ConfidenceDrift) and conf.min_calibration_shift == 0.2


def test_disabled_detectors_are_not_built() -> None:
    assert _protos({"drift": {"enabled": False}, "confidence": {"enabled": False}}) == {}


@pytest.mark.parametrize(("raw", "problem"), [
    ({"drift": {"budget": {"dayz": 30}}}, "detectors.drift.budget.dayz: unknown key"),
    ({"drift": {"budget": {"false_alarms": 0}}}, "detectors.drift.budget.false_alarms"),
    ({"drift": {"window_s": 60}}, "detectors.drift.window_s: unknown key"),
    ({"confidence": {"delta": 2}}, "detectors.confidence.delta"),
])
def test_mistakes_are_named_by_their_key(raw: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"detectors": raw}, env={})
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems
