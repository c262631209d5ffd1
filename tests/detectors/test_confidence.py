"""Confidence anomalies on seeded streams: quiet on stationary answers, a drop in
confidence or a flattening of the probabilities fires within a few buckets and
clears when it is over, an accuracy drop fires once labels arrive."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import msgspec
import numpy as np
import pytest

from detectors.confidence import SIGNALS, ConfidenceDrift, signal_table
from detectors.event import Event

RATE = 50  # events per second; buckets of 1 s


def _answer(rng: np.random.Generator, i: int, *, sharp: float = 3.0, classes: int = 2,
            label_ok: float | None = None) -> Event:
    logits = rng.normal(0, sharp, classes)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    probs = {f"c{k}": float(p[k]) for k in range(classes)}
    pred = max(probs, key=probs.__getitem__)
    label = None
    if label_ok is not None:
        label = pred if rng.random() < label_ok else "other"
    return Event(ts=1_700_000_000 + i / RATE, model="m", model_version="1",
                 prediction=pred, probabilities=probs, label=label)


def _run(det: ConfidenceDrift, n: int, make: Callable[[int], Event]) -> list[tuple[float, bool]]:
    trace = []
    for i in range(n):
        ev = make(i)
        det.update(ev)
        if i % RATE == 0:
            det.tick(ev.ts)
            if det.decided_at is not None and (not trace or trace[-1][0] != det.decided_at):
                trace.append((det.decided_at, det.detected))
    return trace


def _det() -> ConfidenceDrift:
    return ConfidenceDrift(bucket_s=1.0, lateness_s=0.0, reference_events=2000)


def test_stationary_answers_raise_nothing() -> None:
    rng = np.random.default_rng(1)
    trace = _run(_det(), 60_000, lambda i: _answer(rng, i))
    assert len(trace) > 1000 and not any(d for _, d in trace)


def test_a_confidence_drop_fires_within_a_few_buckets_and_clears_after() -> None:
    rng = np.random.default_rng(2)
    on, off = 10_000, 20_000  # events: seconds 200 and 400

    def make(i: int) -> Event:
        return _answer(rng, i, sharp=1.0 if on <= i < off else 3.0)

    det = _det()
    trace = _run(det, 40_000, make)
    fired = [t for t, d in trace if d]
    t_on, t_off = 1_700_000_000 + on / RATE, 1_700_000_000 + off / RATE
    assert fired and t_on < fired[0] <= t_on + 10
    assert all(t_on < t <= t_off + 60 for t in fired), "quiet outside the episode (+ADWIN lag)"
    assert not trace[-1][1]


def test_a_flattening_of_three_class_probabilities_shows_in_entropy_and_margin() -> None:
    rng = np.random.default_rng(3)
    det = _det()
    _run(det, 12_000, lambda i: _answer(rng, i, classes=3, sharp=1.0 if i >= 8000 else 2.5))
    shifted = {s["signal"] for s in det.evidence()["shifted"]}
    assert det.detected and {"entropy", "margin", "confidence"} <= shifted
    assert "dropped" in det.summary({}, "m")


def test_an_accuracy_drop_fires_once_labels_arrive_with_the_calibration_gap() -> None:
    rng = np.random.default_rng(4)
    det = ConfidenceDrift(bucket_s=1.0, lateness_s=0.0, reference_events=2000,
                          reference_labels=1000, min_labels=300)
    _run(det, 8000, lambda i: _answer(rng, i, label_ok=0.9 if i < 5000 else 0.75))
    acc = det.evidence()["accuracy"]
    assert det.detected and acc["firing"]
    assert acc["reference_accuracy"] > 0.85 and acc["accuracy"] < 0.8
    assert acc["calibration_gap"] > acc["reference_calibration_gap"]
    # estimated from confidence alone, calibrated on the reference labels: it cannot
    # see this drop (the answers look as confident as before), which is why labels matter
    assert abs(det.evidence()["estimated_accuracy"] - acc["reference_accuracy"]) < 0.05
    assert "accuracy fell" in det.summary({}, "m")


def test_pickled_mid_stream_it_continues_identically() -> None:
    rng = np.random.default_rng(5)
    events = [_answer(rng, i, sharp=1.0 if i > 6000 else 3.0) for i in range(9000)]
    det = _det()
    _run(det, 5000, lambda i: events[i])
    twin = pickle.loads(pickle.dumps(det))
    rest = events[5000:]
    assert _run(twin, len(rest), lambda i: rest[i]) == _run(det, len(rest), lambda i: rest[i])
    assert twin.evidence() == det.evidence() and det.detected


def test_overconfidence_is_calibration_drift_even_when_accuracy_holds() -> None:
    rng = np.random.default_rng(6)
    det = ConfidenceDrift(bucket_s=1.0, lateness_s=0.0, reference_events=2000,
                          reference_labels=1000, min_labels=300, min_effect=5.0)

    def make(i: int) -> Event:  # same accuracy (70%), answers far more confident later
        ev = _answer(rng, i, sharp=2.0 if i < 5000 else 10.0)
        return msgspec.structs.replace(
            ev, label=ev.prediction if rng.random() < 0.7 else "other")

    trace = _run(det, 8000, make)
    acc = det.evidence()["accuracy"]
    assert det.detected and acc["calibration_firing"] and not acc["firing"]
    assert not any(d for t, d in trace if t < 1_700_000_000 + 5000 / RATE)
    assert "confidence minus accuracy moved" in det.summary({}, "m")


def test_the_signal_table_of_a_batch_is_that_of_its_answers_one_by_one() -> None:
    """One model's answers (classes in one order) are read in one pass; a batch with
    another order, a list or a bare confidence is read answer by answer: both give
    each answer the bits it gets alone."""
    rng = np.random.default_rng(4)
    uniform = [_answer(rng, i, classes=4) for i in range(300)]
    first = uniform[0].probabilities
    assert isinstance(first, dict)
    reordered = Event(ts=0, model="m", model_version="1",
                      probabilities=dict(reversed(list(first.items()))))
    listed = Event(ts=0, model="m", model_version="1", probabilities=list(first.values()))
    bare = Event(ts=0, model="m", model_version="1", confidence=0.7)
    for batch in (uniform, [*uniform[:50], reordered, listed, bare, *uniform[50:60]]):
        alone = np.vstack([signal_table([e]) for e in batch])
        np.testing.assert_array_equal(signal_table(batch), alone)


def _class_ids(seed: int, label_as: Callable[[float, int], object]) -> Callable[[int], Event]:
    """A calibrated binary model (about 85% right) answering with class ids the JSON
    decoder reads as floats (0.0 / 1.0); ``label_as`` writes the true class."""
    rng = np.random.default_rng(seed)

    def make(i: int) -> Event:
        c = float(rng.uniform(0.7, 1.0))
        pred = float(rng.integers(0, 2))
        truth = pred if rng.random() < c else 1.0 - pred
        return Event(ts=1_700_000_000 + i / RATE, model="m", model_version="1",
                     confidence=c, prediction=pred, label=label_as(truth, i))
    return make


@pytest.mark.parametrize("label_as", [
    lambda y, i: str(int(y)),  # "1": a label joiner writing strings
    lambda y, i: int(y),  # 1
    lambda y, i: y if i < 3000 else str(int(y)),  # the joiner switches to strings mid-stream
], ids=["string", "int", "switch"])
def test_a_label_is_compared_with_the_prediction_as_a_class_whatever_its_type(
        label_as: Callable[[float, int], object]) -> None:
    """Class 1 arrives as prediction 1.0; its label as 1.0, 1 or "1" is the same class:
    accuracy and calibration are those of float labels, and a joiner that changes
    how it writes labels raises nothing (it raised "accuracy fell to 0.0%")."""

    def run(make: Callable[[int], Event]) -> ConfidenceDrift:
        det = ConfidenceDrift(bucket_s=1.0, lateness_s=0.0, reference_events=500,
                              reference_labels=300, min_labels=200)
        _run(det, 6000, make)
        return det

    floats, other = run(_class_ids(7, lambda y, i: y)), run(_class_ids(7, label_as))
    acc = other.evidence()["accuracy"]
    assert acc == floats.evidence()["accuracy"]
    assert 0.75 < acc["reference_accuracy"] < 0.95 and abs(acc["calibration_gap"]) < 0.1
    assert not other.detected and not acc["firing"] and not acc["calibration_firing"]


def test_state_stored_before_labels_were_classes_loads_and_relearns_a_never_right_reference(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint of the previous release holds a labelled reference built with
    str(label) == str(prediction): string labels against 1.0 made it 0% right. After
    the upgrade that reference is learnt again (else the corrected accuracy reads as
    a calibration shift of 0.8 and fires); one that was right some of the time is kept."""
    make = _class_ids(8, lambda y, i: str(int(y)))
    events = [make(i) for i in range(8000)]
    good = _class_ids(8, lambda y, i: y)
    floats = [good(i) for i in range(3000)]

    def old_release(stream: list[Event]) -> ConfidenceDrift:
        det = ConfidenceDrift(bucket_s=1.0, lateness_s=0.0, reference_events=500,
                              reference_labels=300, min_labels=200)
        with monkeypatch.context() as m:
            m.setattr("detectors.confidence.label", str)  # the old comparison
            _run(det, len(stream), lambda i: stream[i])
        del det._labels_as_classes  # the field this release adds
        return pickle.loads(pickle.dumps(det))

    det = old_release(events[:3000])
    rest = events[3000:]
    trace = _run(det, len(rest), lambda i: rest[i])
    acc = det.evidence()["accuracy"]
    assert not any(d for _, d in trace) and not acc["calibration_firing"]
    assert acc["reference_accuracy"] > 0.75 and abs(acc["calibration_gap"]) < 0.1
    kept = old_release(floats)
    assert kept._lab_ref.labelled >= 300 and kept._lab_ref.correct > 0.75 * kept._lab_ref.labelled


