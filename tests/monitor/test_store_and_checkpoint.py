"""Store and checkpoints, on SQLite and on the machine's PostgreSQL."""

from __future__ import annotations

import dataclasses
import itertools
import json
import pickle
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

from alerts.outbox import Dispatcher, OutboxEntry
from alerts.sinks import JsonlSink
from detectors.base import Finding
from monitor import checkpoint
from monitor import store as store_module
from monitor.checkpoint import Checkpointer
from monitor.config import build_config
from monitor.pipeline import Pipeline, Record
from monitor.state import PartitionId
from monitor.store import POSTGRES_CONNECT_ARGS, OutboxRow, Store, StoredAlert
from tests.integration.proxy import TcpProxy
from tests.monitor.streams import SCENARIO, stream_records

CONFIG = build_config({"detectors": {"flooding": {"max_events": 300},
                                     "probing": {"min_queries": 20}}}, env={})


def test_migrate_is_idempotent_and_adds_missing_columns_without_losing_rows(store_url: str) -> None:
    store = Store(store_url)
    store.migrate()
    with store.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE legacy_probe (id INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("ALTER TABLE reports DROP COLUMN path"))
        conn.execute(sa.text(
            "INSERT INTO reports (kind, created_at, payload) VALUES ('x', CURRENT_TIMESTAMP, 'kept')"))
    store.migrate()
    store.migrate()
    with store.engine.connect() as conn:
        cols = {c["name"] for c in sa.inspect(conn).get_columns("reports")}
        payload = conn.execute(sa.text("SELECT payload FROM reports")).scalar()
    assert "path" in cols and payload == "kept"
    store.close()


def test_migrating_an_outbox_of_schema_2_keeps_its_rows_and_keys_new_ones(store_url: str) -> None:
    store = Store(store_url)
    store.migrate()
    with store.engine.begin() as conn:  # the outbox as schema 2 made it, with a row
        conn.execute(sa.text("DROP INDEX ux_alert_outbox_delivery_key"))
        conn.execute(sa.text("ALTER TABLE alert_outbox DROP COLUMN delivery_key"))
        conn.execute(sa.text("INSERT INTO alert_outbox (producer, fingerprint, record, created_at) "
                             "VALUES ('a', 'f', 'old', CURRENT_TIMESTAMP)"))
    store.migrate()
    entry = OutboxEntry("k1", "f", "new")
    store.append_outbox("a", [entry])
    store.append_outbox("a", [entry, OutboxEntry("k2", "f", "newer")])
    assert [r.record for r in store.outbox_after("x")] == ["old", "new", "newer"]
    store.close()


def test_checkpoint_restores_state_offsets_and_firing_alerts(store_url: str) -> None:
    records = stream_records()
    half = len(records) // 2
    pid = ("logs", 0)

    whole = Pipeline(CONFIG)
    whole.process(pid, records)
    whole.advance()

    store = Store(store_url)
    store.migrate()
    first = Pipeline(CONFIG)
    Checkpointer(store, first, group="g", producer="a").restore([pid])
    first.process(pid, records[:half])
    first.advance()
    offsets = Checkpointer(store, first, group="g", producer="a").save()
    assert offsets == {pid: half}
    firing_before = set(first.alerts.firing)

    second = Pipeline(CONFIG)  # a new process after a crash
    resume = Checkpointer(store, second, group="g", producer="a").restore([pid])
    assert resume == {pid: half}
    assert set(second.alerts.firing) == firing_before
    second.process(pid, records[half:])
    second.advance()
    Checkpointer(store, second, group="g", producer="a").save()

    stored = [msgspec.json.decode(r.record) for r in store.outbox_after("x", limit=10_000)]
    expected = [msgspec.json.decode(e.record) for e in whole.pending]
    assert len(expected) >= 3
    assert stored == expected
    for resumed, straight in zip(second.partitions[pid].detectors,
                                 whole.partitions[pid].detectors, strict=True):
        assert list(resumed.slots) == list(straight.slots)
        assert [s.detector.evidence() for s in resumed.slots.values()] == [
            s.detector.evidence() for s in straight.slots.values()]
    store.close()


def test_alerts_put_in_the_outbox_before_a_crash_are_not_doubled_when_raised_again(
    store_url: str,
) -> None:
    """Journaled alerts whose state was never checkpointed are raised again by the
    restarted pipeline; the outbox ends as an uninterrupted run's, each record once."""
    records = stream_records()
    pid = ("logs", 0)
    whole = Pipeline(CONFIG)
    whole.process(pid, records)
    whole.advance()
    expected = [e.record for e in whole.pending]

    store = Store(store_url)
    store.migrate()
    first = Pipeline(CONFIG)
    cp = Checkpointer(store, first, group="g", producer="a")
    cp.restore([pid])
    third = len(records) // 5
    first.process(pid, records[:third])
    first.advance()
    cp.save()
    first.process(pid, records[third:])  # raised and journaled, then kill -9: no checkpoint
    first.advance()
    journaled = cp.journal()
    assert journaled >= 2 and first.pending == []
    before_crash = [r.record for r in store.outbox_after("x", limit=10_000)]
    assert before_crash == expected

    second = Pipeline(CONFIG)
    cp = Checkpointer(store, second, group="g", producer="a")
    assert cp.restore([pid]) == {pid: third}
    second.process(pid, records[third:])
    second.advance()
    assert len(second.pending) == journaled  # raised again
    cp.journal()
    cp.save()
    assert [r.record for r in store.outbox_after("x", limit=10_000)] == expected
    store.close()


