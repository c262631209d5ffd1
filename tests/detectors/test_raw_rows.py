"""A model version holds its first LAYOUT_ROWS events raw until its automatic drift
reference is built, which for a quiet version can take days: those rows are held
compactly, and give back exactly what the reference would take from them as dicts."""

from __future__ import annotations

import pickle
import tracemalloc
from typing import Any

import numpy as np
import pytest

from detectors.drift import LAYOUT_ROWS, DistributionDrift
from detectors.event import Event
from detectors.raw_rows import RawRows, Row, row_values
from detectors.reference import build_reference

FEATURES = 25


def _float_row(rng: np.random.Generator) -> dict[str, Any]:
    return {f"f{j:02d}": float(rng.normal()) for j in range(FEATURES)}


def _batches(rng: np.random.Generator) -> list[list[Row]]:
    """Batches of every shape a producer sends: all-float maps, ints, strings,
    missing names, names in another order, no features, no prediction."""
    floats = [(_float_row(rng), int(rng.integers(3)), float(rng.random())) for _ in range(40)]
    with_int = [({**_float_row(rng), "count": 3}, 1, 0.5) for _ in range(5)]
    with_str = [({"colour": "red", "x": 1.5}, "yes", None) for _ in range(5)]
    ragged = [({"x": 1.0}, 0, 0.2), ({"x": 2.0, "y": 1.0}, 0, 0.3)]
    reordered = [({"b": 1.0, "a": 2.0}, None, 0.1), ({"a": 1.0, "b": 2.0}, None, 0.1)]
    bare: list[Row] = [(None, 2, 0.7), ({}, 2, None)]
    return [floats, with_int, with_str, ragged, reordered, bare, floats[:1], []]


def test_the_rows_come_back_exactly_as_dicts_in_order() -> None:
    rng = np.random.default_rng(1)
    batches = _batches(rng)
    raw = RawRows()
    for b in batches:
        raw.extend(b)
    expected = [row_values(r) for b in batches for r in b]
    got = raw.values()
    assert got == expected
    assert [list(r) for r in got] == [list(r) for r in expected]  # the names' order too
    assert [type(v) for r in got for v in r.values()] == [
        type(v) for r in expected for v in r.values()]  # 3 stays an int, 0.5 a float
    assert len(raw) == len(expected)
    twin = pickle.loads(pickle.dumps(raw))
    assert twin.values() == expected and len(twin) == len(expected)
    assert len(pickle.loads(pickle.dumps(RawRows()))) == 0


def test_the_rows_from_any_point_on_and_pieces_joined_are_the_rows() -> None:
    # what a checkpoint stores of them (monitor.row_chunks): after each batch, the rows
    # since the previous one; a restore joins those pieces
    batches = _batches(np.random.default_rng(2))
    raw, pieces = RawRows(), []
    for b in batches:
        stored = len(raw)
        raw.extend(b)
        pieces.append(pickle.loads(pickle.dumps(raw.since(stored))))
    expected = raw.values()
    for start in range(len(raw) + 1):
        tail = raw.since(start)
        assert tail.values() == expected[start:] and len(tail) == len(raw) - start
    joined = RawRows.joined(pieces)
    assert joined.values() == expected and len(joined) == len(raw)
    joined.extend(batches[0])
    raw.extend(batches[0])
    assert joined.values() == raw.values()


def _events(n: int, seed: int, per_s: float = 100.0) -> list[Event]:
    rng = np.random.default_rng(seed)
    return [Event(ts=1_767_225_600.0 + i / per_s, model="m", model_version="1",
                  features=_float_row(rng), prediction=int(rng.integers(10)),
                  confidence=float(rng.random())) for i in range(n)]


def _warm(events: list[Event]) -> DistributionDrift:
    det = DistributionDrift(bucket_s=1.0, lateness_s=0.0, window_events=500,
                            reference_events=LAYOUT_ROWS, min_events=100)
    for start in range(0, len(events), 500):
        for e in events[start:start + 500]:
            det.update(e)
        det.tick(events[min(start + 500, len(events)) - 1].ts)
    return det


@pytest.mark.parametrize("per_s", [100.0, 0.5], ids=["busy", "one-event-a-bucket"])
def test_a_warming_version_holds_a_few_hundred_bytes_per_event(per_s: float) -> None:
    # as dicts, ~0.9 KB per 25-feature event: 4.3 MiB per version until its reference;
    # a quiet version, one event in each 1-s bucket, must not fall back to that
    events = _events(LAYOUT_ROWS - 500, seed=2, per_s=per_s)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        det = _warm(events)
        del events
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert det.reference is None and len(det._ref_rows) > LAYOUT_ROWS - 1000
    assert held / len(det._ref_rows) < 400, f"{held / len(det._ref_rows):.0f} bytes per row"


def test_the_reference_is_the_one_built_from_the_rows_as_they_came() -> None:
    events = _events(LAYOUT_ROWS + 700, seed=3)
    half = _warm(events[:3000])
    resumed = pickle.loads(pickle.dumps(half))  # a checkpoint in the middle of the warm-up
    for start in range(3000, len(events), 500):
        for e in events[start:start + 500]:
            resumed.update(e)
        resumed.tick(events[min(start + 500, len(events)) - 1].ts)
    ref = resumed.reference
    assert ref is not None
    rows = [row_values((e.features, e.prediction, e.confidence)) for e in events[:ref.n]]
    expected = build_reference(rows[:LAYOUT_ROWS], bins=resumed.bins, top_k=resumed.top_k)
    assert ref.layout == expected.layout
    assert ref.sample == expected.sample
    whole = _warm(events)
    assert whole.reference is not None and whole.reference.counts == ref.counts


def test_a_warm_up_stored_by_the_previous_release_resumes() -> None:
    # formats 3 and 4 pickled the rows as a list of dicts
    events = _events(LAYOUT_ROWS + 700, seed=4)
    det = _warm(events[:3000])
    state = pickle.loads(pickle.dumps(det)).__dict__
    state["_ref_rows"] = state["_ref_rows"].values()
    old = DistributionDrift.__new__(DistributionDrift)
    old.__setstate__(state)
    for start in range(3000, len(events), 500):
        for e in events[start:start + 500]:
            old.update(e)
            det.update(e)
        old.tick(events[min(start + 500, len(events)) - 1].ts)
        det.tick(events[min(start + 500, len(events)) - 1].ts)
    assert old.reference is not None and det.reference is not None
    assert old.reference.counts == det.reference.counts
