"""``inferwatch replay``: the same pipeline over archived events, one JSON per line.

The file (or a binary stream: standard input for ``-``) is one ordered stream (one
partition), so the alerts equal those of a Kafka run that read the same events in
the same order.
"""

from __future__ import annotations

import gzip
import io
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, TextIO

from alerts.sinks import NO_CONTROL, Sink
from monitor.config import Config
from monitor.decode import BadRecord
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline, Record
from monitor.reference import ReferenceSet

log = logging.getLogger(__name__)
REPLAY_PARTITION = ("replay", 0)


CHUNK_BYTES = 1 << 22


class BadTally:
    """The bad records of a replay, counted by reason; the first ``show`` are written
    to ``stream`` with their line number (the detail quotes the record, its control
    characters masked)."""

    def __init__(self, stream: TextIO, show: int = 5) -> None:
        self.stream = stream
        self.show = show
        self.reasons: Counter[str] = Counter()

    def __call__(self, line: int, bad: BadRecord) -> None:
        self.reasons[bad.reason] += 1
        n = self.reasons.total()
        if n <= self.show:
            more = " (further bad records are only counted)" if n == self.show else ""
            self.stream.write(f"replay: line {line}: {bad.reason}: "
                              f"{bad.detail.translate(NO_CONTROL)}{more}\n")

    def summary(self) -> str:
        """``3 bad (not_json 2, missing_field 1)``, most frequent first."""
        total = self.reasons.total()
        if not total:
            return "0 bad"
        by_reason = ", ".join(f"{reason} {n:,}" for reason, n in self.reasons.most_common())
        return f"{total:,} bad ({by_reason})"


class AlertTally:
    """A sink that only counts the alert records it is given."""

    local: ClassVar[bool] = True
    name = "count"

    def __init__(self) -> None:
        self.records = 0

    def send(self, records: Sequence[str]) -> None:
        self.records += len(records)

    def delivered_prefix(self, records: Sequence[str]) -> int:
        return 0


GZIP_MAGIC = b"\x1f\x8b"


def open_archive(path: Path) -> BinaryIO:
    """The file's bytes, decompressed if it is gzip (as archived logs often are)."""
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == GZIP_MAGIC:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


class _Prefixed(io.RawIOBase):
    """``head`` (bytes already read from ``rest``), then the rest of ``rest``: a
    stream that cannot seek back (a pipe) read again from its start. Closing it
    leaves ``rest`` open."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(view))
        view[:len(data)] = data
        return len(data)


def open_stream(stream: BinaryIO) -> BinaryIO:
    """A binary stream's bytes (standard input), decompressed if it is gzip, as
    ``open_archive`` does for a file; closing the result leaves ``stream`` open."""
    head = b""
    while len(head) < len(GZIP_MAGIC):  # a pipe may hand over fewer bytes at a time
        more = stream.read(len(GZIP_MAGIC) - len(head))
        if not more:
            break
        head += more
    plain = io.BufferedReader(_Prefixed(head, stream), CHUNK_BYTES)
    if head == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=plain, mode="rb")  # type: ignore[return-value]
    return plain


def read_batches(source: Path | BinaryIO, size: int) -> Iterator[list[Record]]:
    """Records of ``size`` lines (the offset is the line number; blank lines are
    skipped but counted), read in large chunks and split in C; a gzip file or
    stream is read decompressed. ``source`` is a file's path or a binary stream
    (read to its end, left open)."""
    batch: list[Record] = []
    lineno = 0
    tail = b""
    with open_archive(source) if isinstance(source, Path) else open_stream(source) as fh:
        while True:
            chunk = fh.read(CHUNK_BYTES)
            data = tail + chunk
            lines = data.split(b"\n")
            tail = lines.pop() if chunk else b""
            if b"\r" in data:
                lines = [line.rstrip(b"\r") for line in lines]
            for line in lines:
                if line and not line.isspace():
                    batch.append(Record(lineno, line))
                    if len(batch) >= size:
                        yield batch
                        batch = []
                lineno += 1
            if not chunk:
                break
    if batch:
        yield batch


def replay(path: str | Path | BinaryIO, config: Config, sinks: Sequence[Sink], *,
           metrics: Metrics | None = None,
           progress: Callable[[int, int], None] | None = None,
           on_bad: Callable[[int, BadRecord], None] | None = None,
           references: ReferenceSet | None = None) -> Pipeline:
    """Run the pipeline over ``path`` (a file, or a binary stream such as
    ``sys.stdin.buffer``); deliver alert records to ``sinks`` as they come.
    ``progress(records, bad)`` is called every 2 s and at the end; ``on_bad(line,
    bad)`` for each bad record, in file order (``line`` counts from 1);
    ``references``: stored drift references to use, as the daemon does."""
    pipeline = Pipeline(config, metrics)
    pipeline.summaries.enabled = False  # no store here: nothing would read window summaries
    if references is not None:
        pipeline.use_references(references)
    source = Path(path) if isinstance(path, str) else path
    seen = 0
    bad = 0
    last_report = time.monotonic()
    reported = -1  # the record count of the last progress report
    for batch in read_batches(source, config.kafka.max_poll_records):
        result = pipeline.process(REPLAY_PARTITION, batch)
        pipeline.advance()  # one stream, in order: nothing older can come
        seen += len(batch)
        bad += len(result.bad)
        if on_bad is not None:
            for record, why in result.bad:
                on_bad(record.offset + 1, why)
        records = [entry.record for entry in pipeline.pending]
        pipeline.pending.clear()
        pipeline.alerts.changed.clear()
        for sink in sinks:
            sink.send(records)
        if progress is not None and time.monotonic() - last_report >= 2.0:
            progress(seen, bad)
            reported, last_report = seen, time.monotonic()
    if progress is not None and reported != seen:
        progress(seen, bad)
    return pipeline
