"""The weekly drift report on stored summaries of a seeded stream (drifted and
undrifted models), at a fixed Monday-morning clock."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from monitor.cli import main
from monitor.drift_report import report_job
from monitor.scheduler import JobContext
from monitor.store import Store
from tests.jobs.seeded import DAY, MONDAY, config, ingest, stream

NOW = MONDAY + 7 * DAY + 8 * 3600  # Monday 2026-01-12 08:00 UTC
DRIFT_FROM = MONDAY + 4 * DAY  # Friday 2026-01-09 00:00 UTC


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{tmp / 'store.db'}"
    hours = (NOW - MONDAY) / 3600
    events = list(stream(model="drifty", version="3.2.0", start=MONDAY, hours=hours,
                         per_hour=60, seed=21, drift_from=DRIFT_FROM))
    events += stream(model="steady", version="1.0", start=MONDAY, hours=hours, per_hour=60,
                     seed=22)
    ingest(config(url, str(tmp)), events)
    return url, tmp


def _ctx(url: str, reports: Path, **jobs: object) -> JobContext:
    store = Store(url)
    store.migrate()
    return JobContext(config(url, str(reports), **jobs), store, "test", clock=lambda: NOW)


@pytest.mark.slow
def test_weekly_report_names_the_drifted_features_and_since_when(
        seeded: tuple[str, Path], tmp_path: Path) -> None:
    ctx = _ctx(seeded[0], tmp_path / "reports")
    message = report_job(ctx, NOW)
    lines = message.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("drift report drifty: drifty: 1 of 5 input features drifted: "
                               "amount (PSI")
    assert lines[1].startswith("drift report steady: steady: no input feature drifted")

    folders = {p.parent.parent.name: p.parent for p in
               (tmp_path / "reports").glob("drift/*/*/summary.json")}
    assert set(folders) == {"drifty", "steady"}
    for folder in folders.values():
        for name in ("index.html", "summary.json", "evidently.html", "evidently.json"):
            assert (folder / name).stat().st_size > 500, name
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "drift/drifty/" in index and "drift/steady/" in index

    drifty = json.loads((folders["drifty"] / "summary.json").read_text())
    assert drifty["drifted_features"] == ["amount"]
    assert drifty["reference"]["source"] == "early_traffic"
    top = drifty["top_features"][0]
    assert top["feature"] == "amount" and top["psi"] > 0.3 and top["shift_sd"] > 0.5
    assert top["drifting_since"].startswith("2026-01-09")
    assert drifty["prediction"]["drifted"] is True
    assert len(drifty["trend"]["periods"]) == 7  # one point per day
    assert drifty["comparison"] is None  # one version only

    steady = json.loads((folders["steady"] / "summary.json").read_text())
    assert steady["drifted_features"] == [] and steady["drift_share"] == 0.0

    evidently = json.loads((folders["drifty"] / "evidently.json").read_text())
    columns = {m["config"].get("column") for m in evidently["metrics"]}
    assert {"amount", "velocity", "age", "score", "country", "prediction"} <= columns
    assert "amount" in drifty["evidently"]["drifted_columns"]
    assert not {"velocity", "age", "score"} & set(drifty["evidently"]["drifted_columns"])

    page = (folders["drifty"] / "index.html").read_text()
    assert "<svg" in page and "amount" in page and "evidently.html" in page


def test_report_is_posted_as_one_drift_record_per_model(seeded: tuple[str, Path],
                                                        tmp_path: Path) -> None:
    ctx = _ctx(seeded[0], tmp_path, report_url="https://reports.example.com/iw/")
    before = len(ctx.store.outbox_after("x", limit=1000))
    report_job(ctx, NOW, model="drifty")
    rows = [msgspec.json.decode(r.record) for r in ctx.store.outbox_after("x", limit=1000)]
    new = rows[before:]
    assert [(r["kind"], r["model"], r["severity"]) for r in new] == [
        ("drift", "drifty", "warning")]
    assert new[0]["evidence"]["drifted_features"] == ["amount"]
    url = new[0]["evidence"]["report"]
    assert url.startswith("https://reports.example.com/iw/drift/drifty/")
    assert url.endswith("/index.html") and url in new[0]["summary"]


def test_a_period_without_data_is_one_line_and_no_files(seeded: tuple[str, Path],
                                                        tmp_path: Path) -> None:
    ctx = _ctx(seeded[0], tmp_path)
    empty = report_job(ctx, NOW, since=NOW + DAY, until=NOW + 2 * DAY)
    assert empty.count("\n") == 0 and "nothing to report" in empty
    short = report_job(ctx, NOW, model="steady", since=NOW - 1800, until=NOW)
    assert short.count("\n") == 0 and "too little data" in short
    assert not list(tmp_path.glob("drift/*/*"))


def test_report_command_writes_the_same_report(seeded: tuple[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"store": {"url": seeded[0]}}))
    assert main(["report", "drift", "--config", str(cfg), "--model", "drifty",
                 "--since", "2026-01-05", "--until", "2026-01-12T08:00",
                 "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "1 of 5 input features drifted: amount" in out
    summary = next((tmp_path / "r").glob("drift/drifty/*/summary.json"))
    assert json.loads(summary.read_text())["drifted_features"] == ["amount"]


def test_a_stored_reference_is_used_when_there_is_one(seeded: tuple[str, Path],
                                                      tmp_path: Path) -> None:
    from detectors.reference import CONFIDENCE, PREDICTION, build_reference
    from monitor.reference import save_reference

    url = f"sqlite:///{tmp_path / 'copy.db'}"
    (tmp_path / "copy.db").write_bytes(Path(seeded[0].removeprefix("sqlite:///")).read_bytes())
    rows = [e["features"] | {PREDICTION: e["prediction"], CONFIDENCE: e["confidence"]}
            for e in stream(model="drifty", version="3.2.0", start=MONDAY - 30 * DAY, hours=48,
                            per_hour=60, seed=99)]
    ctx = _ctx(url, tmp_path / "r")
    save_reference(ctx.store, build_reference(rows, model="drifty", source="file:train.csv"))
    report_job(ctx, NOW, model="drifty", since=MONDAY, until=NOW)
    summary = json.loads(next((tmp_path / "r").glob("drift/drifty/*/summary.json")).read_text())
    assert summary["reference"]["source"] == "stored:file:train.csv"
    assert summary["since"] == MONDAY  # the whole period: no early traffic set aside
    assert summary["drifted_features"] == ["amount"]
    assert summary["top_features"][0]["drifting_since"].startswith("2026-01-09")
    assert summary["evidently"]["rows"]["reference"] == 500  # the reference's own sample
