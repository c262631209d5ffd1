"""Model-version comparison on stored summaries of seeded version pairs."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from monitor.cli import main
from monitor.compare import _firing, list_comparisons, run_comparisons, versions_job
from monitor.scheduler import JobContext, JobService
from monitor.store import Store
from tests.jobs.seeded import DAY, MONDAY, config, ingest, stream


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Three models: "same" (2.0 scores the same requests as 1.0, shadow traffic),
    "slow" (2.0 is slower and less confident), "tiny" (2.0 has a handful of events)."""
    tmp = tmp_path_factory.mktemp("compare")
    url = f"sqlite:///{tmp / 'store.db'}"
    cfg = config(url, str(tmp))
    t0 = MONDAY + 2 * DAY
    events = []
    for model in ("same", "slow", "tiny"):
        events += stream(model=model, version="1.0", start=t0, hours=24, per_hour=60, seed=5)
    events += stream(model="same", version="2.0", start=t0, hours=24, per_hour=60,
                     seed=5)  # the same requests, scored alike (shadow traffic)
    events += stream(model="slow", version="2.0", start=t0 + 3600, hours=20, per_hour=60,
                     seed=6, latency_scale=6.0, confidence_bias=-0.1, rid_prefix="s")
    events += stream(model="tiny", version="2.0", start=t0 + 3600, hours=1, per_hour=20, seed=7)
    ingest(cfg, events)
    return url, str(tmp)


def _ctx(url: str, tmp: str, **jobs: object) -> JobContext:
    cfg = config(url, tmp, **jobs)
    store = Store(url)
    store.migrate()
    return JobContext(cfg, store, "test")


def test_comparison_verdicts_on_seeded_version_pairs(seeded: tuple[str, str]) -> None:
    ctx = _ctx(*seeded)
    now = MONDAY + 3 * DAY + 3600
    results = {r["model"]: r for r in run_comparisons(ctx, now, post=False)}
    assert set(results) == {"same", "slow", "tiny"}

    same = results["same"]
    assert (same["baseline"], same["candidate"], same["verdict"]) == ("1.0", "2.0",
                                                                       "no_difference")
    assert same["numbers"]["shadow"]["agreement"] == 1.0
    assert same["numbers"]["shadow"]["shared_requests"] >= 100

    slow = results["slow"]
    assert slow["verdict"] == "worse"
    assert any("latency p95" in r for r in slow["reasons"])
    assert any("mean confidence" in r for r in slow["reasons"])
    lat = slow["numbers"]["latency_ms"]
    assert lat["2.0"]["p95"] > 1.5 * lat["1.0"]["p95"]

    tiny = results["tiny"]
    assert tiny["verdict"] == "unknown"
    assert "fewer than 200" in tiny["reasons"][0]

    stored = list_comparisons(ctx.store)
    assert {(r["model"], r["verdict"]) for r in stored} == {
        ("same", "no_difference"), ("slow", "worse"), ("tiny", "unknown")}