def test_an_outbox_row_committed_after_a_later_one_was_delivered_is_not_skipped(
    store_url: str, tmp_path: Path,
) -> None:
    """Two writers append to the outbox at once (a checkpoint, and the jobs thread of
    the same replica): the one that took its ``seq`` first commits last, after the
    other's row was delivered. Its row must still be delivered, after the cursor."""
    store, other = Store(store_url), Store(store_url)
    store.migrate()
    out = tmp_path / "alerts.jsonl"
    sink = JsonlSink(out)
    dispatcher = Dispatcher(store, [sink], "a")
    with store.engine.begin() as conn:  # a checkpoint's transaction, not committed yet
        store._append_outbox(conn, "a", [OutboxEntry("k1", "fp1", '{"n":1}')],
                             store_module._now())
        job = threading.Thread(target=other.append_outbox,
                               args=("a", [OutboxEntry(None, "fp2", '{"n":2}')]))
        job.start()
        job.join(1.0)  # on both databases it waits for the checkpoint's commit
        dispatcher.deliver()
    job.join()
    dispatcher.deliver()
    assert out.read_text().splitlines() == ['{"n":1}', '{"n":2}']
    assert dispatcher.depth == {sink.name: 0}
    store.close()
    other.close()


def test_a_process_without_partitions_stores_no_model_wide_state_but_its_alerts(
    store_url: str,
) -> None:
    """A replica before its first assignment, or after its last revocation, has no
    model-wide state worth a row (it is keyed by the partitions owned); the alert
    records it still holds go to the outbox, but those of a partition it released
    unstored: the next owner raises them again."""
    store = Store(store_url)
    store.migrate()
    p = Pipeline(CONFIG)
    cp = Checkpointer(store, p, group="g", producer="a")
    assert cp.save() == {}
    pid = ("logs", 0)
    cp.restore([pid])
    p.process(pid, stream_records())
    p.advance()
    assert p.pending and p.alerts.changed
    model_wide = Finding(detector="drift.test", kind="drift", severity="warning",
                         status="firing", model="m", model_version="1", subject={},
                         summary="s", ts=10.0)
    (record,) = p.alert([model_wide])
    p.release(pid)  # revoked, its last checkpoint failed: the next owner reads it again
    assert [e.fingerprint for e in p.pending] == list(p.alerts.changed) == [record["fingerprint"]]
    assert cp.save() == {}
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM checkpoints")).scalar() == 0
    assert p.pending == [] and [r.fingerprint for r in store.outbox_after("x")] == [
        record["fingerprint"]]
    assert [a.fingerprint for a in store.firing_alerts()] == [record["fingerprint"]]
    store.close()


