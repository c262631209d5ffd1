"""``inferwatch replay``: the same pipeline over archived events, one JSON per line.

The file is one ordered stream (one partition), so the alerts equal those of a
Kafka run that read the same events in the same order.
"""

from __future__ import annotations

import gzip
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, ClassVar, TextIO

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


def open_archive(path: Path) -> BinaryIO:
    """The file's bytes, decompressed if it is gzip (as archived logs often are)."""
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def read_batches(path: Path, size: int) -> Iterator[list[Record]]:
    """Records of ``size`` lines (the offset is the line number; blank lines are
    skipped but counted), read in large chunks and split in C; a gzip file is read
    decompressed."""
    batch: list[Record] = []
    lineno = 0
    tail = b""
    with open_archive(path) as fh:
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


def replay(path: str | Path, config: Config, sinks: Sequence[Sink], *,
           metrics: Metrics | None = None,
           progress: Callable[[int, int], None] | None = None,
           on_bad: Callable[[int, BadRecord], None] | None = None,
           references: ReferenceSet | None = None) -> Pipeline:
    """Run the pipeline over ``path``; deliver alert records to ``sinks`` as they come.
    ``progress(records, bad)`` is called every 2 s and at the end; ``on_bad(line,
    bad)`` for each bad record, in file order (``line`` counts from 1);
    ``references``: stored drift references to use, as the daemon does."""
    pipeline = Pipeline(config, metrics)
    pipeline.summaries.enabled = False  # no store here: nothing would read window summaries
    if references is not None:
        pipeline.use_references(references)
    path = Path(path)
    seen = 0
    bad = 0
    last_report = time.monotonic()
    reported = -1  # the record count of the last progress report
    for batch in read_batches(path, config.kafka.max_poll_records):
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
