"""The replay reader: a JSONL file (plain or gzip) as records, whatever its line
endings and however its lines fall across read chunks."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

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


def test_a_gzip_archive_gives_the_records_of_the_plain_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"".join(b'{"n": %d}\n' % i for i in range(5000)) + b"\n\r\n" + b'{"last": 1}'
    plain, packed = tmp_path / "events.jsonl", tmp_path / "events.jsonl.gz"
    plain.write_bytes(data)
    packed.write_bytes(gzip.compress(data))
    monkeypatch.setattr(replay, "CHUNK_BYTES", 4096)
    assert [r for b in replay.read_batches(packed, 700) for r in b] == _reference(data)
    assert list(replay.read_batches(packed, 700)) == list(replay.read_batches(plain, 700))


class _Trickle(io.RawIOBase):
    """A pipe that hands over at most ``step`` bytes a read."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step = data, step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.step, len(self.data))
        buffer[:n] = self.data[:n]
        self.data = self.data[n:]
        return n


@pytest.mark.parametrize("step", [1, 3, 1 << 20])
def test_a_stream_gives_the_records_of_the_file_plain_or_gzip(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Standard input (``replay -``) cannot seek back after its gzip magic is read,
    and a pipe may hand over a byte at a time: the records are still the file's,
    and the stream is left open."""
    data = b"".join(b'{"n": %d}\n' % i for i in range(3000)) + b"\r\n\n" + b'{"last": 1}'
    plain = tmp_path / "events.jsonl"
    plain.write_bytes(data)
    monkeypatch.setattr(replay, "CHUNK_BYTES", 4096)
    expected = list(replay.read_batches(plain, 700))
    for raw in (data, gzip.compress(data), b"", b"{"):
        stream = _Trickle(raw, step)
        batches = list(replay.read_batches(stream, 700))  # type: ignore[arg-type]
        assert batches == (expected if len(raw) > 1 else
                           [[Record(0, raw)]] if raw else [])
        assert not stream.closed


def test_a_truncated_gzip_archive_is_reported_not_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from monitor.cli import main

    data = b"".join(b'{"ts": 1767225600, "model": "m", "model_version": "1", "n": %d}\n' % i
                    for i in range(20000))
    packed = tmp_path / "events.jsonl.gz"
    packed.write_bytes(gzip.compress(data)[:-2000])
    assert main(["replay", str(packed), "--quiet"]) == 1
    assert f"inferwatch: cannot read {packed} to its end" in capsys.readouterr().err
