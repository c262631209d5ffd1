"""Faults the daemon must ride out without losing or doubling an alert: the
database going away, the broker going away, and group members coming and going."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kafka import KafkaAdminClient

from monitor.broker import EmbeddedBroker
from monitor.checkpoint import Checkpointer
from monitor.config import build_config
from monitor.pipeline import Pipeline
from monitor.store import Store
from tests.integration.proxy import ProxiedBroker, TcpProxy, join_while_the_store_is_away
from tests.integration.s3 import LocalS3
from tests.integration.scenario import good_events
from tests.kafka_helpers import (
    DaemonThread,
    canonical,
    daemon_config,
    encode_events,
    produce,
    read_alerts,
    replayed_alerts,
    small_detectors,
    start_daemon,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}


def _consumed(d: DaemonThread) -> dict[int, int]:
    return {pid[1]: s.offset for pid, s in list(d.daemon.pipeline.partitions.items())
            if s.offset is not None}


def _metric(d: DaemonThread, name: str) -> float:
    return d.daemon.metrics.registry.get_sample_value(name) or 0.0


def test_database_outage_pauses_commits_keeps_state_and_catches_up_with_nothing_lost(
    broker: EmbeddedBroker, topic: str, tmp_path: Path, pg_url: str, kafka_client: str
) -> None:
    events = good_events()
    ends = produce(broker.bootstrap, topic, encode_events(events))
    jsonl = tmp_path / "alerts.jsonl"
    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        url = proxy.route(pg_url)
        group = f"dbfault-{kafka_client}"
        cfg = daemon_config(broker.bootstrap, topic, url, jsonl, group=group,
                            detectors=small_detectors(),
                            # as in _outage_config: 30 s for each partition to deliver
                            # again after the pause before it stops holding the windows
                            kafka={"max_poll_records": 50, "idle_partition_s": 30,
                                   "client": kafka_client},
                            checkpoint={"interval_s": 0.2, "retry_max_s": 2.0})
        d = start_daemon(cfg)
        try:
            wait_until(lambda: sum(_consumed(d).values()) > 0, 60, "the first records read")
            proxy.cut()
            committed = _committed(broker.bootstrap, group, topic)
            states = dict(d.daemon.pipeline.partitions)
            wait_until(lambda: _metric(d, "inferwatch_checkpoint_failures_total") >= 2, 30,
                       "failed checkpoints while the database is away")
            assert not d.daemon.ready()[0], "ready while the store is unreachable"
            paused_at = _consumed(d)
            time.sleep(3)
            # paused: nothing more read, nothing committed, state kept in memory
            assert _consumed(d) == paused_at
            assert sum(paused_at.values()) < sum(ends.values()), "the outage came too late"
            assert _committed(broker.bootstrap, group, topic) == committed
            assert all(d.daemon.pipeline.partitions[p] is s for p, s in states.items())
            failures = _metric(d, "inferwatch_checkpoint_failures_total")
            assert failures <= 6, f"{failures} attempts in ~4 s: no backoff"

            proxy.restore()
            wait_until(lambda: _committed(broker.bootstrap, group, topic) == ends, 60,
                       "catching up once the database is back")
            wait_until(lambda: d.daemon.ready()[0], 10, "ready again")
            time.sleep(1.0)  # let the dispatcher drain the outbox
        finally:
            d.stop()

    ok = d.daemon.metrics.registry.get_sample_value
    counted = sum(ok("inferwatch_events_total", {"model": m, "result": "ok"}) or 0
                  for m in ("fraud-scorer", "churn-model"))
    assert counted == len(events), "events lost or read twice"
    assert canonical(read_alerts(jsonl)) == canonical(replayed_alerts(tmp_path, cfg, events))


def test_after_a_store_outage_appended_records_are_not_late_nor_a_quiet_partition_holding(
    broker: EmbeddedBroker, topic: str, tmp_path: Path, pg_url: str, kafka_client: str
) -> None:
    # Consumption pauses while the store is away, and a paused partition is not
    # fetched: the end its client knows goes stale. One that had read everything
    # must still hold the windows until it has delivered what came meanwhile, or the
    # first partition to deliver closes the windows the others' records belong to.
    # A partition that gets nothing (here: a second topic's) stops holding them
    # idle_partition_s after the pause, or no window would close after a quiet spell.
    events = good_events()
    half = len(events) // 2
    first_ends = produce(broker.bootstrap, topic, encode_events(events[:half]))
    quiet = f"{topic}-quiet"
    broker.create_topic(quiet, 1)
    jsonl = tmp_path / "alerts.jsonl"
    group = f"dbgap-{kafka_client}"
    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        # small fetches: once resumed, one poll brings one partition's records
        cfg = daemon_config(broker.bootstrap, topic, proxy.route(pg_url), jsonl, group=group,
                            detectors=small_detectors(),
                            kafka={"topics": [topic, quiet], "max_poll_records": 20,
                                   "fetch_max_bytes": 4096, "max_partition_fetch_bytes": 2048,
                                   "client": kafka_client},
                            checkpoint={"interval_s": 0.2, "retry_max_s": 2.0})
        d = start_daemon(cfg)
        try:
            wait_until(lambda: _consumed(d) == first_ends and d.daemon.ready()[0], 60,
                       "the first half read")
            proxy.cut()
            wait_until(lambda: _metric(d, "inferwatch_checkpoint_failures_total") >= 1, 30,
                       "a failed checkpoint")
            ends = produce(broker.bootstrap, topic, encode_events(events[half:]))
            time.sleep(1)
            assert _consumed(d) == first_ends, "consumption went on without the store"
            proxy.restore()
            _catch_up(d, broker.bootstrap, group, topic, ends)
            time.sleep(11)  # more than kafka.idle_partition_s (10 s): every partition silent
            last = max(events, key=lambda e: e["ts"])
            events.append({**last, "ts": last["ts"] + 1.0, "request_id": "after-a-spell"})
            ends |= produce(broker.bootstrap, topic, encode_events(events[-1:]))
            wait_until(lambda: d.daemon.pipeline.models.watermark == events[-1]["ts"], 15,
                       "the windows closed up to the event after the quiet spell")
            _catch_up(d, broker.bootstrap, group, topic, ends)
        finally:
            d.stop()
    _assert_replayed_alerts(d, tmp_path, cfg, events, jsonl)


def test_a_stop_while_the_state_waits_for_the_store_is_quick_and_stores_nothing(
    tmp_path: Path, pg_url: str, kafka_client: str, caplog: pytest.LogCaptureFixture
) -> None:
    # the partitions are assigned while the database is away: their state cannot be
    # restored, and the daemon retries with backoff before they fetch. A stop ends
    # that wait, and nothing is stored: what the pipeline holds is not the stored
    # state, and storing it would overwrite that state with a blank one.
    pb = ProxiedBroker(tmp_path)
    try:
        pb.create_topic("restoring", 3)
        produce(pb.bootstrap, "restoring", encode_events(good_events()))
        with TcpProxy(("127.0.0.1", 5432)) as store:
            cfg = daemon_config(pb.bootstrap, "restoring", store.route(pg_url),
                                tmp_path / "alerts.jsonl", group=f"restoring-{kafka_client}",
                                detectors=small_detectors(),
                                kafka={"session_timeout_ms": 3000, "client": kafka_client},
                                checkpoint={"interval_s": 0.2, "retry_max_s": 30.0})
            d = join_while_the_store_is_away(pb, store, cfg, lambda: caplog.text)
            try:
                assert not d.daemon.ready()[0]
                time.sleep(2)  # into the retries' backoff (1, 2, 4 s ...)
                stopping = time.monotonic()
                d.daemon.stopping.set()
            finally:
                d.stop()
            # the store stays away until the daemon is gone: restored any earlier, a retry
            # in flight at the stop could still restore the state, and storing a restored
            # state is right, so the test would fail on timing alone
            store.restore()
            assert time.monotonic() - stopping < 10, "stopping waits on the store"
            assert "nothing is stored" in caplog.text
            _let_leaving_finish(pb)
    finally:
        pb.close()
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT count(*) FROM checkpoints")).scalar()
    finally:
        engine.dispose()
    assert stored == 0, "a state that was never restored was stored"


def _outage_config(bootstrap: str, topic: str, tmp_path: Path, jsonl: Path, group: str,
                   kafka_client: str, **kafka: Any) -> dict[str, Any]:
    """A daemon config that reads in small polls and checkpoints often, so that an
    outage finds it mid-stream. After the outage a partition holds the model-wide
    windows until it delivers again, for at most ``idle_partition_s``: 30 s here, not
    the default 10 s, as the two cores may be shared with three other tests and the
    alerts must equal a replay's (a partition delivering later is late by design)."""
    return daemon_config(bootstrap, topic, f"sqlite:///{tmp_path / 's.db'}", jsonl, group=group,
                         detectors=small_detectors(),
                         kafka={"max_poll_records": 20, "session_timeout_ms": 3000,
                                "idle_partition_s": 30, "client": kafka_client, **kafka},
                         checkpoint={"interval_s": 0.2})


