"""Drift references: built from CSV / Parquet / archived events by the command line,
stored (SQLite and PostgreSQL), found by model and version, used by the pipeline
from the first window; automatic references are announced in the log and stored."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest

from detectors.drift import DistributionDrift
from monitor.cli import main
from monitor.config import build_config
from monitor.pipeline import Pipeline, Record
from monitor.reference import (
    apply_references,
    list_references,
    load_reference,
    load_references,
    save_new_references,
    save_reference,
)
from monitor.reference_file import reference_from_file
from monitor.store import Store

T0 = 1_767_225_600.0


def _table(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "amount": rng.normal(shift, 1, n), "age": rng.integers(18, 90, n).astype(float),
        "country": rng.choice(["fr", "de", "es"], n), "label": rng.integers(0, 2, n),
        "pred": rng.choice(["yes", "no"], n),
    })


def _events(n: int, seed: int, shift: float = 0.0, t0: float = T0) -> list[dict]:
    frame = _table(n, seed, shift)
    return [{"ts": t0 + i * 0.05, "model": "m", "model_version": "2", "client_id": f"c{i % 7}",
             "features": {"amount": float(r.amount), "age": float(r.age), "country": r.country},
             "prediction": r.pred}
            for i, r in enumerate(frame.itertuples())]


def test_references_round_trip_through_the_store_newest_first(store_url: str) -> None:
    store = Store(store_url)
    store.migrate()
    rows = _table(500, 1).to_dict(orient="records")
    from detectors.reference import build_reference

    old = build_reference(rows, model="m", source="file:old.csv")
    new = build_reference(rows[:300], model="m", source="file:new.csv")
    v2 = build_reference(rows[:200], model="m", model_version="2", source="file:v2.csv")
    for ref in (old, new, v2):
        save_reference(store, ref)
    assert load_reference(store, "m", "1").source == "file:new.csv"  # type: ignore[union-attr]
    got = load_reference(store, "m", "2")
    assert got is not None and got.source == "file:v2.csv"
    assert got.layout == v2.layout and got.counts == v2.counts
    assert load_reference(store, "other") is None
    assert [r["source"] for r in list_references(store)] == [
        "file:v2.csv", "file:new.csv", "file:old.csv"]
    refs = load_references(store)
    assert len(refs) == 2 and refs.get("m", "9").source == "file:new.csv"  # type: ignore[union-attr]
    store.close()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_reference_build_from_a_table_file_stores_it(tmp_path: Path, fmt: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = _table(2000, 2)
    path = tmp_path / f"train.{fmt}"
    data.to_csv(path, index=False) if fmt == "csv" else data.to_parquet(path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"store: {{url: 'sqlite:///{tmp_path / 's.db'}'}}\n")
    assert main(["reference", "build", str(path), "--config", str(cfg), "--model", "m",
                 "--prediction-column", "pred", "--drop", "label"]) == 0
    assert "2,000 rows, 2 numeric and 2 categorical columns" in capsys.readouterr().out
    ref = load_reference(Store(f"sqlite:///{tmp_path / 's.db'}"), "m", "anything")
    assert ref is not None and ref.source == f"file:train.{fmt}" and ref.n == 2000
    assert ref.layout.numeric == ("age", "amount")
    assert ref.layout.categorical == ("@prediction", "country")
    assert main(["reference", "list", "--config", str(cfg)]) == 0
    assert f"file:train.{fmt}" in capsys.readouterr().out


def test_a_pinned_period_of_archived_events_becomes_the_reference(tmp_path: Path) -> None:
    events = _events(3000, 3)
    path = tmp_path / "archive.jsonl"
    path.write_bytes(b"".join(msgspec.json.encode(e) + b"\n" for e in events))
    ref = reference_from_file(path, model="m", model_version="2", since=T0 + 10,
                              until=T0 + 60).reference
    assert ref.n == 1000 and ref.start == T0 + 10 and ref.source.startswith("pinned:")
    assert "@prediction" in ref.layout.categorical
    with pytest.raises(ValueError, match="no rows"):
        reference_from_file(path, model="nope")
    packed = tmp_path / "archive.jsonl.gz"  # archives are often compressed
    packed.write_bytes(gzip.compress(path.read_bytes()))
    again = reference_from_file(packed, model="m", model_version="2", since=T0 + 10,
                                until=T0 + 60).reference
    assert again.n == ref.n and again.counts == ref.counts
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:2]) + b"{oops\n")
    with pytest.raises(ValueError, match=r"broken\.jsonl:3: not JSON \(Expecting property name"):
        reference_from_file(broken, model="m")


def _config(**drift: object) -> object:
    return build_config({"detectors": {"drift": {"bucket_s": 5, "window_events": 300,
                                                 "min_events": 100, "reference_events": 1000,
                                                 **drift}}}, env={})


def _feed(pipeline: Pipeline, events: list[dict], offset: int = 0) -> list[dict]:
    out = []
    for i in range(offset, offset + len(events), 500):
        recs = [Record(j, msgspec.json.encode(e))
                for j, e in enumerate(events[i - offset:i - offset + 500], i)]
        out += pipeline.process(("replay", 0), recs).alerts
        out += pipeline.advance()
    return out


def test_a_stored_reference_is_used_from_the_first_window(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    train = _table(5000, 4).rename(columns={"pred": "@prediction"}).drop(columns=["label"])
    from detectors.reference import build_reference

    save_reference(store, build_reference(train.to_dict(orient="records"), model="m",
                                          source="file:train.csv"))
    shifted = _events(3000, 5, shift=0.8)  # production differs from training from the start
    pipeline = Pipeline(_config())  # type: ignore[arg-type]
    apply_references(pipeline.models.detectors, load_references(store))
    alerts = [a for a in _feed(pipeline, shifted) if a["kind"] == "drift"]
    assert alerts and alerts[0]["evidence"]["reference"]["source"] == "file:train.csv"
    assert alerts[0]["evidence"]["drifted"][0]["feature"] == "amount"
    assert pipeline.new_references == []
    # without it, the shifted traffic is its own (automatic) reference: no drift
    auto = Pipeline(_config())  # type: ignore[arg-type]
    assert not [a for a in _feed(auto, shifted) if a["kind"] == "drift"]


def test_an_automatic_reference_is_announced_and_stored(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pipeline = Pipeline(_config())  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="monitor.reference"):
        _feed(pipeline, _events(2000, 6))
    assert any("m@2: drift reference built from the first" in r.getMessage()
               for r in caplog.records)
    assert len(pipeline.new_references) == 1
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    save_new_references(store, pipeline.new_references)
    assert pipeline.new_references == []
    ref = load_reference(store, "m", "2")
    assert ref is not None and ref.source == "auto" and ref.n >= 1000
    assert len(load_references(store)) == 0, "automatic references are for reports only"


def test_replay_uses_the_stored_references_when_asked(tmp_path: Path) -> None:
    train = _table(5000, 7).drop(columns=["label"])
    train.to_csv(tmp_path / "train.csv", index=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"store: {{url: 'sqlite:///{tmp_path / 's.db'}'}}\n"
                   "alerts: {console: {enabled: false}}\n"
                   "detectors: {drift: {bucket_s: 5, window_events: 300, min_events: 100, "
                   "reference_events: 1000}}\n")
    assert main(["reference", "build", str(tmp_path / "train.csv"), "--config", str(cfg),
                 "--model", "m", "--prediction-column", "pred"]) == 0
    archive = tmp_path / "events.jsonl"
    archive.write_bytes(b"".join(msgspec.json.encode(e) + b"\n"
                                 for e in _events(3000, 8, shift=0.8)))

    def drift_alerts(*flags: str) -> list[dict]:
        out = tmp_path / "alerts.jsonl"
        assert main(["replay", str(archive), "--config", str(cfg), "--quiet",
                     "--alerts-out", str(out), *flags]) == 0
        lines = out.read_bytes().splitlines() if out.exists() else []
        recs = [msgspec.json.decode(line) for line in lines]
        return [r for r in recs if r["kind"] == "drift"]

    stored = drift_alerts("--stored-references")
    assert stored and stored[0]["evidence"]["reference"]["source"] == "file:train.csv"
    assert drift_alerts() == []  # its own first stretch as the reference: nothing moved


def test_a_stored_reference_given_to_a_version_mid_warm_up_replaces_its_layout(
        tmp_path: Path) -> None:
    """A version past its first 5,000 events (its automatic layout built, its
    reference still counting) is checkpointed with an open bucket folded on that
    layout; a reference stored meanwhile, with other cells, is given to it at the
    restart. The version is then tested against the stored reference alone: the
    restart does not crash on counts of two layouts (it did: a crash loop), stationary traffic stays quiet
    and a shift fires."""
    from detectors.reference import build_reference
    from monitor.checkpoint import Checkpointer
    from monitor.reference import drift_detectors

    def drift(pipeline: Pipeline) -> DistributionDrift:
        keyed, = drift_detectors(pipeline.models.detectors)
        det, = (slot.detector for slot in keyed.slots.values())
        assert isinstance(det, DistributionDrift)
        return det

    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    config = _config(reference_events=20_000)
    first = Pipeline(config)  # type: ignore[arg-type]
    before = _events(6000, 11) + _events(120, 12, t0=T0 + 300.0)[:120]
    assert not _feed(first, before)
    det = drift(first)
    assert det.reference is None and det._layout is not None  # mid warm-up
    assert any(b.rows for b in det._buckets.open.values())
    Checkpointer(store, first, group="g", producer="a").save()
    train = _table(5000, 13).drop(columns=["label", "pred", "age"])  # fewer cells
    save_reference(store, build_reference(train.to_dict(orient="records"), model="m",
                                          source="file:train.csv"))

    second = Pipeline(config)  # type: ignore[arg-type]
    Checkpointer(store, second, group="g", producer="a").restore([("replay", 0)])
    quiet = _feed(second, _events(3000, 14, t0=T0 + 306.0), offset=len(before))
    det = drift(second)
    assert det.reference is not None and det.reference.source == "file:train.csv"
    assert det._windows_tested >= 5 and not [a for a in quiet if a["kind"] == "drift"]
    shifted = _feed(second, _events(3000, 15, shift=0.8, t0=T0 + 456.0),
                    offset=len(before) + 3000)
    drift = [a for a in shifted if a["kind"] == "drift"]
    assert drift and drift[0]["evidence"]["drifted"][0]["feature"] == "amount"
    store.close()
