"""The replay reader: a JSONL file as records, whatever its line endings and however
its lines fall across read chunks."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor import replay
from monitor.pipeline import Record


def _reference(data: bytes) -> list[Record]:
    """Line number as offset; line endings stripped; blank lines skipped."""
    return [Record(i, line.rstrip(b"\r\n")) for i, line in enumerate(data.split(b"\n"))
            if line.strip()]


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 22])
def test_records_and_offsets_do_not_depend_on_chunks_or_batches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    data = (b'{"a": 1}\n\n{"b": 2}\r\n   \n\t\r\n{"c": 3}\r\r\n' + b'{"d": "' + b"x" * 100
            + b'"}\n\n' + b'{"e": 5}')  # blank, CRLF, whitespace-only, no final newline
    path = tmp_path / "events.jsonl"
    path.write_bytes(data)
    monkeypatch.setattr(replay, "CHUNK_BYTES", chunk)
    for size in (1, 2, 1000):
        batches = list(replay.read_batches(path, size))
        assert all(0 < len(b) <= size for b in batches)
        assert [r for b in batches for r in b] == _reference(data)
    assert [r.offset for r in _reference(data)] == [0, 2, 5, 6, 8]


def test_an_empty_file_has_no_batches(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\n\n")
    assert list(replay.read_batches(path, 10)) == []
