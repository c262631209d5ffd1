"""Model-wide detectors fed one event at a time and in random batch splits raise the
same findings with the same evidence and end in the same state: how records are
batched is invisible (the determinism contract). The stream has late events, gaps
that put several buckets in one batch, missing features, strings and None in
numeric features, numbers in categorical ones, segments, answers with and without
probabilities, labels, and events with nothing to count; drift runs before and
after its reference exists, and with a configured reference from the start."""

from __future__ import annotations

import itertools
import pickle
from typing import Any

import numpy as np
import pytest

from detectors.base import Detector, Finding
from detectors.confidence import ConfidenceDrift
from detectors.drift import DistributionDrift, ReferenceSet
from detectors.event import Event
from detectors.keyed import Keyed
from detectors.reference import build_reference

T0 = 1_700_000_000.0
RATE = 100.0  # events per second of event time; buckets of 1 s


def _features(rng: np.random.Generator, i: int, n: int) -> dict[str, Any]:
    f: dict[str, Any] = {"x0": float(rng.normal(1.5 if i > 0.6 * n else 0.0)),
                         "x1": float(rng.exponential()), "count": int(rng.integers(0, 5)),
                         "flag": bool(rng.random() < 0.3),
                         "colour": ["red", "green", "blue", "teal"][int(rng.integers(0, 4))],
                         "region": ["eu", "us", "apac", "latam"][int(rng.integers(0, 4))]}
    u = rng.random(6)
    if u[0] < 0.05:
        del f["x1"]
    if u[1] < 0.03:
        f["x0"] = "n/a"  # a string in a numeric feature counts as missing
    elif u[1] < 0.05:
        f["x0"] = None
    elif u[1] < 0.06:
        f["x0"] = float("nan")
    if u[2] < 0.03:
        f["colour"] = 3.0 if u[3] < 0.5 else None
    if u[4] < 0.02:
        del f["region"]
    if u[5] < 0.01:
        f["colour"] = "mauve"  # unseen by the reference
    return f


def _answer(rng: np.random.Generator, i: int, n: int) -> dict[str, Any]:
    kind = rng.random()
    if kind < 0.05:
        return {}  # no answer at all
    if kind < 0.15:
        return {"prediction": "yes", "confidence": float(rng.uniform(0.5, 1.0))}  # binary
    logits = rng.normal(0, 0.8 if i > 0.7 * n else 2.5, 3)
    p = np.exp(logits - logits.max())
    p = (p / p.sum()).round(4)
    if kind < 0.2:
        p[int(np.argmin(p))] = 0.0  # a zero probability adds no entropy term
    labels = ["a", "b", "c"]
    pred = labels[int(np.argmax(p))]
    probs: dict[str, float] | list[float] = (dict(zip(labels, p.tolist(), strict=True))
                                             if kind < 0.8 else p.tolist())
    out: dict[str, Any] = {"prediction": pred, "probabilities": probs}
    if rng.random() < 0.3:
        out["label"] = pred if rng.random() < 0.8 else "b"
    return out


def _stream(seed: int, n: int) -> list[Event]:
    """Mostly in time order; 3% late by 1.5-4 s (some past the lateness), a few
    gaps of 2-6 s, 1% with nothing to count."""
    rng = np.random.default_rng(seed)
    t = T0
    events = []
    for i in range(n):
        t += float(rng.exponential(1 / RATE))
        if rng.random() < 0.003:
            t += float(rng.uniform(2.0, 6.0))
        ts = t - float(rng.uniform(1.5, 4.0)) if rng.random() < 0.03 else t
        if rng.random() < 0.01:
            events.append(Event(ts=ts, model="m", model_version="1"))
            continue
        events.append(Event(ts=ts, model="m", model_version="1", features=_features(rng, i, n),
                            **_answer(rng, i, n)))
    return events


def _ticks(rng: np.random.Generator, n: int) -> list[int]:
    """Where the watermark advances: after batches of 1 to 400 events."""
    cuts = np.cumsum(rng.integers(1, 400, n))
    return [int(c) for c in cuts[cuts < n]] + [n]


def _observe(keyed: Keyed, found: list[Finding], out: list[Any]) -> None:
    det = keyed.slots[("m", "1")].detector
    out.append(([(f.status, f.ts, f.evidence) for f in found], det.detected, det.decided_at,
                det.evidence(), det.next_decision()))