def _one_hot(seed: int, after: Callable[[np.random.Generator], float]) -> Callable[[int], Event]:
    """A model answering one-hot (confidence 1.0, no spread at all) for its first
    4,000 answers (the reference is the first 2,000), then ``after(rng)``."""
    rng = np.random.default_rng(seed)

    def make(i: int) -> Event:
        c = 1.0 if i < 4000 else after(rng)
        return Event(ts=1_700_000_000 + i / RATE, model="m", model_version="1",
                     confidence=c, probabilities={"a": c, "b": 1 - c})
    return make


@pytest.mark.parametrize("min_effect", [0.5, 0.01])
def test_a_signal_constant_in_the_reference_needs_a_real_change_to_fire(min_effect: float) -> None:
    """One-hot answers have zero reference SD. One answer in 500 at 0.9 moves the
    mean entropy by 0.001, which read as an 8-SD shift; it is no alert, even at a
    tiny ``min_effect``. A mean confidence going from 1.0 to 0.8 still fires, within
    a few buckets."""
    det = ConfidenceDrift(bucket_s=1.0, lateness_s=0.0, reference_events=2000,
                          min_effect=min_effect)
    rare = _run(det, 20_000, _one_hot(9, lambda rng: 0.9 if rng.random() < 0.002 else 1.0))
    assert len(rare) > 300 and not any(d for _, d in rare), det.evidence()["shifted"]

    det = ConfidenceDrift(bucket_s=1.0, lateness_s=0.0, reference_events=2000,
                          min_effect=min_effect)
    drop = _run(det, 6000, _one_hot(9, lambda rng: float(rng.uniform(0.7, 0.9))))
    fired = [t for t, d in drop if d]
    assert fired and fired[0] <= 1_700_000_000 + 4000 / RATE + 5 and drop[-1][1]
    shifted = {s["signal"]: s for s in det.evidence()["shifted"]}
    assert set(shifted) == set(SIGNALS)
    assert shifted["confidence"]["reference_mean"] == 1.0
    assert abs(shifted["confidence"]["current_mean"] - 0.8) < 0.02
    assert abs(shifted["margin"]["current_mean"] - 0.6) < 0.04
    assert "mean margin dropped from 1.000 to 0.5" in det.summary({}, "m")