def _wait_consuming(d: DaemonThread) -> None:
    wait_until(lambda: sum(_consumed(d).values()) > 0 and d.daemon.ready()[0], 60,
               "the daemon consuming and ready")


def _waited_on(d: DaemonThread) -> float | None:
    """The partitions the watermark waits for, as the daemon's /metrics says."""
    return d.daemon.metrics.registry.get_sample_value("inferwatch_watermark_partitions")


def _catch_up(d: DaemonThread, bootstrap: str, group: str, topic: str,
              ends: dict[int, int]) -> None:
    """Wait for the daemon to have committed the whole topic and be ready again, and
    for no partition to hold the model-wide windows any more: one that had nothing
    left after the outage holds them for ``idle_partition_s`` (its end may be stale)."""
    wait_until(lambda: _committed(bootstrap, group, topic) == ends, 120,
               "the daemon to reconnect and consume the rest")
    wait_until(lambda: d.daemon.ready()[0], 30, "ready again")
    wait_until(lambda: _waited_on(d) == 0, 45,
               "every partition caught up and none holding the windows")
    time.sleep(1.0)


def _assert_replayed_alerts(d: DaemonThread, tmp_path: Path, cfg: dict[str, Any],
                            events: list[dict[str, Any]], jsonl: Path) -> None:
    """Every event counted (at least once: a re-read after a rejoin is allowed), and
    exactly the alert records a replay of the same events raises."""
    ok = d.daemon.metrics.registry.get_sample_value
    counted = sum(ok("inferwatch_events_total", {"model": m, "result": "ok"}) or 0
                  for m in ("fraud-scorer", "churn-model"))
    assert counted >= len(events)
    assert canonical(read_alerts(jsonl)) == canonical(replayed_alerts(tmp_path, cfg, events))


