"""The demo is the product's front door: it must catch what it stages."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from monitor.demo import MIN_MINUTES, run_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_catches_the_flooder_the_attacker_and_the_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_demo(tmp_path, minutes=MIN_MINUTES, wall_seconds=15) == 0  # the shortest story
    err = capsys.readouterr().err
    assert "[x] flooder key-flood-7" in err
    assert "[x] extraction attacker key-17" in err
    assert "[x] drift on fraud-scorer" in err
    assert "benign clients alerted: 0" in err
    assert "%] event time +" in err  # a progress line, not a silent wait
    assert "drift report fraud-scorer: " in err  # the report written at the end
    assert (tmp_path / "reports" / "index.html").exists()
    records = [msgspec.json.decode(line)
               for line in (tmp_path / "alerts.jsonl").read_bytes().splitlines()]
    assert {r["kind"] for r in records} >= {"flooding", "extraction", "drift"}


def test_a_story_too_short_to_stage_is_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_demo(tmp_path / "demo", minutes=4, wall_seconds=15) == 2
    assert f"--minutes must be at least {MIN_MINUTES:g} (got 4)" in capsys.readouterr().err
    assert run_demo(tmp_path / "demo", minutes=30, wall_seconds=0) == 2
    assert "--wall-seconds must be more than 0 (got 0)" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()  # refused before starting anything


def test_a_work_directory_it_cannot_create_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert run_demo(blocker / "demo", minutes=30, wall_seconds=15) == 2
    assert capsys.readouterr().err.strip() == (
        f"inferwatch demo: cannot use {blocker / 'demo'} as the work directory (Not a directory); "
        "give another with --workdir")
