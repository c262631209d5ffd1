"""An event stamped far ahead of the daemon's clock is bad input: it would move
event time forward for every detector, expiring every client's state and closing
every window at once."""

from __future__ import annotations

import msgspec

from monitor.config import build_config
from monitor.pipeline import Pipeline, Record
from tests.monitor.streams import stream_records

YEAR = 365 * 86_400.0


def _run(records: list[Record], future_at: int | None = None,
         max_future_s: float | None = 600.0) -> tuple[Pipeline, list[int], list[str]]:
    """The stream through one pipeline, with the record at ``future_at`` stamped ten
    years ahead; the tracked clients after each record, the bad reasons."""
    p = Pipeline(build_config({"events": {"max_future_s": max_future_s}}, env={}))
    tracked, reasons = [], []
    for i, record in enumerate(records):
        rec = record
        if i == future_at:
            doc = msgspec.json.decode(rec.value)
            rec = Record(rec.offset, msgspec.json.encode({**doc, "ts": doc["ts"] + 10 * YEAR}))
        result = p.process(("t", 0), [rec])
        p.advance()
        tracked.append(p.tracked_clients())
        reasons += [bad.reason for _, bad in result.bad]
    return p, tracked, reasons


def test_an_event_stamped_years_ahead_is_counted_and_changes_nothing() -> None:
    records = stream_records()
    middle = len(records) // 2
    clean, _, _ = _run(records[:middle] + records[middle + 1:])
    guarded, tracked, reasons = _run(records, future_at=middle)
    assert reasons == ["future_timestamp"]
    assert tracked[middle] == tracked[middle - 1] > 0
    assert [e.record for e in guarded.pending] == [e.record for e in clean.pending]


def test_without_the_limit_the_same_event_expires_every_client() -> None:
    # what the limit guards against (events.max_future_s: null turns it off)
    records = stream_records()
    middle = len(records) // 2
    _, tracked, reasons = _run(records, future_at=middle, max_future_s=None)
    assert reasons == []
    assert tracked[middle - 1] > 1 and tracked[middle] == 1
