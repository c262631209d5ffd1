"""A drift reference from a file (``inferwatch reference build``): a table of
training or validation rows (CSV, Parquet, JSONL, gzip allowed), or a pinned
period of archived inference-log events.

The file is read as a stream, a chunk at a time, and at most ``max_rows`` of its
rows are kept: a uniform sample of them all (reservoir sampling, Vitter's
Algorithm R, seeded: the same file gives the same reference). Memory is bounded
by the sample whatever the file's size; the drift detectors' bins and shares are
estimated from a few hundred thousand rows as well as from all of them.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.decode import parse_timestamp

if TYPE_CHECKING:
    from detectors.reference import Reference

DEFAULT_MAX_ROWS = 200_000
CHUNK_ROWS = 100_000
PROGRESS_EVERY_S = 5.0
_FORMATS = "use .csv, .parquet or .jsonl, optionally .gz"


@dataclass(frozen=True)
class FileReference:
    """A built reference, and how many of the file's rows it was drawn from."""

    reference: Reference
    rows_matching: int  # the rows that qualified (model, version, period), all sampled from


def table_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The file's rows as dicts, a chunk at a time (nulls as None)."""
    suffix = "".join(path.suffixes[-2:]).lower()
    if suffix.endswith((".csv", ".csv.gz")):
        import pandas as pd  # imported here: only the command line needs it

        with pd.read_csv(path, chunksize=CHUNK_ROWS) as chunks:
            for frame in chunks:
                yield from frame.astype(object).where(frame.notna(), None).to_dict("records")
    elif suffix.endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS):
            yield from batch.to_pylist()
    elif suffix.endswith((".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz")):
        # not pandas: it would turn "2" into 2 and timestamps into datetimes
        from monitor.replay import open_archive

        with open_archive(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:  # not JSON, or not UTF-8
                    raise ValueError(
                        f"{path}:{lineno}: not JSON ({getattr(exc, 'msg', exc)})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{lineno}: not a JSON object")
                yield row
    else:
        raise ValueError(f"{path}: unknown format ({_FORMATS})")


def _ts(value: Any) -> float | None:
    """An archived event's ``ts`` read as the daemon reads it (``parse_timestamp``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return parse_timestamp(value) if isinstance(value, float | str) else None


class _Reservoir:
    """A uniform sample of at most ``size`` of the items offered (Algorithm R)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: list[dict[str, Any]] = []
        self.offered = 0
        self._rng = random.Random(0)

    def offer(self, item: dict[str, Any]) -> None:
        self.offered += 1
        if len(self.items) < self.size:
            self.items.append(item)
            return
        j = self._rng.randrange(self.offered)
        if j < self.size:
            self.items[j] = item


def _is_event(row: Mapping[str, Any]) -> bool:
    """Whether a row is an archived inference-log event rather than a table row (an
    event need not carry features, but it always has its time and model)."""
    return isinstance(row.get("features"), Mapping) or ("ts" in row and "model" in row)


def reference_from_file(
    path: str | Path,
    *,
    model: str,
    model_version: str = "",
    prediction_column: str | None = None,
    confidence_column: str | None = None,
    drop_columns: Sequence[str] = (),
    since: float | None = None,
    until: float | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    progress: Callable[[int], None] | None = None,
    **layout_options: Any,
) -> FileReference:
    """A reference from a table of feature rows, or from archived events.

    A file whose first row is an inference-log event (``ts`` and ``model``, or a
    ``features`` object: the event contract) is read as an archive of events: only
    ``model`` (and ``model_version`` when given) within [``since``, ``until``)
    count, and their prediction and confidence go in too. Other files are plain
    tables: one column per feature (``since``/``until`` are refused). ``progress(rows read)``
    is called every few seconds of a long read.
    """
    # imported here: the command line reads DEFAULT_MAX_ROWS at start, numpy only when building
    from detectors.reference import CONFIDENCE, PREDICTION, build_reference

    path = Path(path)
    sample = _Reservoir(max_rows)
    events: bool | None = None  # decided by the first row
    start = end = None
    read = 0
    reported = time.monotonic()
    drop = set(drop_columns)
    for rec in table_rows(path):
        read += 1
        if progress is not None and time.monotonic() - reported >= PROGRESS_EVERY_S:
            progress(read)
            reported = time.monotonic()
        if events is None:
            events = _is_event(rec)
            if not events and (since is not None or until is not None):
                raise ValueError(f"{path}: --since/--until pick a period of archived "
                                 "inference-log events; this file is a table of feature rows")
        if events:
            if rec.get("model") != model or (model_version and
                                             rec.get("model_version") != model_version):
                continue
            ts = _ts(rec.get("ts"))
            if ts is None or (since is not None and ts < since) or (
                    until is not None and ts >= until):
                continue
            start = ts if start is None else min(start, ts)
            end = ts if end is None else max(end, ts)
            row = dict(rec.get("features") or {})
            if rec.get("prediction") is not None:
                row[PREDICTION] = rec["prediction"]
            if rec.get("confidence") is not None:
                row[CONFIDENCE] = rec["confidence"]
        else:
            row = {k: v for k, v in rec.items() if k not in drop}
            if prediction_column is not None:
                row[PREDICTION] = row.pop(prediction_column, None)
            if confidence_column is not None:
                row[CONFIDENCE] = row.pop(confidence_column, None)
        sample.offer(row)
    if not sample.items:
        raise ValueError(f"{path}: no rows for model {model!r}"
                         + (f" version {model_version!r}" if model_version else ""))
    source = (f"pinned:{path.name}:{since}..{until}" if events else f"file:{path.name}")
    ref = build_reference(sample.items, model=model, model_version=model_version, source=source,
                          start=start, end=end, **layout_options)
    return FileReference(ref, sample.offered)