def test_broker_outage_makes_the_daemon_unready_then_it_resumes_from_committed_offsets(
    tmp_path: Path, kafka_client: str
) -> None:
    pb = ProxiedBroker(tmp_path)
    try:
        topic = "outage"
        pb.create_topic(topic, 3)
        events = good_events()
        ends = produce(pb.bootstrap, topic, encode_events(events))
        jsonl = tmp_path / "alerts.jsonl"
        cfg = _outage_config(pb.bootstrap, topic, tmp_path, jsonl, "outage", kafka_client)
        d = start_daemon(cfg)
        try:
            _wait_consuming(d)
            pb.proxy.cut()
            wait_until(lambda: not d.daemon.ready()[0], 30,
                       "/readyz to say not ready while the broker is unreachable")
            if kafka_client == "kafka-python":  # librdkafka may have fetched it all before
                stuck = _consumed(d)
                assert sum(stuck.values()) < sum(ends.values()), "the outage came too late"
            time.sleep(2)
            assert d.thread.is_alive()
            assert d.daemon.healthy()[0], "the loop must stay alive (liveness) during the outage"
            pb.proxy.restore()
            _catch_up(d, pb.bootstrap, "outage", topic, ends)
        finally:
            d.stop()
        _assert_replayed_alerts(d, tmp_path, cfg, events, jsonl)
    finally:
        pb.close()