def test_worse_verdict_is_posted_once_as_a_version_regression_alert(
        seeded: tuple[str, str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'copy.db'}"
    Path(tmp_path / "copy.db").write_bytes(Path(seeded[0].removeprefix("sqlite:///"))
                                           .read_bytes())
    ctx = _ctx(url, str(tmp_path))
    now = MONDAY + 3 * DAY + 3600
    run_comparisons(ctx, now, model="slow")
    run_comparisons(ctx, now + 60, model="slow")
    rows = [msgspec.json.decode(r.record) for r in ctx.store.outbox_after("x", limit=100)]
    assert [(r["kind"], r["status"], r["count"]) for r in rows] == [
        ("version_regression", "firing", 1), ("version_regression", "firing", 2)]
    assert rows[0]["fingerprint"] == rows[1]["fingerprint"]  # one alert, updated
    assert "WORSE" in rows[0]["summary"] and rows[0]["model_version"] == "2.0"
    assert rows[0]["evidence"]["numbers"]["latency_ms"]["2.0"]["p95"] > 0


def test_unannounced_version_alerts_once(seeded: tuple[str, str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'copy.db'}"
    Path(tmp_path / "copy.db").write_bytes(Path(seeded[0].removeprefix("sqlite:///"))
                                           .read_bytes())
    ctx = _ctx(url, str(tmp_path), compare={"released_versions": {"same": ["1.0"],
                                                                  "slow": ["1.0", "2.0"]}})
    service = JobService(ctx.config, ctx.store, instance_id="test",
                         clock=lambda: MONDAY + 3 * DAY)
    assert "versions" in service.jobs
    first = service.run_job("versions")
    again = service.run_job("versions")
    assert first.ok and first.message == "versions: unannounced same 2.0"
    assert again.message == "versions: no unannounced model version"
    rows = [msgspec.json.decode(r.record) for r in ctx.store.outbox_after("x", limit=100)]
    assert len(rows) == 1
    assert rows[0]["kind"] == "version_regression" and rows[0]["subject"] == {
        "model_version": "2.0"}
    assert "Unannounced version 2.0 of same" in rows[0]["summary"]


def test_compare_command_prints_and_lists_verdicts(seeded: tuple[str, str], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'copy.db'}"
    Path(tmp_path / "copy.db").write_bytes(Path(seeded[0].removeprefix("sqlite:///"))
                                           .read_bytes())
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"store": {"url": url}}))
    assert main(["compare", "--config", str(cfg), "--model", "slow", "--baseline", "1.0",
                 "--candidate", "2.0", "--since", "2026-01-07", "--until", "2026-01-08T01:00"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("worse") and "slow 2.0 looks WORSE than 1.0" in out
    assert main(["compare", "--config", str(cfg), "--since", "2026-01-01",
                 "--until", "2026-01-02"]) == 0
    assert "no model had two versions live" in capsys.readouterr().out
    assert main(["compare", "--config", str(cfg), "--list"]) == 0
    assert "worse" in capsys.readouterr().out


def test_the_drift_report_says_whether_the_newest_version_is_worse(
        seeded: tuple[str, str], tmp_path: Path) -> None:
    from monitor.drift_report import build_report

    url, _ = seeded
    ctx = _ctx(url, str(tmp_path), drift_report={"reference_span_s": 4 * 3600})
    t0 = MONDAY + 2 * DAY
    summary = build_report(ctx.store, ctx.config, "slow", t0, t0 + DAY + 3600, now=t0 + 2 * DAY,
                           out_dir=tmp_path)
    comparison = summary["comparison"]
    assert (comparison["baseline"], comparison["candidate"], comparison["verdict"]) == (
        "1.0", "2.0", "worse")
    assert summary["headline"].endswith("2.0 vs 1.0: worse")
    assert "looks WORSE than 1.0" in (tmp_path / Path(summary["path"]).relative_to(tmp_path)
                                      ).read_text()


def test_the_job_commands_mask_control_characters_in_model_names(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model name is the producer's string: printed raw, an escape sequence in it
    would drive the reader's terminal (clear it, retitle it, hide lines)."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    evil = "scorer\x1b[2J\x1b]0;owned\x07\x9b2J\u202e"
    t0 = MONDAY + 2 * DAY
    ingest(config(url, str(tmp_path)),
           [*stream(model=evil, version="1.0", start=t0, hours=6, per_hour=60, seed=5),
            *stream(model=evil, version="2.0", start=t0, hours=6, per_hour=60, seed=6)])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"store": {"url": url},
                               "jobs": {"drift_report": {"evidently": False}}}))
    span = ["--since", "2026-01-07", "--until", "2026-01-08"]
    assert main(["compare", "--config", str(cfg), *span]) == 0
    assert main(["compare", "--config", str(cfg), "--list"]) == 0
    assert main(["report", "drift", "--config", str(cfg), *span,
                 "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert not {"\x1b", "\x07", "\x9b", "\u202e"} & set(out)
    assert out.count("scorer?[2J?]0;owned??2J?") == 3, out  # the verdict, the list, the report


def test_the_last_24_hours_keep_their_first_hour_when_the_cron_fires_late(
        tmp_path: Path) -> None:
    """Cron fires a little after the hour; the hour-long bucket the period starts in
    is part of the period, not dropped (which compared 23 h, and reported 7 d - 1 h)."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    cfg = config(url, str(tmp_path))
    events = [e for v, seed in (("1", 1), ("2", 2))
              for e in stream(model="m", version=v, start=MONDAY, hours=48, per_hour=20,
                              seed=seed, rid_prefix=v)]
    ingest(cfg, events)
    store = Store(url)
    store.migrate()
    on_time = MONDAY + 2 * DAY
    last_day = sum(1 for e in events if e["ts"] >= on_time - DAY and e["model_version"] == "1")
    for now in (on_time, on_time + 0.05, on_time + 1800):
        ctx = JobContext(cfg, store, "test", clock=lambda now=now: now)
        counted = run_comparisons(ctx, now, post=False)[0]["numbers"]["events"]["1"]
        assert last_day <= counted <= last_day + 20, now - on_time  # + at most one hour's


def _outbox(ctx: JobContext) -> list[dict[str, object]]:
    return [msgspec.json.decode(r.record) for r in ctx.store.outbox_after("x", limit=100)]


def test_an_unannounced_version_resolves_once_it_is_released(
        seeded: tuple[str, str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'copy.db'}"
    Path(tmp_path / "copy.db").write_bytes(Path(seeded[0].removeprefix("sqlite:///"))
                                           .read_bytes())
    now = MONDAY + 3 * DAY
    before = _ctx(url, str(tmp_path), compare={"released_versions": {"same": ["1.0"]}})
    assert versions_job(before, now) == "versions: unannounced same 2.0"
    after = _ctx(url, str(tmp_path), compare={"released_versions": {"same": ["1.0", "2.0"]}})
    assert versions_job(after, now + 600) == "versions: no unannounced model version"
    assert versions_job(after, now + 1200) == "versions: no unannounced model version"
    rows = _outbox(after)
    assert [(r["detector"], r["status"]) for r in rows] == [
        ("jobs.unannounced_version", "firing"), ("jobs.unannounced_version", "resolved")]
    assert rows[1]["summary"] == "Version 2.0 of same is now released."


def test_a_regression_resolves_when_a_newer_version_is_compared_instead(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    t0 = MONDAY + 2 * DAY
    events = [*stream(model="m", version="1", start=t0, hours=26, per_hour=60, seed=1),
              *stream(model="m", version="2", start=t0 + 3600, hours=55, per_hour=60, seed=2,
                      latency_scale=6.0, confidence_bias=-0.1, rid_prefix="b"),
              *stream(model="m", version="3", start=t0 + 30 * 3600, hours=26, per_hour=60,
                      seed=3, latency_scale=6.0, confidence_bias=-0.1, rid_prefix="c")]
    ingest(config(url, str(tmp_path)), events)
    ctx = _ctx(url, str(tmp_path))
    first = run_comparisons(ctx, t0 + 26 * 3600)
    assert [(r["baseline"], r["candidate"], r["verdict"]) for r in first] == [("1", "2", "worse")]
    run_comparisons(ctx, t0 + 56 * 3600, pairs=[("m", "2", "3")])  # by hand: supersedes nothing
    assert _firing(ctx, "m", {"baseline": "1", "candidate": "2"})
    later = run_comparisons(ctx, t0 + 56 * 3600)  # version 1 is gone, 3 has shipped
    assert [(r["baseline"], r["candidate"]) for r in later] == [("2", "3")]
    regressions = [(r["subject"], r["status"]) for r in _outbox(ctx)
                   if r["subject"] == {"baseline": "1", "candidate": "2"}]
    assert regressions == [({"baseline": "1", "candidate": "2"}, "firing"),
                           ({"baseline": "1", "candidate": "2"}, "resolved")]
