"""Feature maps keyed by an open vocabulary (token counts, entity ids as names):
a new name in nearly every event must not give the drift layout or the window
summaries one column per name ever seen. Before the caps, benchmark events
renamed so had the process OOM-killed at 24 GB before the 40,000th."""

from __future__ import annotations

import msgspec

from detectors.drift import LAYOUT_ROWS
from detectors.event import Event
from detectors.reference import build_layout
from monitor.config import build_config
from monitor.pipeline import Pipeline, Record
from monitor.summaries import MAX_FEATURE_NAMES, Summary, merge_all


def _row(i: int) -> dict[str, float]:
    """Two names every row has, and two of its own."""
    return {"amount": float(i % 7), "age": float(i % 5), f"tok-{i}": 1.0, f"id-{i}": 2.0}


def test_the_layout_keeps_the_names_most_rows_have() -> None:
    layout = build_layout([_row(i) for i in range(600)], max_columns=50)
    assert len(layout.numeric) == 50
    assert {"age", "amount"} <= set(layout.numeric)
    assert build_layout([_row(i) for i in range(10)]).numeric == tuple(
        sorted(set().union(*(_row(i) for i in range(10)))))  # under the cap: every name


def test_a_summary_holds_at_most_max_feature_names_and_keeps_summarising_those() -> None:
    events = [Event(ts=float(i), model="m", model_version="1", features=_row(i))
              for i in range(2 * MAX_FEATURE_NAMES)]
    s = Summary()
    for start in range(0, len(events), 100):
        s.add_events(events[start:start + 100], sample_size=10, max_categories=20)
    assert len(s.features) == MAX_FEATURE_NAMES
    assert s.features["amount"].n == s.features["age"].n == len(events)
    other = Summary()
    other.add_events([Event(ts=0.0, model="m", model_version="1", features={"new": 1.0})],
                     sample_size=10, max_categories=20)
    merged = merge_all([s, other])
    assert len(merged.features) == MAX_FEATURE_NAMES and "new" not in merged.features


def test_a_new_name_per_event_keeps_the_pipeline_state_bounded() -> None:
    p = Pipeline(build_config({"detectors": {"drift": {"reference_events": LAYOUT_ROWS}}},
                              env={}))
    n = LAYOUT_ROWS + 1000
    records = [Record(i, msgspec.json.encode({
        "ts": 1_767_225_600.0 + i / 10, "model": "m", "model_version": "1",
        "client_id": f"c{i % 50}", "features": _row(i), "prediction": "yes",
        "confidence": 0.9})) for i in range(n)]
    for start in range(0, n, 500):
        p.process(("t", 0), records[start:start + 500])
        p.advance()
    drift = next(k for k in p.models.detectors if k.prototype.name == "drift.distribution")
    (slot,) = drift.slots.values()
    assert slot.detector.reference is not None, "no reference built"
    layout = slot.detector.reference.layout
    assert len(layout.numeric) + len(layout.categorical) <= 1000
    assert {"age", "amount"} <= set(layout.numeric)
    for deltas in p.summaries.deltas.values():
        for summary in deltas.values():
            assert len(summary.features) <= MAX_FEATURE_NAMES