def test_a_daemon_started_before_the_broker_waits_unready_stops_quickly_and_then_consumes(
    tmp_path: Path, kafka_client: str
) -> None:
    """Kubernetes may start the pod before the brokers answer: the daemon stays
    alive and not ready, a SIGTERM meanwhile stops it within seconds (kafka-python
    blocks in its bootstrap until ``bootstrap_timeout_ms``, 30 s by default), and once
    the broker listens it joins and reads the topic."""
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log")
    events = good_events()[:600]
    jsonl = tmp_path / "alerts.jsonl"
    cfg = daemon_config(broker.bootstrap, "early", f"sqlite:///{tmp_path / 's.db'}", jsonl,
                        group="early", kafka={"client": kafka_client})
    d = start_daemon(cfg)
    time.sleep(2)
    assert d.thread.is_alive() and d.daemon.healthy()[0]
    assert not d.daemon.ready()[0]
    started = time.monotonic()
    d.stop()
    assert time.monotonic() - started < 8, "a stop must not wait for the Kafka bootstrap"

    d = start_daemon(cfg)
    try:
        time.sleep(1)
        with broker:
            broker.create_topic("early", 3)
            ends = produce(broker.bootstrap, "early", encode_events(events))
            wait_until(lambda: _consumed(d) == ends, 60, "the daemon to read the topic")
            assert d.daemon.ready()[0]
    finally:
        d.stop()


def test_partitions_assigned_again_after_an_outage_hold_the_windows_until_they_deliver(
    tmp_path: Path,
) -> None:
    """librdkafka loses the group in a broker outage longer than the session timeout,
    and is assigned the partitions again when the broker is back. The ends it cached
    before may be stale (records appended meanwhile): each partition counts as behind,
    holding the model-wide windows, until it delivers or ``idle_partition_s`` passes,
    or the first to deliver would close windows the others' records belong to."""
    pb = ProxiedBroker(tmp_path)
    try:
        pb.create_topic("again", 3)
        ends = produce(pb.bootstrap, "again", encode_events(good_events()[:600]))
        cfg = _outage_config(pb.bootstrap, "again", tmp_path, tmp_path / "alerts.jsonl",
                             "again", "confluent-kafka")
        d = start_daemon(cfg)
        try:
            wait_until(lambda: _consumed(d) == ends and d.daemon.ready()[0], 60, "the topic read")
            pb.proxy.cut()
            wait_until(lambda: not d.daemon.pipeline.partitions, 30,
                       "the partitions revoked, the group lost")
            pb.proxy.restore()
            wait_until(lambda: len(d.daemon.pipeline.partitions) == 3 and d.daemon.restored,
                       60, "the partitions assigned again")
            # nothing was appended, so nothing delivers: the cached ends say caught up,
            # but every partition holds the windows (for kafka.idle_partition_s)
            wait_until(lambda: _waited_on(d) == 3, 10, "the windows held by all three")
        finally:
            d.stop()
    finally:
        pb.close()


@pytest.mark.parametrize("stop", ["once-unready", "at-once"])
def test_a_broker_that_drops_packets_makes_the_daemon_unready_and_stopping_stays_quick(
    tmp_path: Path, kafka_client: str, stop: str
) -> None:
    # a black hole, not a refusal: the connections stay open and nothing comes back.
    # Stopped at once, before the clients notice, the shutdown's offset commit goes
    # to the silent broker.
    pb = ProxiedBroker(tmp_path)
    try:
        pb.create_topic("silent", 3)
        produce(pb.bootstrap, "silent", encode_events(good_events()))
        cfg = _outage_config(pb.bootstrap, "silent", tmp_path, tmp_path / "alerts.jsonl",
                             "silent", kafka_client)  # a session timeout of 3 s
        d = start_daemon(cfg)
        try:
            _wait_consuming(d)
            pb.proxy.stall()
            if stop == "once-unready":
                wait_until(lambda: not d.daemon.ready()[0], 15,
                           "/readyz to say not ready while the broker is silent")
                time.sleep(2)
                assert d.daemon.healthy()[0]
                assert time.monotonic() - d.daemon.last_loop < 1.5, "the loop waits on the broker"
            stopping = time.monotonic()
        finally:
            d.stop()
        # the state is stored first; committing and leaving wait a session timeout at most
        assert time.monotonic() - stopping < 10, "stopping waits on the silent broker"
        _let_leaving_finish(pb)
    finally:
        pb.close()


def _let_leaving_finish(pb: ProxiedBroker) -> None:
    """Bring the broker back so that a client still leaving the group finishes (and
    stops retrying) before the broker goes: the silent connections are cut, so the
    requests lost in them fail at once instead of after a request timeout."""
    pb.proxy.cut()
    pb.proxy.restore()
    for thread in threading.enumerate():
        if thread.name == "leave-group":
            thread.join(30)


