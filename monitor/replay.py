"""``inferwatch replay``: the same pipeline over archived events, one JSON per line.

The file is one ordered stream (one partition), so the alerts equal those of a
Kafka run that read the same events in the same order.
"""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from alerts.sinks import Sink
from monitor.config import Config
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline, Record
from monitor.reference import ReferenceSet

log = logging.getLogger(__name__)
REPLAY_PARTITION = ("replay", 0)


CHUNK_BYTES = 1 << 22


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
           references: ReferenceSet | None = None) -> Pipeline:
    """Run the pipeline over ``path``; deliver alert records to ``sinks`` as they come.
    ``references``: stored drift references to use, as the daemon does."""
    pipeline = Pipeline(config, metrics)
    pipeline.summaries.enabled = False  # no store here: nothing would read window summaries
    if references is not None:
        pipeline.use_references(references)
    path = Path(path)
    seen = 0
    bad = 0
    last_report = time.monotonic()
    for batch in read_batches(path, config.kafka.max_poll_records):
        result = pipeline.process(REPLAY_PARTITION, batch)
        pipeline.advance()  # one stream, in order: nothing older can come
        seen += len(batch)
        bad += len(result.bad)
        records = [entry.record for entry in pipeline.pending]
        pipeline.pending.clear()
        pipeline.alerts.changed.clear()
        for sink in sinks:
            sink.send(records)
        if progress is not None and time.monotonic() - last_report >= 2.0:
            progress(seen, bad)
            last_report = time.monotonic()
    if progress is not None:
        progress(seen, bad)
    return pipeline