def test_state_stored_with_a_tiny_reference_sd_loads_on_the_floor() -> None:
    """The previous release stored 1e-4 for a constant signal: it loads as the floor,
    with that signal's ADWIN started afresh (its contents were on the old scale),
    and the rare uncertain answer raises nothing from then on."""
    make = _one_hot(10, lambda rng: 0.9 if rng.random() < 0.002 else 1.0)
    events = [make(i) for i in range(12_000)]
    det = ConfidenceDrift(bucket_s=1.0, lateness_s=0.0, reference_events=2000)
    _run(det, 6000, lambda i: events[i])
    det._sd = [1e-4, 1e-4, 1e-4]  # as the previous release stored them
    del det._labels_as_classes
    det = pickle.loads(pickle.dumps(det))
    assert det._sd == [0.02, 0.02, 0.02] and all(a.width == 0 for a in det._adwins)
    rest = events[6000:]
    assert not any(d for _, d in _run(det, len(rest), lambda i: rest[i]))


def _slow(seed: int, gap_s: float, drop_at: int | None) -> Callable[[int], Event]:
    """One answer every ``gap_s`` seconds, confidence about 0.9, about 0.6 from
    answer ``drop_at`` on."""
    rng = np.random.default_rng(seed)

    def make(i: int) -> Event:
        mean = 0.6 if drop_at is not None and i >= drop_at else 0.9
        c = float(np.clip(rng.normal(mean, 0.05), 0.0, 1.0))
        return Event(ts=1_700_000_000 + i * gap_s, model="m", model_version="1",
                     confidence=c, probabilities={"a": c, "b": 1 - c})
    return make