def _one_by_one(proto: Detector, events: list[Event], ticks: list[int]) -> tuple[Keyed, list[Any]]:
    keyed, seen, lo = Keyed(proto, key="model"), [], 0
    for hi in ticks:
        found = [f for e in events[lo:hi] for f in keyed.update(e)]
        found += keyed.tick(max(e.ts for e in events[:hi]))
        _observe(keyed, found, seen)
        lo = hi
    return keyed, seen


def _batched(proto: Detector, events: list[Event], ticks: list[int], rng: np.random.Generator,
             restart_at: int) -> tuple[Keyed, list[Any], Any]:
    """Each tick's events in random sub-batches; pickled and restored at one tick
    (a checkpoint and a restart). Also returns the drift reference as it was built
    (a checkpoint leaves its sample out: the store keeps that for the reports)."""
    keyed, seen, lo = Keyed(proto, key="model"), [], 0
    built = None
    for k, hi in enumerate(ticks):
        cuts = sorted({lo, hi, *rng.integers(lo, hi, 3).tolist()})
        found = [f for a, b in itertools.pairwise(cuts)
                 for f in keyed.update_batch(events[a:b])]
        found += keyed.tick(max(e.ts for e in events[:hi]))
        _observe(keyed, found, seen)
        if built is None:
            built = getattr(keyed.slots[("m", "1")].detector, "reference", None)
        if k == restart_at:
            keyed = pickle.loads(pickle.dumps(keyed))
        lo = hi
    return keyed, seen, built


def _drift(**kw: Any) -> DistributionDrift:
    return DistributionDrift(**{"bucket_s": 1.0, "lateness_s": 1.0, "window_events": 300,
                                "min_events": 50, "reference_events": 1500, "segment_by": "region",
                                "top_segments": 3, "top_k": 3} | kw)


def _configured_reference() -> ReferenceSet:
    rng = np.random.default_rng(99)
    rows = [{**_features(rng, i, 10**9), "@prediction": "a", "@confidence": 0.9}
            for i in range(3000)]
    ref = build_reference(rows, model="m", model_version="1", segment_by="region",
                          top_segments=3, top_k=3)
    return ReferenceSet([ref])


@pytest.mark.parametrize(("seed", "make"), [
    (1, _drift),
    (2, lambda: _drift(references=_configured_reference())),
    (3, lambda: _drift(predictions=False, segment_by=None)),
    (4, lambda: ConfidenceDrift(bucket_s=1.0, lateness_s=1.0, reference_events=600,
                                reference_labels=200, min_labels=100, min_effect=0.3)),
    # ~100 answers a bucket: groups of 3-4 buckets, some across the 2-6 s gaps (no
    # labelled reference: the incident must come from the groups)
    (5, lambda: ConfidenceDrift(bucket_s=1.0, lateness_s=1.0, reference_events=600,
                                reference_labels=10**9, min_bucket_events=250,
                                min_effect=0.3)),
])
def test_batching_changes_nothing(seed: int, make: Any) -> None:
    events = _stream(seed, 9000)
    rng = np.random.default_rng(seed)
    ticks = _ticks(rng, len(events))
    one, seen_one = _one_by_one(make(), events, ticks)
    many, seen_many, built = _batched(make(), events, ticks, rng, restart_at=len(ticks) // 2)
    assert seen_many == seen_one
    end = events[-1].ts + 100.0  # close every bucket: no state is left pending
    assert many.tick(end) == one.tick(end)
    a, b = one.slots[("m", "1")].detector, many.slots[("m", "1")].detector
    assert (a.evidence(), a.detected) == (b.evidence(), b.detected)
    assert a._buckets.late == b._buckets.late > 0
    if isinstance(a, DistributionDrift):
        assert a.reference is not None and b.reference is not None
        assert a.reference.counts == b.reference.counts
        assert repr(a.reference.sample) == repr(built.sample)  # NaN != NaN
    # the stream exercises what it claims to: decisions and an incident
    assert sum(1 for s in seen_one if s[2] is not None) > 10
    assert any(f[0] == "firing" for s in seen_one for f in s[0])


def test_a_batch_leaves_the_keys_in_the_order_events_would() -> None:
    """Expiry walks the keys oldest first: a batch must leave them in the order one
    event at a time would (by each key's last event)."""
    events = [Event(ts=float(i), model="m", model_version=v, confidence=0.9)
              for i, v in enumerate(["1", "2", "3", "1", "2"])]
    one = Keyed(ConfidenceDrift(), key="model")
    for e in events:
        one.update(e)
    many = Keyed(ConfidenceDrift(), key="model")
    many.update_batch(events)
    assert list(many.slots) == list(one.slots) == [("m", "3"), ("m", "1"), ("m", "2")]