def test_broker_killed_and_restarted_on_its_storage_resumes_with_nothing_lost_or_doubled(
    tmp_path: Path, kafka_client: str
) -> None:
    # A real restart, not a cut connection: the broker process is SIGKILLed under the
    # daemon, and a new one starts on the same port and S3 storage (topics, records
    # and committed offsets survive it; group membership does not). Half the events
    # go in before the kill, half while the daemon's broker is down: through a broker
    # on another port and the same storage, so that they are all in the log when the
    # daemon reconnects. (Produced while it consumes, a partition caught up on its
    # chunk of this compressed timeline would get its next chunk after the others
    # had closed the windows: late by design, README "Operations", and unlike a
    # replay.)
    with LocalS3(tmp_path / "s3.log") as s3:
        broker = EmbeddedBroker(storage=s3.storage, env=s3.env,
                                log_path=tmp_path / "broker.log").start()
        try:
            topic = "restart"
            broker.create_topic(topic, 3)
            events = good_events()
            half = len(events) // 2
            first_ends = produce(broker.bootstrap, topic, encode_events(events[:half]))
            jsonl = tmp_path / "alerts.jsonl"
            # small fetches: after the restart one poll brings one partition's records
            cfg = _outage_config(broker.bootstrap, topic, tmp_path, jsonl, "restart",
                                 kafka_client, fetch_max_bytes=4096,
                                 max_partition_fetch_bytes=2048)
            d = start_daemon(cfg)
            try:
                # every partition caught up: the ends the client knows are those of
                # before the kill, and the first to deliver after it must not close the
                # windows the others' second halves still belong to
                wait_until(lambda: _consumed(d) == first_ends and d.daemon.ready()[0], 60,
                           "the first half read")
                assert broker.proc is not None
                broker.proc.kill()
                broker.proc.wait()
                wait_until(lambda: not d.daemon.ready()[0], 30,
                           "/readyz to say not ready while the broker is down")
                time.sleep(2)
                assert d.thread.is_alive() and d.daemon.healthy()[0]
                writer = EmbeddedBroker(storage=s3.storage, env=s3.env,
                                        log_path=tmp_path / "writer.log").start()
                try:
                    ends = produce(writer.bootstrap, topic, encode_events(events[half:]))
                finally:
                    writer.stop()
                # the second half's offsets follow the first half's: the log survived
                assert sum(ends.values()) == len(events)
                broker.start()
                _catch_up(d, broker.bootstrap, "restart", topic, ends)
            finally:
                d.stop()
        finally:
            broker.stop()
    _assert_replayed_alerts(d, tmp_path, cfg, events, jsonl)


def test_librdkafka_member_is_unready_as_soon_as_every_broker_is_down(tmp_path: Path) -> None:
    # With a session timeout of 20 s the group keeps the member's partitions through
    # a short outage: readiness within 10 s must come from librdkafka's own report.
    pb = ProxiedBroker(tmp_path)
    try:
        pb.create_topic("down", 1)
        produce(pb.bootstrap, "down", encode_events(good_events()[:200]))
        cfg = daemon_config(pb.bootstrap, "down", f"sqlite:///{tmp_path / 's.db'}",
                            tmp_path / "alerts.jsonl", group="down",
                            kafka={"client": "confluent-kafka", "session_timeout_ms": 20_000,
                                   "max_poll_interval_ms": 20_000},
                            checkpoint={"interval_s": 0.2})
        d = start_daemon(cfg)
        try:
            # with offsets to commit at every checkpoint, each 0.2 s
            wait_until(lambda: d.daemon.ready()[0] and _consumed(d) == {0: 200}, 60,
                       "the daemon ready, the topic read")
            cut_at = time.monotonic()
            pb.proxy.cut()
            wait_until(lambda: not d.daemon.ready()[0], 10, "/readyz to say not ready")
            assert d.daemon.source is not None and d.daemon.source.assignment()
            assert "cannot consume" in d.daemon.ready()[1]
            assert time.monotonic() - cut_at < 10
            # no checkpoint may hold the loop waiting for the broker's answer to its
            # offset commit (a minute, in librdkafka: liveness would fail)
            time.sleep(3)
            assert time.monotonic() - d.daemon.last_loop < 1.5, "the loop waits on a commit"
            pb.proxy.restore()
            wait_until(lambda: d.daemon.ready()[0], 30, "ready again once the broker is back")
        finally:
            d.stop()
    finally:
        pb.close()


