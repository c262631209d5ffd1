"""The drift report and the version comparison on the kinds of data models log: a
categorical feature with more values than a stored reference lists, class ids sent
as numbers, labels sent as strings, a reference built from a training file (no
confidence)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from detectors.event import Event
from detectors.reference import CONFIDENCE, PREDICTION, build_reference
from monitor.compare import shadow_agreement
from monitor.drift_report import build_report
from monitor.reference import save_reference
from monitor.store import Store
from monitor.summaries import Summary
from tests.jobs.seeded import DAY, MONDAY, config, ingest

MERCHANTS = 30  # more than the stored reference lists (its top 20, the rest as "other")


def _row(rng: random.Random, *, shifted: bool = False) -> dict[str, Any]:
    merchant = "m00" if shifted and rng.random() < 0.5 else f"m{rng.randrange(MERCHANTS):02d}"
    return {"x": rng.gauss(0, 1), "merchant": merchant}


def _week(rng: random.Random, *, shifted: bool = False) -> list[dict[str, Any]]:
    """A week of events, one every 5 minutes; class ids as JSON numbers."""
    return [{"ts": MONDAY + i * 300, "model": "m", "model_version": "1",
             "client_id": f"c{i % 20}", "request_id": f"r{i}", "features": _row(rng, shifted=shifted),
             "prediction": rng.choice([0, 1, 2]), "confidence": 0.5 + rng.random() / 2}
            for i in range(7 * 288)]


def _report(tmp_path: Path, events: list[dict[str, Any]], *,
            with_confidence: bool = True) -> dict[str, Any]:
    """The report of ``events`` against a reference built from a training file of
    the same distribution (class ids as numbers, as a CSV gives them)."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    cfg = config(url, str(tmp_path / "r"))
    store = Store(url)
    store.migrate()
    rng = random.Random(99)
    rows = [_row(rng) | {PREDICTION: rng.choice([0, 1, 2])}
            | ({CONFIDENCE: 0.5 + rng.random() / 2} if with_confidence else {})
            for _ in range(20_000)]
    save_reference(store, build_reference(rows, model="m", source="file:train.csv"))
    ingest(cfg, events)
    summary = build_report(store, cfg, "m", MONDAY, MONDAY + 7 * DAY, now=MONDAY + 7 * DAY)
    store.close()
    return summary


def _feature(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in summary["top_features"] if f["feature"] == name)


def test_a_category_the_reference_counted_as_other_is_not_drift(tmp_path: Path) -> None:
    summary = _report(tmp_path, _week(random.Random(1)))
    assert summary["reference"]["source"] == "stored:file:train.csv"
    merchant = _feature(summary, "merchant")
    assert merchant["psi"] < 0.05 and not merchant["drifted"]
    assert summary["drifted_features"] == []


def test_a_category_that_took_over_is_still_drift(tmp_path: Path) -> None:
    summary = _report(tmp_path, _week(random.Random(1), shifted=True))
    assert summary["drifted_features"] == ["merchant"]


def test_class_ids_sent_as_numbers_are_compared_as_classes(tmp_path: Path) -> None:
    summary = _report(tmp_path, _week(random.Random(2)))
    prediction = summary["prediction"]
    assert prediction["type"] == "classes" and not prediction["drifted"]
    assert set(prediction["current"]) == set(prediction["reference"]) == {"0", "1", "2"}


@pytest.mark.slow
def test_evidently_runs_on_a_reference_without_confidence(tmp_path: Path) -> None:
    summary = _report(tmp_path, _week(random.Random(3)), with_confidence=False)
    evidently = summary["evidently"]
    assert "error" not in evidently, evidently
    assert evidently["rows"] == {"reference": 500, "current": 7 * 288}
    assert evidently["drift_share"] is not None  # its verdict on the columns both sides have
    page = (Path(summary["path"]).parent / "evidently.html").read_text()
    assert "merchant" in page and "prediction" in page


def _events(predictions: list[Any], labels: list[Any]) -> list[Event]:
    return [Event(ts=MONDAY + i, model="m", model_version="1", request_id=f"r{i}",
                  prediction=p, label=lab)
            for i, (p, lab) in enumerate(zip(predictions, labels, strict=True))]


def test_a_label_sent_as_text_matches_the_same_class_sent_as_a_number() -> None:
    s = Summary()
    s.add_events(_events([1.0, 0.0, 1.0, 2.0], ["1", "0", "0", 2]), sample_size=10,
                 max_categories=50)
    assert (s.labelled, s.correct) == (4, 3)
    assert s.predicts_classes() and s.classes == {"1": 2, "0": 1, "2": 1}

    text = Summary()
    text.add_events(_events(["1", "0", "1", "2"], [None] * 4), sample_size=10, max_categories=50)
    shadow = shadow_agreement(s, text)
    assert shadow["shared_requests"] == 4 and shadow["agreement"] == 1.0


def test_a_regression_output_is_not_taken_for_classes() -> None:
    s = Summary()
    rng = random.Random(4)
    values = [round(rng.uniform(0, 100), 2) for _ in range(1000)] + [5.0, 7.0]
    s.add_events(_events(values, [None] * len(values)), sample_size=10, max_categories=50)
    assert s.prediction.n == 1002 and not s.predicts_classes()


def test_the_report_alert_names_the_newest_version_not_the_busiest(tmp_path: Path) -> None:
    import msgspec

    from monitor.drift_report import report_job
    from monitor.scheduler import JobContext

    rng = random.Random(5)
    events = _week(rng)
    for e in events[-288:]:  # the last day, one event in four: a canary of version 2
        if int(e["request_id"][1:]) % 4 == 0:
            e["model_version"] = "2"
    url = f"sqlite:///{tmp_path / 'store.db'}"
    cfg = config(url, str(tmp_path / "r"), drift_report={"evidently": False})
    ingest(cfg, events)
    store = Store(url)
    store.migrate()
    ctx = JobContext(cfg, store, "test", clock=lambda: MONDAY + 7 * DAY)
    report_job(ctx, MONDAY + 7 * DAY, since=MONDAY, until=MONDAY + 7 * DAY)
    posted = [msgspec.json.decode(r.record) for r in store.outbox_after("x", limit=10)]
    store.close()
    assert [(r["detector"], r["model_version"]) for r in posted] == [("jobs.drift_report", "2")]


def test_a_stored_references_confidence_keeps_every_answer() -> None:
    from monitor.drift_report import summary_from_reference

    rows = [{"x": float(i), CONFIDENCE: 0.97} for i in range(1000)]
    rows += [{"x": 1.0, CONFIDENCE: 0.55} for _ in range(3)]  # 3 answers in [0.5, 0.6)
    summary = summary_from_reference(build_reference(rows, model="m"))
    assert int(summary.confidence.sum()) == 1003
    assert int(summary.confidence[50:60].sum()) == 3