def _run_each(det: ConfidenceDrift, n: int, make: Callable[[int], Event]) -> list[tuple[float, bool]]:
    trace = []
    for i in range(n):
        ev = make(i)
        det.update(ev)
        det.tick(ev.ts)
        if det.decided_at is not None and (not trace or trace[-1][0] != det.decided_at):
            trace.append((det.decided_at, det.detected))
    return trace


def test_a_model_below_half_an_answer_a_second_is_watched_too() -> None:
    """At 0.4 answers/s no 10-s bucket holds ``min_bucket_events`` (5): short buckets
    are joined until they do, so a drop from 0.9 to 0.6 fires within minutes (it
    was never seen: ADWIN got nothing), a steady model raises nothing, and every
    value ADWIN got spans at most 600 s."""
    t0, drop_at = 1_700_000_000, 1500
    det = ConfidenceDrift(reference_events=500)  # buckets of 10 s, 5 answers each
    trace = _run_each(det, 2500, _slow(11, 2.5, drop_at))
    fired = [t for t, d in trace if d]
    assert fired and t0 + drop_at * 2.5 < fired[0] <= t0 + drop_at * 2.5 + 300
    assert trace[-1][1] and "mean confidence dropped from 0.90" in det.summary({}, "m")
    last = det.evidence()["last_bucket"]
    assert last["events"] >= 5 and last["bucket_end"] - last["bucket_start"] <= 20

    steady = ConfidenceDrift(reference_events=500)
    assert not any(d for _, d in _run_each(steady, 5000, _slow(12, 2.5, None)))
    assert steady._adwins[0].width > 500  # it was watched all along


def test_a_group_that_cannot_fill_in_ten_minutes_is_dropped() -> None:
    """At one answer every 150 s, 5 answers take 750 s: no group fills within the
    600-s cap, so ADWIN never mixes answers further apart, and nothing is held
    beyond the one group being filled."""
    det = ConfidenceDrift(reference_events=50)
    _run_each(det, 400, _slow(13, 150.0, 200))
    assert det._adwins[0].width == 0 and not det.detected
    assert det._gather is not None and det._gather.n < 5


def test_state_stored_before_short_buckets_were_joined_continues_identically() -> None:
    """The previous release stored no group being filled: such a state loads with
    none and goes on exactly as a state of this release would."""
    rng = np.random.default_rng(14)
    events = [_answer(rng, i, sharp=1.0 if i > 6000 else 3.0) for i in range(9000)]
    det = _det()
    _run(det, 5000, lambda i: events[i])
    assert det._gather is None  # 50 answers a bucket: every bucket fills its own group
    old = pickle.loads(pickle.dumps(det))
    del old._gather, old._gather_start, old._labels_as_classes
    old = pickle.loads(pickle.dumps(old))
    rest = events[5000:]
    assert _run(old, len(rest), lambda i: rest[i]) == _run(det, len(rest), lambda i: rest[i])
    assert old.evidence() == det.evidence() and det.detected