def test_a_member_joining_and_leaving_mid_stream_loses_and_doubles_no_alert(
    broker: EmbeddedBroker, tmp_path: Path, pg_url: str, kafka_client: str
) -> None:
    topic = f"rebal-{time.time_ns() % 10**8}"
    broker.create_topic(topic, 4)
    events = good_events()
    ends = produce(broker.bootstrap, topic, encode_events(events))
    files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    # a group of its own: the test broker (Tansu) can keep a departed member of an
    # earlier test's group as its leader, and then no later member gets an assignment
    group = f"rebal-{kafka_client}"

    def cfg(f: Path) -> dict[str, Any]:
        return daemon_config(broker.bootstrap, topic, pg_url, f, instance=f.stem, group=group,
                             detectors=small_detectors(),
                             kafka={"max_poll_records": 20, "client": kafka_client},
                             checkpoint={"interval_s": 0.2})

    a = start_daemon(cfg(files[0]))
    try:
        wait_until(lambda: sum(_consumed(a).values()) > 0.1 * sum(ends.values()), 60,
                   "the first member to get going")
        b = start_daemon(cfg(files[1]))
        try:
            wait_until(lambda: bool(b.daemon.pipeline.partitions), 60, "the second member's share")
            assert sum(_consumed(a).values()) < sum(ends.values()), "joined too late to matter"
            time.sleep(1.0)
        finally:
            b.stop()  # leaves the group: its partitions go back to the first member
        wait_until(lambda: _committed(broker.bootstrap, group, topic) == ends, 90,
                   "the first member to finish the topic")
        time.sleep(1.0)
    finally:
        a.stop()

    def per_client(records: list[dict]) -> list[bytes]:
        return canonical([r for r in records if "client_id" in r["subject"]])

    together = [r for f in files for r in read_alerts(f)]
    single = replayed_alerts(tmp_path, cfg(tmp_path / "x.jsonl"), events)
    assert per_client(single), "the scenario must raise per-client alerts"
    assert per_client(together) == per_client(single)


def test_a_member_whose_partitions_another_took_stops_storing_and_reading_them(
    broker: EmbeddedBroker, topic: str, tmp_path: Path, pg_url: str
) -> None:
    """A member the group evicted while it still reaches the store (its path to Kafka
    gone): once another member has restored its partitions, its checkpoints drop
    them, unstored, and the records it still fetches for them are not its own; nor
    does its /metrics report their lag (the revoke that also clears it comes only
    once it reaches Kafka again)."""
    events = good_events()
    half = len(events) // 2
    produce(broker.bootstrap, topic, encode_events(events[:half]))
    group = "evicted"
    cfg = daemon_config(broker.bootstrap, topic, pg_url, tmp_path / "alerts.jsonl",
                        group=group, detectors=small_detectors(),
                        checkpoint={"interval_s": 0.2})
    d = start_daemon(cfg)
    try:
        wait_until(lambda: len(_consumed(d)) == 3, 60, "every partition read")
        pids = list(d.daemon.pipeline.partitions)

        def lags() -> list[float | None]:
            sample = d.daemon.metrics.registry.get_sample_value
            return [sample("inferwatch_consumer_lag", {"topic": t, "partition": str(n)})
                    for t, n in pids]

        wait_until(lambda: None not in lags(), 30, "every partition's lag reported")
        store = Store(pg_url)
        new_owner = Checkpointer(store, Pipeline(build_config(cfg, env={})), group=group,
                                 producer="other")
        # read is not stored: a partition taken before its first checkpoint has nothing
        # stored to compare with
        wait_until(lambda: all(store.load_checkpoint(new_owner.partition_scope(pid))
                               for pid in pids), 30, "every partition checkpointed")
        taken = new_owner.restore(pids)
        wait_until(lambda: not d.daemon.pipeline.partitions, 10, "the taken partitions dropped")
        wait_until(lambda: lags() == [None, None, None], 5, "their lag no longer reported")
        produce(broker.bootstrap, topic, encode_events(events[half:]))
        time.sleep(3)  # fetched by the evicted member, which still holds the assignment
        assert not d.daemon.pipeline.partitions
        assert {pid: store.load_checkpoint(new_owner.partition_scope(pid)).next_offset
                for pid in pids} == taken
        store.close()
    finally:
        d.stop()
