"""``inferwatch reference build`` on files larger than memory wants: read as a stream,
a uniform sample of at most ``--max-rows`` rows kept."""

from __future__ import annotations

import json
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detectors.reference import build_reference
from monitor import reference_file
from monitor.cli import main
from monitor.reference import load_reference
from monitor.reference_file import reference_from_file
from monitor.store import Store


def _write(path: Path, n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"id": np.arange(n), "amount": rng.exponential(50.0, n),
                          "score": rng.normal(0, 1, n), "country": rng.choice(["fr", "de"], n),
                          "label": rng.integers(0, 2, n)})
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return frame


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_file_with_more_rows_than_max_rows_gives_a_uniform_sample(
        tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"train{suffix}"
    frame = _write(path, 60_000)
    built = reference_from_file(path, model="m", drop_columns=["label"], max_rows=6_000)
    ref = built.reference
    assert (ref.n, built.rows_matching) == (6_000, 60_000)
    # the sample's bins sit where the whole file's deciles are: drawn from all of it,
    # not from its first rows (whose ids would all be below 6,000)
    whole = build_reference(frame.drop(columns="label").to_dict("records"), model="m")
    assert ref.layout.numeric == whole.layout.numeric
    for name, got_edges, want_edges in zip(ref.layout.numeric, ref.layout.edges,
                                           whole.layout.edges, strict=True):
        got, want = np.asarray(got_edges), np.asarray(want_edges)
        spread = want[-1] - want[0]
        assert np.max(np.abs(got[1:-1] - want[1:-1])) < 0.05 * spread, name
    # the same file, the same reference
    again = reference_from_file(path, model="m", drop_columns=["label"], max_rows=6_000)
    assert again.reference.counts == ref.counts


def test_a_file_within_max_rows_is_taken_whole(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    _write(path, 3_000)
    built = reference_from_file(path, model="m", max_rows=3_000)
    frame = pd.read_csv(path)  # the file read whole, as the command did before streaming
    whole = build_reference(frame.astype(object).to_dict("records"), model="m",
                            source="file:train.csv")
    assert built.rows_matching == built.reference.n == 3_000
    assert built.reference.layout == whole.layout and built.reference.counts == whole.counts


def test_memory_is_bounded_by_the_chunk_and_the_sample_not_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "train.csv"
    _write(path, 200_000)
    monkeypatch.setattr(reference_file, "CHUNK_ROWS", 10_000)

    def peak(max_rows: int) -> int:
        tracemalloc.start()
        try:
            reference_from_file(path, model="m", max_rows=max_rows)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    everything, sampled = peak(200_000), peak(2_000)
    # every row as a dict at once, against one chunk of them and the sample
    assert sampled < everything / 4, (sampled, everything)


def test_the_command_takes_drop_before_the_file_and_says_it_sampled(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "train.csv"
    _write(path, 5_000)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"store: {{url: 'sqlite:///{tmp_path / 's.db'}'}}\n")
    monkeypatch.setattr(reference_file, "PROGRESS_EVERY_S", 0.0)
    assert main(["reference", "build", "--config", str(cfg), "--model", "m",
                 "--drop", "label,id", "--drop", "country", "--max-rows", "1000",
                 str(path)]) == 0
    out, err = capsys.readouterr()
    assert "1,000 rows (a uniform sample of 5,000: --max-rows), 2 numeric and 0 categorical" in out
    assert f"reference build: 5,000 rows read from {path}" in err
    ref = load_reference(Store(f"sqlite:///{tmp_path / 's.db'}"), "m")
    assert ref is not None and ref.layout.numeric == ("amount", "score")


def test_max_rows_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["reference", "build", "--model", "m", "--max-rows", "0", str(tmp_path / "x.csv")])
    assert exit_.value.code == 2
    assert "--max-rows: must be at least 1, not 0" in capsys.readouterr().err


def test_a_jsonl_line_that_is_not_an_object_is_named(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1.0}\n\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"rows\.jsonl:3: not a JSON object"):
        reference_from_file(path, model="m")


def test_a_pinned_period_reads_times_without_an_offset_as_utc_as_the_daemon_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")  # a machine not on UTC
    time.tzset()
    try:
        path = tmp_path / "archive.jsonl"
        path.write_text("".join(
            json.dumps({"ts": f"2026-01-01T00:00:{s:02d}", "model": "m", "model_version": "1",
                        "features": {"a": float(s)}}) + "\n" for s in range(60)))
        t0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
        built = reference_from_file(path, model="m", since=t0 + 10, until=t0 + 40)
        assert built.rows_matching == 30
        assert (built.reference.start, built.reference.end) == (t0 + 10, t0 + 39)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_an_archive_whose_first_event_has_no_features_is_still_an_archive(
        tmp_path: Path) -> None:
    """The event contract makes features optional: an archive starting with such an
    event was read as a table of rows, mixing every model and period into the
    reference and taking ts, model and features for feature columns."""
    path = tmp_path / "archive.jsonl"
    lines = [{"ts": 100.0, "model": "other", "model_version": "1", "prediction": "a"}]
    lines += [{"ts": 1000.0 + i, "model": "fraud" if i % 2 else "other", "model_version": "1",
               "features": {"amount": float(i)}, "prediction": "a", "confidence": 0.9}
              for i in range(1000)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    built = reference_from_file(path, model="fraud", since=1500.0, until=1600.0)
    assert built.rows_matching == 50
    assert built.reference.layout.features == ("@confidence", "amount", "@prediction")


def test_a_period_is_refused_for_a_table_of_rows(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    _write(path, 100)
    with pytest.raises(ValueError, match="--since/--until pick a period of archived"):
        reference_from_file(path, model="m", since=0.0)
