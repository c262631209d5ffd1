"""Window summaries do not depend on how the pipeline batches events: one event at a
time, random batch splits and the reference outputs recorded from the
event-by-event implementation all store the same summary."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import msgspec
import numpy as np

from detectors.event import Event
from detectors.reference import uniform_columns
from monitor.summaries import Sketch, Summary, SummaryCollector

PID = ("logs", 0)


def _events(n: int = 3000, seed: int = 5) -> list[Event]:
    """Two models, three versions, several hourly buckets, and every shape a summary
    handles: numeric, categorical, None and absent features, string and numeric
    predictions, labels, no confidence, no request id."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        model, version = [("m", "1"), ("m", "2"), ("r", "1")][int(rng.integers(0, 3))]
        feats: dict[str, Any] = {f"x{j}": round(float(v), 4)
                                 for j, v in enumerate(rng.normal(0, 10, 6))}
        feats["tiny"] = float(rng.choice([0.0, 1e-12, -3.5, 2e6]))
        feats["country"] = ["de", "fr", "us", "uk"][i % 4]
        if i % 7 == 0:
            feats["x1"] = None
        if i % 11 == 0:
            del feats["x2"]
        if i % 13 == 0:
            feats["late"] = float(i)
        numeric = model == "r"
        pred: str | float = round(float(rng.gamma(2.0, 3.0)), 3) if numeric else f"c{i % 5}"
        label = None if i % 3 else (pred if i % 2 else "c0")
        out.append(Event(
            ts=1_767_225_600.0 + i * 7.3, model=model, model_version=version,
            client_id=f"k{i % 40}", request_id=None if i % 17 == 0 else f"q-{i}",
            features=feats, prediction=pred,
            confidence=None if numeric or i % 19 == 0 else round(float(rng.uniform(0, 1)), 5),
            latency_ms=None if i % 23 == 0 else round(float(rng.gamma(4.0, 3.0)), 2),
            label=label))
    return out


def _sketch(s: Sketch, *, sums: bool) -> tuple:
    return (sorted(s.buckets.items()), s.n, s.missing, s.min, s.max,
            (s.sum, s.sumsq) if sums else None)


def _canonical(collector: SummaryCollector, *, sums: bool = True) -> dict:
    out = {}
    for key, s in sorted(collector.deltas[PID].items()):
        out[key] = (s.n, s.first_ts, s.last_ts, s.labelled, s.correct,
                    s.confidence.tolist(), sorted(s.classes.items()),
                    sorted((k, sorted(v.items())) for k, v in s.categories.items()),
                    sorted((k, _sketch(v, sums=sums)) for k, v in s.features.items()),
                    _sketch(s.prediction, sums=sums), _sketch(s.latency, sums=sums),
                    msgspec.json.encode(s.sample))
    return out


def _collect(events: list[Event], cuts: list[int]) -> SummaryCollector:
    c = SummaryCollector(bucket_s=3600.0, sample_size=50, max_categories=3)
    for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True):
        c.add(PID, events[a:b])
    return c


def _digest(canonical: dict) -> str:
    return hashlib.sha256(repr(sorted(canonical.items())).encode()).hexdigest()


# recorded from the implementation before batch columns, fed one event at a time
# (batches then counted a feature absent from some of their events as missing)
REFERENCE = "c2c80a277243e3cd27120adb6cbfd1a79089288472cebf3f6ceefea83859ee65"
REFERENCE_NO_SUMS = "9edb3dcbc0c3098c42fffbe4cfa732ed31a917a765367dca67b75dab63f299b8"


def test_one_event_at_a_time_stores_the_reference_summaries() -> None:
    events = _events()
    assert _digest(_canonical(_collect(events, list(range(1, len(events)))))) == REFERENCE


def test_random_batch_splits_store_the_same_summaries_as_one_event_at_a_time() -> None:
    events = _events()
    whole = _collect(events, [])
    assert _digest(_canonical(whole, sums=False)) == REFERENCE_NO_SUMS
    rng = random.Random(11)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(events)), rng.randint(1, 40)))
        split = _collect(events, cuts)
        assert _canonical(split, sums=False) == _canonical(whole, sums=False)
        # float sums are per batch: equal up to rounding
        for key, s in split.deltas[PID].items():
            mine = whole.deltas[PID][key]
            for name, sk in s.features.items():
                assert np.isclose(sk.sum, mine.features[name].sum, rtol=1e-12, atol=1e-9)


def test_a_delta_encodes_and_merges_like_the_summary_it_was_built_from() -> None:
    events = _events(600)
    a = _collect(events, [100, 350])
    b = _collect(events, [])
    for key, s in a.deltas[PID].items():
        back = Summary.decode(s.encode())
        assert _sketch(back.features["x0"], sums=False) == _sketch(
            b.deltas[PID][key].features["x0"], sums=False)
        merged = Summary().merge(back, sample_size=50)
        assert merged.n == s.n and merged.sample == s.sample


def _numeric_events(n: int = 2000, seed: int = 9) -> list[Event]:
    """All-numeric feature maps in one key order (read in one pass per batch), with
    ints, bools and stretches in another key order, with None, or with a string in a
    numeric feature (which makes it categorical from that event on)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        feats: dict[str, Any] = {f"x{j}": round(float(v), 4)
                                 for j, v in enumerate(rng.normal(0, 10, 5))}
        feats["count"] = int(rng.integers(0, 9))
        feats["flag"] = bool(i % 3)
        if 600 <= i < 700:
            feats = dict(reversed(feats.items()))
        elif 900 <= i < 950 and i % 10 == 0:
            feats["x1"] = None if i % 20 else "n/a"
        out.append(Event(ts=1_767_225_600.0 + i * 5.1, model="m", model_version="1",
                         client_id=f"k{i % 30}", request_id=f"q-{i}", features=feats,
                         prediction=f"c{i % 4}", confidence=0.5 + (i % 50) / 100))
    return out


def test_numeric_batches_store_what_one_event_at_a_time_does() -> None:
    events = _numeric_events()
    assert uniform_columns([e.features for e in events[:50]], ["x0", "flag"]) is not None
    one_by_one = _collect(events, list(range(1, len(events))))
    for cuts in ([], [650], sorted(random.Random(3).sample(range(1, len(events)), 25))):
        batched = _collect(events, cuts)
        assert _canonical(batched, sums=False) == _canonical(one_by_one, sums=False)
        for key, s in batched.deltas[PID].items():
            for name, sk in s.features.items():  # float sums are per batch: up to rounding
                assert np.isclose(sk.sum, one_by_one.deltas[PID][key].features[name].sum,
                                  rtol=1e-12, atol=1e-9)


def test_numeric_strings_are_categories_as_the_drift_reference_counts_them() -> None:
    """A zip code sent as a string ("02134") is a category, in the summaries as in
    the drift reference (numpy alone would read it as the number 2134), batched or not."""
    from detectors.reference import build_layout

    zips = ["02134", "10001", "1.5"]  # at most 3 categories (_collect)
    events = [Event(ts=1_767_225_600.0 + i, model="m", model_version="1", client_id="k",
                    features={"x": float(i), "zip": zips[i % 3]}, prediction="c0")
              for i in range(200)]
    layout = build_layout([e.features for e in events if e.features])
    assert layout.numeric == ("x",) and layout.categorical == ("zip",)
    for cuts in ([], list(range(1, len(events)))):
        (summary,) = _collect(events, cuts).deltas[PID].values()
        assert sorted(summary.features) == ["x"]
        assert summary.categories["zip"] == {"02134": 67, "10001": 67, "1.5": 66}
