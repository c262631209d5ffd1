"""``inferwatch replay`` as a user runs it: what it says about bad records and alerts,
and where its alert file goes."""

from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path

import pytest

from monitor.cli import main

T0 = 1_767_225_600


def _event(i: int, client: str = "c1") -> bytes:
    return json.dumps({"ts": T0 + i * 0.05, "model": "m", "model_version": "1",
                       "client_id": client, "features": {"a": 1.0}}).encode()


def test_bad_records_are_named_by_line_and_counted_by_reason(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [_event(0), b"not json", b'{"ts": 1, "model": "m"}', _event(1),
             b'{"ts": "yesterday", "model": "m", "model_version": "1"}',
             b'{"ts": 1, "model": "m\\u001b[2J", "model_version": []}', b"[1, 2]",
             b"{oops", _event(2)]
    archive = tmp_path / "events.jsonl"
    archive.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["replay", str(archive), "--quiet"]) == 0
    err = capsys.readouterr().err
    shown = [line for line in err.splitlines() if line.startswith("replay: line ")]
    # the first five, with their line numbers (from 1) and reasons; the rest only counted
    assert [line.split(":")[1:3] for line in shown] == [
        [" line 2", " not_json"], [" line 3", " missing_field"], [" line 5", " bad_timestamp"],
        [" line 6", " wrong_type"], [" line 7", " not_object"]]
    assert shown[-1].endswith("(further bad records are only counted)")
    assert "\x1b" not in err
    done = [line for line in err.splitlines() if line.startswith("replay done:")]
    assert done == [f"replay done: {archive}: 6 bad (not_json 2, missing_field 1, "
                    "bad_timestamp 1, wrong_type 1, not_object 1); 0 alert record(s), "
                    "0 alert(s) still firing at the end"]
    # the final count is reported once
    assert err.count("replay: 9 records read, 6 bad") == 1


def test_the_alert_file_holds_the_alert_records_counted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "events.jsonl"
    # 700 requests in 35 s from one client: over the default budget of 600 a minute
    archive.write_bytes(b"\n".join(_event(i, "flooder") for i in range(700)) + b"\n")
    out = tmp_path / "alerts" / "out.jsonl"
    out.parent.mkdir()
    out.write_text("a stale line from an earlier run\n")
    assert main(["replay", str(archive), "--quiet", "--alerts-out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["detector"], r["status"], r["subject"]) for r in records] == [
        ("flooding.request_rate", "firing", {"client_id": "flooder"})]
    assert "0 bad; 1 alert record(s), 1 alert(s) still firing at the end" in \
        capsys.readouterr().err


def test_the_alert_file_exists_when_nothing_alerts(tmp_path: Path) -> None:
    archive = tmp_path / "events.jsonl"
    archive.write_bytes(_event(0) + b"\n")
    out = tmp_path / "new" / "dir" / "out.jsonl"
    assert main(["replay", str(archive), "--quiet", "--alerts-out", str(out)]) == 0
    assert out.read_bytes() == b""


def test_an_alert_file_that_cannot_be_written_stops_before_the_replay(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "events.jsonl"
    archive.write_bytes(_event(0) + b"\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["replay", str(archive), "--alerts-out", str(blocker / "out.jsonl")]) == 2
    err = capsys.readouterr().err
    assert f"inferwatch: cannot write --alerts-out {blocker / 'out.jsonl'}" in err
    assert "records read" not in err


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
def test_a_dash_replays_standard_input_as_it_would_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        packed: bool) -> None:
    """``inferwatch replay -`` reads the events from standard input (it answered
    "no such file: -"): the same bad-record lines, alert records and final report
    as for the file, gzip or not."""
    lines = [_event(i, "flooder") for i in range(700)]
    lines[3:3] = [b"not json", b"[1, 2]"]
    data = b"\n".join(lines) + b"\n"
    archive = tmp_path / "events.jsonl"
    archive.write_bytes(gzip.compress(data) if packed else data)
    from_file, from_stdin = tmp_path / "file.jsonl", tmp_path / "stdin.jsonl"
    assert main(["replay", str(archive), "--quiet", "--alerts-out", str(from_file)]) == 0
    file_err = capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(archive.read_bytes())))
    assert main(["replay", "-", "--quiet", "--alerts-out", str(from_stdin)]) == 0
    err = capsys.readouterr().err
    assert err == file_err.replace(str(archive), "standard input")
    assert [line.split(":")[1:3] for line in err.splitlines()
            if line.startswith("replay: line ")] == [
        [" line 4", " not_json"], [" line 5", " not_object"]]
    assert ("replay done: standard input: 2 bad (not_json 1, not_object 1); 1 alert record(s), "
            "1 alert(s) still firing at the end") in err
    assert from_stdin.read_bytes() == from_file.read_bytes() != b""