def test_a_checkpoint_blocked_by_an_abandoned_transaction_fails_in_seconds_then_succeeds(
    pg_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A transaction whose client vanished without closing its connection keeps its
    locks until the server notices (the probes every transaction asks for: about a
    minute). Meanwhile a checkpoint waits at most ``LOCK_TIMEOUT_S`` for them and
    fails, to be retried with backoff, instead of holding the daemon's loop."""
    monkeypatch.setattr(store_module, "LOCK_TIMEOUT_S", 1)
    store = Store(pg_url)
    store.migrate()
    with store.engine.connect() as conn:
        assert [conn.exec_driver_sql(f"SHOW {name}").scalar() for name in
                store_module.SERVER_KEEPALIVES] == ["30", "10", "3"]
    records = stream_records()
    pid = ("logs", 0)
    p = Pipeline(CONFIG)
    cp = Checkpointer(store, p, group="g", producer="a")
    cp.restore([pid])
    p.process(pid, records[:200])
    cp.save()
    p.process(pid, records[200:400])
    holder = sa.create_engine(pg_url)
    try:
        with holder.connect() as abandoned:  # holds the stored checkpoints' row locks
            abandoned.exec_driver_sql("SELECT 1 FROM checkpoints FOR UPDATE")
            started = time.monotonic()
            with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                cp.save()
            assert time.monotonic() - started < 5
        assert cp.save() == {pid: 400}  # the locks are gone: the retry stores it all
    finally:
        holder.dispose()
    second = Pipeline(CONFIG)
    assert Checkpointer(store, second, group="g", producer="a").restore([pid]) == {pid: 400}
    store.close()
    # a setting the store URL's options give is the URL's
    own = Store(pg_url.replace("?options=", "?options=-c%20lock_timeout%3D3s%20", 1))
    with own.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "3s"
        assert conn.exec_driver_sql("SHOW tcp_keepalives_idle").scalar() == "30"
    own.close()


def test_a_failed_checkpoint_keeps_the_pending_alerts(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    p = Pipeline(CONFIG)
    p.process(("logs", 0), stream_records())
    pending = list(p.pending)
    assert pending
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alert_outbox"))
    with pytest.raises(sa.exc.SQLAlchemyError):
        Checkpointer(store, p, group="g", producer="a").save()
    assert p.pending == pending
    store.migrate()
    Checkpointer(store, p, group="g", producer="a").save()
    assert p.pending == [] and len(store.outbox_after("x", limit=10_000)) == len(pending)


def _stored_outbox(tmp_path: Path) -> tuple[Store, list[OutboxRow]]:
    """A SQLite store whose outbox holds the alert records of the test stream."""
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    p = Pipeline(CONFIG)
    p.process(("logs", 0), stream_records())
    Checkpointer(store, p, group="g", producer="a").save()
    return store, list(store.outbox_after("jsonl", limit=10_000))


def test_jsonl_delivery_interrupted_before_its_cursor_moved_is_not_written_twice(
    tmp_path: Path,
) -> None:
    store, rows = _stored_outbox(tmp_path)
    out = tmp_path / "alerts.jsonl"
    sink = JsonlSink(out)
    sink.send([r.record for r in rows[:2]])  # written, then "crash" before the cursor moved

    Dispatcher(store, [JsonlSink(out)], "a").deliver()  # the restarted daemon
    lines = out.read_text().splitlines()
    assert lines == [r.record for r in rows]
    store.close()


def test_a_sink_that_cannot_write_shows_its_undelivered_records_then_catches_up(
    tmp_path: Path,
) -> None:
    """``Dispatcher.depth`` (the daemon's ``inferwatch_outbox_depth{sink}``, which the
    Helm chart alerts on): the records a failing sink has not taken, 0 once it has."""
    store, rows = _stored_outbox(tmp_path)
    assert len(rows) >= 3
    blocker = tmp_path / "alerts"
    blocker.write_text("a file where the sink's directory should be")
    sink = JsonlSink(blocker / "alerts.jsonl")
    now = [0.0]
    dispatcher = Dispatcher(store, [sink], "a", clock=lambda: now[0])
    assert dispatcher.deliver() == 0  # a retryable failure, not an exception
    assert dispatcher.depth == {sink.name: len(rows)}
    blocker.unlink()
    now[0] += 1.0  # past the first backoff
    assert dispatcher.deliver() == len(rows)
    assert dispatcher.depth == {sink.name: 0}
    assert (blocker / "alerts.jsonl").read_text().splitlines() == [r.record for r in rows]
    store.close()


def test_jsonl_records_written_just_before_the_database_went_away_are_not_written_again(
    tmp_path: Path, pg_url: str
) -> None:
    """The sink wrote, then the store could not move the cursor: the same process
    must recognise what the file already holds when it tries again."""
    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        store = Store(proxy.route(pg_url))
        store.migrate()
        p = Pipeline(CONFIG)
        p.process(("logs", 0), stream_records())
        Checkpointer(store, p, group="g", producer="a").save()
        rows = store.outbox_after("jsonl", limit=10_000)
        assert len(rows) > 1

        class DatabaseGoesAwayAfterTheFirstWrite(JsonlSink):
            def send(self, records: Sequence[str]) -> None:
                super().send(records)
                if proxy.up.is_set() and not proxy.refused:
                    proxy.cut()

        out = tmp_path / "alerts.jsonl"
        dispatcher = Dispatcher(store, [DatabaseGoesAwayAfterTheFirstWrite(out)], "a")
        with pytest.raises(sa.exc.SQLAlchemyError):
            dispatcher.deliver()
        assert proxy.refused, "the cursor was never moved through the proxy"
        proxy.restore()
        dispatcher.deliver()
        assert out.read_text().splitlines() == [r.record for r in rows]
        store.close()


def test_records_delivered_again_after_a_restore_are_not_counted_twice() -> None:
    """A fetch racing the seek to the checkpointed offset may re-deliver records."""
    records = stream_records()
    once, twice = Pipeline(CONFIG), Pipeline(CONFIG)
    once.process(("logs", 0), records)
    half = len(records) // 2
    twice.process(("logs", 0), records[:half])
    result = twice.process(("logs", 0), records[half - 100:])
    assert result.duplicates == 100
    assert twice.pending == once.pending
    for a, b in zip(twice.partitions[("logs", 0)].detectors,
                    once.partitions[("logs", 0)].detectors, strict=True):
        assert [s.detector.evidence() for s in a.slots.values()] == [
            s.detector.evidence() for s in b.slots.values()]


def _client_rows(store: Store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT COUNT(*) FROM client_checkpoints")).scalar_one()


def test_checkpoints_write_only_changed_clients_and_restarts_rebuild_the_same_state(
    store_url: str,
) -> None:
    # clients idle for 60 s of event time expire: their rows must go too (a client is
    # kept as long as its longest window, so the windows are a minute here)
    minute = {"window_s": 60}
    config = build_config({"detectors": {"flooding": {"max_events": 300},
                                         "probing": {"min_queries": 20, **minute},
                                         "coverage": minute, "out_of_range": minute,
                                         "neighbours": minute},
                           "state": {"client_idle_s": 60}}, env={})
    records = stream_records()
    pid = ("logs", 0)
    whole = Pipeline(config)
    whole.process(pid, records)
    whole.advance()

    store = Store(store_url)
    store.migrate()
    cuts = [0, len(records) // 4, len(records) // 2, 3 * len(records) // 4, len(records)]
    for start, end in itertools.pairwise(cuts):
        p = Pipeline(config)  # a restart before each stretch
        cp = Checkpointer(store, p, group="g", producer="a")
        cp.restore([pid])
        p.process(pid, records[start:end - 10])
        p.advance()
        cp.save()
        keyed = p.partitions[pid].detectors[0]
        assert _client_rows(store) == len(keyed), "one row per tracked client, expired ones deleted"
        # ten more events: the next checkpoint writes just the clients they touched
        p.process(pid, records[end - 10:end])
        p.advance()
        changed = keyed.changes()
        touched = {e.client_id for e in map(p.decoder.decode, (r.value for r in records[end - 10:end]))}
        assert {k[1] for k, _, _ in changed.moved} == touched
        cp.save()
        assert not keyed.changes().moved

    restored = Pipeline(config)
    Checkpointer(store, restored, group="g", producer="a").restore([pid])
    for resumed, straight in zip(restored.partitions[pid].detectors,
                                 whole.partitions[pid].detectors, strict=True):
        assert list(resumed.slots) == list(straight.slots)  # same LRU order
        assert resumed.firing_keys == straight.firing_keys
        assert [s.detector.evidence() for s in resumed.slots.values()] == [
            s.detector.evidence() for s in straight.slots.values()]
    assert len(whole.partitions[pid].detectors[0]) < SCENARIO.benign_clients + 2, "none expired"
    store.close()


def test_a_member_evicted_from_the_group_stores_nothing_over_the_new_owner(
    store_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """Member a, cut off from Kafka, was evicted and its partition given to b; a
    still reaches the store. Its checkpoints must not write its stale state over
    b's: it drops the partition instead. A hand-over in a rebalance (a saves when
    revoked, then b restores) keeps a's last state."""
    records = stream_records()
    pid = ("logs", 0)
    n = len(records)
    whole = Pipeline(CONFIG)
    whole.process(pid, records)
    whole.advance()
    store = Store(store_url)
    store.migrate()

    a = Pipeline(CONFIG)
    cp_a = Checkpointer(store, a, group="g", producer="a")
    cp_a.restore([pid])
    a.process(pid, records[:n // 4])
    a.advance()
    assert cp_a.save() == {pid: n // 4}  # revoked in a rebalance: saved, then released
    a.release(pid)
    assert cp_a.restore([pid]) == {pid: n // 4}  # given back to a: its state resumes
    a.process(pid, records[n // 4:n // 2])
    a.advance()  # a's path to Kafka goes; the group gives the partition to b

    b = Pipeline(CONFIG)
    cp_b = Checkpointer(store, b, group="g", producer="b")
    assert cp_b.restore([pid]) == {pid: n // 4}
    b.process(pid, records[n // 4:])
    b.advance()
    assert cp_b.save() == {pid: n}

    assert cp_a.save() == {}  # a's periodic checkpoint: refused, the partition dropped
    assert "partitions logs[0] were given to another member" in caplog.text
    assert pid not in a.partitions
    assert cp_a.save() == {}
    assert cp_b.save() == {pid: n}  # b goes on

    restored = Pipeline(CONFIG)
    assert Checkpointer(store, restored, group="g", producer="c").restore([pid]) == {pid: n}
    for resumed, straight in zip(restored.partitions[pid].detectors,
                                 whole.partitions[pid].detectors, strict=True):
        assert list(resumed.slots) == list(straight.slots)
        assert [s.detector.evidence() for s in resumed.slots.values()] == [
            s.detector.evidence() for s in straight.slots.values()]
    assert [k.slots.keys() for k in restored.models.detectors] == [
        k.slots.keys() for k in whole.models.detectors]
    store.close()


FLOOD = "02a367fa27c7c45b"  # the stream's flooder: fires in records 600-650, resolves in 1600-1650


def _evicted_after_the_flood_fired(store_url: str) -> tuple[Store, list[Record], PartitionId,
                                                              Pipeline, Checkpointer, Checkpointer]:
    """Member a stored the first 500 records and went on to 1,000 (the flooder fires
    there), then member b took the partition: (store, records, pid, a, a's and b's
    checkpointers)."""
    records = stream_records()
    pid = ("logs", 0)
    store = Store(store_url)
    store.migrate()
    a = Pipeline(CONFIG)
    cp_a = Checkpointer(store, a, group="g", producer="a")
    cp_a.restore([pid])
    a.process(pid, records[:500])
    assert cp_a.save() == {pid: 500}
    a.process(pid, records[500:1000])
    assert FLOOD in a.alerts.changed and any(e.fingerprint == FLOOD for e in a.pending)
    cp_b = Checkpointer(store, Pipeline(CONFIG), group="g", producer="b")
    assert cp_b.restore([pid]) == {pid: 500}
    return store, records, pid, a, cp_a, cp_b


def _floods_of(store: Store, producer: str) -> list[tuple[str, int]]:
    """(status, count) of the flood alert's records in the outbox from ``producer``."""
    rows = map(json.loads, (r.record for r in store.outbox_after("x", producer=producer)))
    return [(r["status"], r["count"]) for r in rows if r["fingerprint"] == FLOOD]


def test_an_evicted_member_stores_no_alert_of_the_partitions_taken_from_it(
    store_url: str,
) -> None:
    """What a raised from the taken partition's events after its last checkpoint is
    b's to raise (b replays them): a's next checkpoint must not store it. Stored, a's
    "firing" row of the flood alert overwrote the "resolved" b had stored, and every
    restore after it loaded the alert as firing, which nothing would ever resolve."""
    store, records, pid, a, cp_a, cp_b = _evicted_after_the_flood_fired(store_url)
    b = cp_b.pipeline
    b.process(pid, records[500:])  # the flooder fires and stops
    b.advance()
    assert cp_b.save() == {pid: len(records)}
    assert FLOOD not in {r.fingerprint for r in store.firing_alerts()}

    assert cp_a.save() == {}  # refused, the partition dropped
    assert FLOOD not in {r.fingerprint for r in store.firing_alerts()}
    assert _floods_of(store, "a") == []
    assert _floods_of(store, "b") == [("firing", 1), ("resolved", 1)]
    assert not a.pending and FLOOD not in a.alerts.changed

    c = Pipeline(CONFIG)  # any later restore
    Checkpointer(store, c, group="g", producer="c").restore([pid])
    assert FLOOD not in c.alerts.firing
    store.close()


def test_an_evicted_member_journals_no_record_of_the_partitions_taken_from_it(
    store_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """Records go to the outbox ahead of the checkpoint (journal): once b has taken
    the partition, a's journal must drop its records as its checkpoint does, not
    put them in the outbox as a's (a local sink of b's would then miss them: the
    outbox keeps the first copy of a record, b's is a duplicate)."""
    store, records, pid, a, cp_a, cp_b = _evicted_after_the_flood_fired(store_url)
    assert cp_a.journal() == 0
    assert "partitions logs[0] were given to another member" in caplog.text
    assert pid not in a.partitions and not a.pending
    b = cp_b.pipeline
    b.process(pid, records[500:])
    b.advance()
    cp_b.journal()
    assert _floods_of(store, "a") == []
    assert _floods_of(store, "b") == [("firing", 1), ("resolved", 1)]
    store.close()


# a model-wide finding, as Pipeline.advance() raises it: of no one partition's events
DRIFT = Finding(detector="drift.test", kind="drift", severity="warning", status="firing",
                model="m", model_version="1", subject={}, summary="s", ts=10.0)


def _records_of(store: Store, fp: str, producer: str | None = None) -> list[tuple[str, int]]:
    """(status, count) of alert ``fp``'s records in the outbox (from ``producer``)."""
    rows = map(json.loads, (r.record for r in store.outbox_after("x", producer=producer)))
    return [(r["status"], r["count"]) for r in rows if r["fingerprint"] == fp]


def test_an_evicted_member_left_without_partitions_stores_no_model_wide_alert_until_it_holds_some(
    store_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """a's watermark closed a drift window (a model-wide record, of no one partition)
    before it noticed that b had taken its only partition. Found out, a holds no
    partition, so no epoch to fence a store with: it must store neither the record
    (b raises it again from the stored state, and a's copy, first in the outbox, would
    keep b's out, and b's local sinks without it) nor the alert's row (a's "firing"
    over the "resolved" b stored: every later restore loads it firing, and nothing
    resolves it). Nor may it drop them: a new owner that is not a fresh process keeps
    its own model-wide state and raises nothing of a's. They wait with a's model-wide
    state until a holds partitions again, and are stored under that fence."""
    store, records, pid, a, cp_a, cp_b = _evicted_after_the_flood_fired(store_url)
    (raised,) = a.alert([DRIFT])
    fp = raised["fingerprint"]
    cp_a.journal()  # a finds the partition taken
    assert "partitions logs[0] were given to another member" in caplog.text
    b = cp_b.pipeline
    b.process(pid, records[500:])
    b.alert([DRIFT])  # the same window, closed again from the stored state
    cp_b.journal()
    b.alert([dataclasses.replace(DRIFT, status="resolved", ts=20.0)])
    assert cp_b.save() == {pid: len(records)}
    assert cp_a.save() == {}  # a's periodic checkpoint

    assert _records_of(store, fp, producer="b") == [("firing", 1), ("resolved", 1)]
    assert fp not in {r.fingerprint for r in store.firing_alerts()}
    c = Pipeline(CONFIG)  # any later restore
    Checkpointer(store, c, group="g", producer="c").restore([pid])
    assert fp not in c.alerts.firing
    assert _records_of(store, fp, producer="a") == []
    # not dropped: a's model-wide state is its own, and goes on when a holds partitions
    assert [e.fingerprint for e in a.pending] == [fp] and fp in a.alerts.changed
    assert "wait, unstored, until it holds partitions again" in caplog.text
    cp_a.restore([("logs", 1)])  # back in the group, with a partition of its own
    assert cp_a.journal() == 1 and not a.pending
    assert _records_of(store, fp) == [("firing", 1), ("resolved", 1)]  # the same record: once
    store.close()


def test_a_revoked_member_stores_its_model_wide_alerts_only_while_its_partitions_are_not_taken(
    store_url: str,
) -> None:
    """Revoked when its checkpoint failed, a member holds a model-wide record and no
    partition. Stored before the next owner takes the partition, it is a hand-over (as
    a save from the revoke callback would be,
    ``test_a_process_without_partitions_stores_no_model_wide_state_but_its_alerts``);
    after, it waits, unstored, like an evicted member's, until this member holds
    partitions again."""
    records = stream_records()
    pid = ("logs", 0)
    store = Store(store_url)
    store.migrate()
    a = Pipeline(CONFIG)
    cp_a = Checkpointer(store, a, group="g", producer="a")
    cp_a.restore([pid])
    a.process(pid, records[:500])
    assert cp_a.save() == {pid: 500}
    (raised,) = a.alert([DRIFT])
    fp = raised["fingerprint"]
    a.release(pid)  # revoked; its checkpoint failed
    b = Pipeline(CONFIG)
    cp_b = Checkpointer(store, b, group="g", producer="b")
    assert cp_b.restore([pid]) == {pid: 500}

    cp_a.journal()
    assert cp_a.save() == {}
    b.process(pid, records[500:])
    b.alert([DRIFT])  # the same window, closed again from the stored state
    assert cp_b.save() == {pid: len(records)}
    assert _records_of(store, fp, producer="b") == [("firing", 1)]
    assert _records_of(store, fp, producer="a") == []
    assert [e.fingerprint for e in a.pending] == [fp] and fp in a.alerts.changed
    cp_a.restore([("logs", 1)])
    assert cp_a.save() == {}  # nothing read from it yet
    assert _records_of(store, fp) == [("firing", 1)]
    store.close()


def _stored_500(store_url: str, *, advance: bool = False,
                ) -> tuple[Store, list[Record], PartitionId, Checkpointer]:
    """A store holding the checkpoint of the stream's first 500 records (and, with
    ``advance``, of the model-wide windows they closed)."""
    records = stream_records()
    pid = ("logs", 0)
    store = Store(store_url)
    store.migrate()
    first = Pipeline(CONFIG)
    cp = Checkpointer(store, first, group="g", producer="a")
    first.process(pid, records[:500])
    if advance:
        first.advance()
    cp.save()
    return store, records, pid, cp


def test_a_stored_state_this_version_cannot_read_restarts_the_detectors_at_the_stored_offset(
    store_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    store, records, pid, cp = _stored_500(store_url)
    with store.engine.begin() as conn:  # as if written by an incompatible release
        conn.execute(sa.text("UPDATE client_checkpoints SET state = :junk"), {"junk": b"\x80\x05junk"})

    second = Pipeline(CONFIG)
    cp = Checkpointer(store, second, group="g", producer="a")
    assert cp.restore([pid]) == {pid: 500}
    assert "cannot be read" in caplog.text and "offset 500" in caplog.text
    assert len(second.partitions[pid].detectors[0]) == 0
    second.process(pid, records[500:510])
    cp.save()  # the unreadable rows are replaced by what the fresh detectors hold
    assert _client_rows(store) == len(second.partitions[pid].detectors[0]) > 0
    third = Pipeline(CONFIG)
    assert Checkpointer(store, third, group="g", producer="a").restore([pid]) == {pid: 510}
    assert list(third.partitions[pid].detectors[0].slots) == list(
        second.partitions[pid].detectors[0].slots)
    store.close()


def test_a_damaged_model_wide_state_or_alert_row_starts_that_part_afresh(
    store_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """Like a partition's rows: one error line each, and the restore goes on (it
    used to raise, and the daemon retried it for ever, never ready)."""
    store, records, pid, cp = _stored_500(store_url, advance=True)
    firing = store.firing_alerts()
    assert firing
    damaged = firing[0].fingerprint
    with store.engine.begin() as conn:  # torn writes, a bad restore from a backup
        conn.execute(sa.text("UPDATE checkpoints SET state = :junk WHERE scope = :scope"),
                     {"junk": b"\x80\x05junk", "scope": cp.model_scope([pid])})
        conn.execute(sa.text("UPDATE alerts SET state = :junk WHERE fingerprint = :fp"),
                     {"junk": b"\x80\x05junk", "fp": damaged})

    second = Pipeline(CONFIG)
    cp = Checkpointer(store, second, group="g", producer="a")
    assert cp.restore([pid]) == {pid: 500}
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2
    assert "model-wide state cannot be read (UnpicklingError" in errors[0]
    assert f"firing alert {damaged} cannot be read (UnpicklingError" in errors[1]
    assert not any(k.slots for k in second.models.detectors)
    assert set(second.alerts.firing) == {a.fingerprint for a in firing[1:]}
    assert len(second.partitions[pid].detectors[0]) > 0  # the partition's state is whole
    second.process(pid, records[500:600])
    second.advance()
    cp.save()  # replaces the damaged model-wide row
    caplog.clear()
    third = Pipeline(CONFIG)
    assert Checkpointer(store, third, group="g", producer="a").restore([pid]) == {pid: 600}
    assert "model-wide state cannot be read" not in caplog.text
    assert any(k.slots for k in third.models.detectors)  # the new state, stored whole
    store.close()


def _damage_a_firing_alert(store_url: str) -> tuple[Store, PartitionId, StoredAlert]:
    """The checkpoint of the first 500 records, one of whose firing alert rows has
    a state no release can read (a torn write, a bad restore from a backup): (store,
    partition, the row as it was)."""
    store, _, pid, _ = _stored_500(store_url)
    row = store.firing_alerts()[0]
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alerts SET state = :junk WHERE fingerprint = :fp"),
                     {"junk": b"\x80\x05junk", "fp": row.fingerprint})
    return store, pid, row


def test_a_firing_alert_whose_stored_state_cannot_be_read_is_resolved(
    store_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """Left out of the restore, such an alert stayed firing for ever: in the store
    (jobs and `inferwatch alerts` read it so, every restore logged it again) and
    wherever it was sent (its episode never got a resolved record; if the condition
    went on, a second alert opened beside it). Its row keeps the record last sent:
    the restore sends that as resolved, once, and the row stops firing."""
    store, pid, row = _damage_a_firing_alert(store_url)
    sent = json.loads(row.record)
    before = len(store.outbox_after("x", limit=10_000))
    for producer in ("b", "c"):  # the next restore has nothing left to resolve
        p = Pipeline(CONFIG)
        Checkpointer(store, p, group="g", producer=producer).restore([pid])
        assert row.fingerprint not in p.alerts.firing
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert f"firing alert {row.fingerprint} cannot be read (UnpicklingError" in errors[0]
    assert "resolved" in errors[0]
    assert row.fingerprint not in {a.fingerprint for a in store.firing_alerts()}
    (resolved,) = [json.loads(r.record) for r in store.outbox_after("x", limit=10_000)[before:]]
    assert resolved == {**sent, "status": "resolved",
                        "summary": sent["summary"] + checkpoint.UNREADABLE_NOTE}
    assert json.loads(store.list_alerts(status="resolved")[0]) == resolved
    store.close()


def test_a_damaged_alert_row_this_member_holds_a_newer_change_of_is_left_to_its_save(
    store_url: str,
) -> None:
    """A member whose last checkpoint failed before a restore (a rebalance) holds the
    alert's unsaved change: it is still firing, and the member's next save rewrites
    the row."""
    store, pid, row = _damage_a_firing_alert(store_url)
    before = len(store.outbox_after("x", limit=10_000))
    p = Pipeline(CONFIG)
    p.alerts.changed[row.fingerprint] = pickle.loads(row.state)  # raised here, not stored yet
    cp = Checkpointer(store, p, group="g", producer="b")
    cp.restore([pid])
    assert row.fingerprint in p.alerts.firing
    assert len(store.outbox_after("x", limit=10_000)) == before
    cp.save()
    (stored,) = [a for a in store.firing_alerts() if a.fingerprint == row.fingerprint]
    assert pickle.loads(stored.state) == pickle.loads(row.state)
    store.close()


def test_state_of_another_format_is_set_aside_for_fresh_detectors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    pid = ("logs", 0)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    old = Pipeline(CONFIG)
    old.process(pid, stream_records()[:300])
    old.advance()
    monkeypatch.setattr(checkpoint, "STATE_FORMAT", 2)  # a release with another layout
    Checkpointer(store, old, group="g", producer="a").save()
    monkeypatch.undo()

    new = Pipeline(CONFIG)
    assert Checkpointer(store, new, group="g", producer="a").restore([pid]) == {pid: 300}
    assert "state format 2, this version reads 3, 4, 5, 6" in caplog.text
    assert "drift and confidence windows start afresh" in caplog.text
    assert len(new.partitions[pid].detectors[0]) == 0 and not any(k.slots for k in new.models.detectors)
    store.close()


def test_state_of_the_previous_format_is_read_and_a_rollback_to_it_starts_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Format 3 stored a packed client's plain state; this release reads it. A
    release of format 3 would misread the packed bytes of format 4: it refuses them."""
    from detectors.keyed import Keyed

    pid = ("logs", 0)
    config = build_config({"state": {"pack_idle_after_s": 1}}, env={})
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    old = Pipeline(config)
    records = stream_records()[:600]
    for start in range(0, len(records), 50):
        old.process(pid, records[start:start + 50])
    keyed = old.partitions[pid].detectors[0]
    assert any(s.packed is not None for s in keyed.slots.values())
    with monkeypatch.context() as m:  # what the release of format 3 wrote
        m.setattr(checkpoint, "STATE_FORMAT", 3)
        m.setattr(Keyed, "stored_slot", Keyed.export_slot)
        Checkpointer(store, old, group="g", producer="a").save()
    new = Pipeline(config)
    assert Checkpointer(store, new, group="g", producer="a").restore([pid]) == {pid: 600}
    restored = new.partitions[pid].detectors[0]
    assert [restored.export_slot(s) for s in restored.slots.values()] == [
        keyed.export_slot(s) for s in keyed.slots.values()]
    Checkpointer(store, new, group="g", producer="a").save()  # now in the current format

    monkeypatch.setattr(checkpoint, "READ_FORMATS", (3,))  # the release of format 3
    rolled_back = Pipeline(config)
    Checkpointer(store, rolled_back, group="g", producer="a").restore([pid])
    assert f"state format {checkpoint.STATE_FORMAT}, this version reads 3" in caplog.text
    assert len(rolled_back.partitions[pid].detectors[0]) == 0
    store.close()


def test_a_client_seen_after_a_restart_is_the_newest_after_the_next_restart(tmp_path: Path) -> None:
    pid = ("logs", 0)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    first = Pipeline(CONFIG)
    first.process(pid, stream_records()[:300])
    Checkpointer(store, first, group="g", producer="a").save()

    second = Pipeline(CONFIG)
    cp = Checkpointer(store, second, group="g", producer="a")
    cp.restore([pid])
    keyed = second.partitions[pid].detectors[0]
    model, oldest = next(iter(keyed.slots))
    ts = max(slot.last_ts for slot in keyed.slots.values()) + 1
    event = {"ts": ts, "model": model, "model_version": "1", "client_id": oldest}
    second.process(pid, [Record(300, msgspec.json.encode(event))])
    assert len(keyed) > 2 and list(keyed.slots)[-1] == (model, oldest)
    cp.save()

    third = Pipeline(CONFIG)
    Checkpointer(store, third, group="g", producer="a").restore([pid])
    assert list(third.partitions[pid].detectors[0].slots) == list(keyed.slots)
    store.close()


def test_the_longest_client_ids_a_producer_may_send_checkpoint_and_restore(store_url: str) -> None:
    pid = ("logs", 0)
    longest = CONFIG.events.max_string_length
    clients = ["\u00e9" * longest, "\U0001f600" * longest, "k" * longest]
    records = [Record(i, msgspec.json.encode({
        "ts": 1e9 + i, "model": "\u00e9" * longest, "model_version": "1", "client_id": c,
        "features": {"x": float(i)}})) for i, c in enumerate(clients)]
    store = Store(store_url)
    store.migrate()
    first = Pipeline(CONFIG)
    first.process(pid, records)
    assert len(first.partitions[pid].detectors[0]) == 3
    Checkpointer(store, first, group="g", producer="a").save()
    second = Pipeline(CONFIG)
    Checkpointer(store, second, group="g", producer="a").restore([pid])
    assert [c for _, c in second.partitions[pid].detectors[0].slots] == clients
    store.close()


def test_client_keys_are_stored_as_the_json_text_earlier_releases_wrote() -> None:
    """Rows are found by a hash of this text: a checkpoint written before the fast
    path must still be updated in place, not duplicated."""
    from monitor.checkpoint import _client

    for key in [("m", "c"), ("mødel", 'c"l\\i\n\u2603\U0001f600\x00'), ("m", 5), ("only",)]:
        assert _client(key) == json.dumps(key)


def test_client_rows_store_window_counts_as_bytes_and_no_parameters() -> None:
    """A client's row holds its window counts as bytes (cheap to pickle) and none of
    the detector's parameters (the clone it is read into has them), and reads back
    into the same state."""
    import pickle
    from array import array

    config = build_config({"detectors": {"rules": [
        {"name": "distinct", "kind": "extraction", "window_s": 60, "max_events": 3,
         "distinct": True}]}}, env={})
    p = Pipeline(config)
    p.process(("t", 0), stream_records()[:3000])
    keyed = p.partitions[("t", 0)].detectors[0]
    assert len(keyed.slots) >= 5

    def flat(value: object) -> list[object]:
        return [x for v in value for x in flat(v)] if isinstance(value, tuple) else [value]

    for slot in list(keyed.slots.values())[:5]:
        row = keyed.export_slot(slot)
        values = flat(row[5])
        assert not any(isinstance(v, array) for v in values)
        assert sum(isinstance(v, bytes) for v in values) >= 3  # rate, probing, rule windows
        # the parameters (a dozen per signal) stay out: smaller than every slot's value
        every_slot = tuple(sig.__getstate__() for sig in slot.detector.signals)
        assert len(values) < len(flat(every_slot)) - 20
        twin = keyed.prototype.clone()
        twin.import_state(pickle.loads(pickle.dumps(row[5])))
        assert twin.evidence() == slot.detector.evidence()
        assert keyed.export_slot(slot)[5] == twin.export_state()


def test_packed_clients_are_stored_and_restored_as_their_packed_bytes(store_url: str) -> None:
    """A client idle long enough to be packed is written as its packed bytes and read
    back as them (no unpacking to store it, no packing to restore it): the same
    state either way."""
    import pickle

    config = build_config({"state": {"pack_idle_after_s": 1}}, env={})
    records = [Record(i, msgspec.json.encode({
        "ts": 1_767_225_600 + 60 * (i // 100) + i % 100 / 10, "model": "m", "model_version": "1",
        "client_id": f"c{i // 4}", "confidence": 0.5,
        "features": {f"f{j}": (i % 7) * j / 10 for j in range(8)}})) for i in range(300)]
    pid = ("logs", 0)
    p = Pipeline(config)
    for start in range(0, len(records), 100):  # a minute apart: the idle are packed at each
        p.process(pid, records[start:start + 100])
    keyed = p.partitions[pid].detectors[0]
    packed = {k: s.packed for k, s in keyed.slots.items() if s.packed is not None}
    assert len(packed) >= 3
    exported = [keyed.export_slot(s) for s in keyed.slots.values()]

    store = Store(store_url)
    store.migrate()
    Checkpointer(store, p, group="g", producer="a").save()
    rows = {json.loads(c)[1]: pickle.loads(b) for d, c, b in store.load_clients("partition:g:logs:0")
            if d == 0}
    assert all(rows[k[1]][5] == blob for k, blob in packed.items())

    again = Pipeline(config)
    Checkpointer(store, again, group="g", producer="a").restore([pid])
    restored = again.partitions[pid].detectors[0]
    # (a restore packs every client idle by then, so a few more than were packed)
    assert all(restored.slots[k].packed == blob for k, blob in packed.items())
    assert [restored.export_slot(s) for s in restored.slots.values()] == exported
    store.close()


@pytest.mark.parametrize("command", [["alerts", "list"], ["reference", "list"], ["jobs", "status"],
                                     ["compare", "--list"], ["report", "drift"]])
def test_store_commands_say_in_one_line_that_the_store_is_away(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    from monitor.broker import free_port
    from monitor.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(f"store: {{url: 'postgresql://iw:hunter2@127.0.0.1:{free_port()}/x'}}\n")
    assert main([*command, "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("inferwatch: cannot use the store (store.url): ")
    assert "Traceback" not in err and "hunter2" not in err


@pytest.mark.parametrize("url_setting", ["", "?connect_timeout=2"])
def test_a_database_that_never_answers_fails_the_connect_in_seconds(url_setting: str) -> None:
    # a listener that never accepts: the TCP handshake completes (the kernel's
    # backlog), the server never says a word, as when a route to it goes dead
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        store = Store(f"postgresql://inferwatch@127.0.0.1:{port}/test{url_setting}")
        started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError, match="timeout"):
            store.migrate()
        took = time.monotonic() - started
        store.close()
    limit = 2 if url_setting else POSTGRES_CONNECT_ARGS["connect_timeout"]
    assert limit - 0.5 < took < limit + 5, "the URL's own connect_timeout wins over the default"
