"""The demo is the product's front door: it must catch what it stages."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from monitor.demo import run_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_catches_the_flooder_the_attacker_and_the_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_demo(tmp_path, minutes=24, wall_seconds=15) == 0
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
