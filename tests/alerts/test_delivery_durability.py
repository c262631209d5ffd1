"""Nothing is lost to a restart, and nothing is sent twice: the outbox, the
notification queue and the posted-message map live in the real store."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from alerts.model import delivery_key
from alerts.notify import Notifier
from alerts.outbox import Dispatcher, OutboxEntry
from monitor.config import build_config
from monitor.daemon import Daemon
from monitor.metrics import Metrics
from monitor.pipeline import Record
from monitor.source import open_source
from monitor.store import Store, StoredAlert
from tests.alerts.fake_slack import Failure, FakeSlack
from tests.alerts.helpers import T0, Alerts, Clock, make_notifier, run
from tests.integration.proxy import ProxiedBroker, TcpProxy
from tests.kafka_helpers import daemon_config

pytestmark = pytest.mark.integration  # PostgreSQL too


def _fill_outbox(store: Store, records: list[str]) -> None:
    """What a checkpoint stores: the records, and each alert's latest state."""
    latest = {json.loads(r)["fingerprint"]: r for r in records}
    stored = [StoredAlert(fp, json.loads(r)["status"], r, b"") for fp, r in latest.items()]
    meta = {}
    for fp, r in latest.items():
        rec = json.loads(r)
        meta[fp] = {"alert_id": rec["id"], "detector": rec["detector"], "kind": rec["kind"],
                    "severity": rec["severity"], "model": rec["model"],
                    "first_seen": datetime.fromisoformat(rec["first_seen"]).timestamp(),
                    "last_seen": datetime.fromisoformat(rec["last_seen"]).timestamp()}
    entries = [OutboxEntry(delivery_key("g", json.loads(r)), json.loads(r)["fingerprint"], r)
               for r in records]
    store.save_checkpoint("replica-a", {}, entries, stored, meta)


def test_restart_with_a_full_outbox_delivers_every_notification_once_in_order(
        store_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    route = {"receiver": "security", "group_by": ["client_id"], "group_wait_s": 0,
             "group_interval_s": 60}
    clients = [f"key-{i:02d}" for i in range(12)]
    firing = [alerts.fire(c, ts=T0 + i) for i, c in enumerate(clients)]
    resolved = [alerts.resolve(c, ts=T0 + 100 + i) for i, c in enumerate(clients[:4])]

    # first life: Slack is down; the alerts reach the outbox and the send queue only
    store = Store(store_url)
    store.migrate()
    _fill_outbox(store, firing)
    slack.down = Failure(503)
    n1 = make_notifier(store_url, slack, clock, instance="replica-a", route=route)
    d1 = Dispatcher(store, [n1], "replica-a", clock=clock)
    for _ in range(5):
        d1.deliver()
        clock.advance(1)
    _fill_outbox(store, resolved)  # more alerts while it is still down
    run(n1, clock, 3)
    assert slack.posts() == [] and n1.queue_depth("security") == 12
    n1.engine.dispose()
    store.close()

    # second life (same replica id, fresh objects): Slack is back
    slack.down = None
    clock.advance(60)
    store2 = Store(store_url)
    store2.migrate()
    metrics = Metrics()
    n2 = make_notifier(store_url, slack, clock, instance="replica-a", metrics=metrics,
                       route=route)
    d2 = Dispatcher(store2, [n2], "replica-a", clock=clock)
    for _ in range(120):
        d2.deliver()
        clock.advance(1)
    tops = [p.body["text"] for p in slack.posts() if "thread_ts" not in p.body]
    assert [next(c for c in clients if c in t) for t in tops] == clients  # once, in order
    updates = slack.calls("chat.update")
    assert len(updates) == 4  # the four resolved ones, edited in place
    resolved_ts = {u.body["ts"] for u in updates}
    assert {ts for ts, m in slack.messages.items() if "RESOLVED" in m["text"]} == resolved_ts
    assert n2.queue_depth("security") == 0
    assert store2.outbox_depth("notifier") == 0

    # a third start finds nothing left to send
    before = len(slack.calls())
    n3 = make_notifier(store_url, slack, clock, instance="replica-a", route=route)
    d3 = Dispatcher(Store(store_url), [n3], "replica-a", clock=clock)
    d3.deliver()
    run(n3, clock, 120, step=5)
    assert len(slack.calls()) == before


def test_a_message_posted_just_before_the_database_went_away_is_not_posted_again(
        pg_url: str, slack: FakeSlack) -> None:
    """Slack took the message, then the store could not record it: the notifier
    records it once the store is back instead of posting it a second time."""
    clock, alerts = Clock(), Alerts()
    route = {"receiver": "security", "group_by": ["client_id"], "group_wait_s": 0}
    clients = ["key-a", "key-b", "key-c"]
    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        url = proxy.route(pg_url)
        store = Store(url)
        store.migrate()
        _fill_outbox(store, [alerts.fire(c, ts=T0 + i) for i, c in enumerate(clients)])
        notifier = make_notifier(url, slack, clock, instance="replica-a", route=route)
        slack.after_post = lambda: (proxy.cut(), setattr(slack, "after_post", None))
        dispatcher = Dispatcher(store, [notifier], "replica-a", clock=clock)
        for _ in range(5):  # the store is away from the first post on
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                dispatcher.deliver()
            clock.advance(1)
        assert len(slack.posts()) == 1 and proxy.refused
        proxy.restore()
        for _ in range(30):
            dispatcher.deliver()
            clock.advance(1)
        tops = [p.body["text"] for p in slack.posts()]
        assert sorted(next(c for c in clients if c in t) for t in tops) == clients
        assert notifier.queue_depth("security") == 0
        store.close()


@pytest.mark.slow
def test_a_stop_whose_last_checkpoint_fails_still_records_the_message_in_flight(
        tmp_path: Path, slack: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    """SIGTERM while Kafka has not acknowledged a dead-letter copy (the final
    checkpoint fails) and Slack has not answered yet: the stop waits for the
    answer and records it, so the restart does not post the alert again; the
    Kafka client's failure to close is a warning, not a dead thread."""
    pb = ProxiedBroker(tmp_path)
    try:
        pb.create_topic("in", 1)
        pb.create_topic("in-dlq", 1)
        cfg = daemon_config(pb.bootstrap, "in", f"sqlite:///{tmp_path / 's.db'}",
                            tmp_path / "alerts.jsonl", instance="replica-a",
                            group="stop-in-flight", kafka={"dead_letter_topic": "in-dlq"})
        cfg["alerts"] |= {"slack": {"token": "xoxb-test", "base_url": slack.base_url},
                          "route": {"receiver": "ml", "group_wait_s": 0},
                          "send_budget_s": 0.2}

        def daemon() -> Daemon:
            config = build_config(cfg, env={})
            d = Daemon(config)
            d.store.migrate()
            d.store_ok = True
            d.source = open_source(config.kafka, on_assign=dict.fromkeys,
                                   on_revoke=lambda pids: None)
            return d

        first = daemon()
        _fill_outbox(first.store, [Alerts().fire("key-1")])
        slack.latency_s = 2.0  # longer than the send budget: the post stays in flight
        first.dispatcher.deliver()
        assert not slack.posts(), "the post is not in flight"
        pb.proxy.cut()  # Kafka away: the dead-letter copy is not acknowledged
        first.source.dead_letter(("in", 0), Record(0, b"{", b"k"), "not_json", "bad")
        first._shutdown()
        assert first.dead_letters_waiting == 1  # the final checkpoint failed
        assert len(slack.posts()) == 1
        assert "closing the Kafka clients failed (KafkaTimeoutError" in caplog.text

        pb.proxy.restore()
        slack.latency_s = 0.0
        second = daemon()
        (notifier,) = (s for s in second.sinks if isinstance(s, Notifier))
        for _ in range(10):
            second.dispatcher.deliver()
            time.sleep(0.1)
        assert notifier.queue_depth("ml") == 0
        assert len(slack.posts()) == 1, "the restart posted the alert again"
        second._shutdown()
    finally:
        pb.close()


def test_only_the_lease_holder_sends(store_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    route = {"receiver": "security", "group_wait_s": 0}
    a = make_notifier(store_url, slack, clock, instance="a", route=route)
    b = make_notifier(store_url, slack, clock, instance="b", route=route)
    store = Store(store_url)
    _fill_outbox(store, [alerts.fire("key-1")])
    da = Dispatcher(store, [a], "a", clock=clock)
    db_ = Dispatcher(store, [b], "b", clock=clock)
    for _ in range(5):
        da.deliver()
        db_.deliver()
        clock.advance(1)
    assert len(slack.posts()) == 1
    # a dies; once its lease runs out, b takes over and sends what comes next
    _fill_outbox(store, [alerts.fire("key-2")])
    clock.advance(31)
    for _ in range(70):
        db_.deliver()
        clock.advance(5)
    assert [("key-1" in p.body["text"], "key-2" in p.body["text"]) for p in slack.posts()] == [
        (True, False), (False, True)]


def test_switching_slack_on_for_an_old_store_notifies_only_what_still_fires(
        store_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    store = Store(store_url)
    store.migrate()
    _fill_outbox(store, [alerts.fire("old-1"), alerts.resolve("old-1", ts=T0 + 600),
                         alerts.fire("live-2", ts=T0 + 700)])
    n = make_notifier(store_url, slack, clock, instance="replica-a")
    d = Dispatcher(store, [n], "replica-a", clock=clock)
    d.deliver()
    run(n, clock, 40)
    assert [("live-2" in p.body["text"]) for p in slack.posts()] == [True]
    # what comes next is notified as usual
    _fill_outbox(store, [alerts.fire("new-3", ts=T0 + 800)])
    d.deliver()
    run(n, clock, 400, step=10)
    assert sum("new-3" in p.body["text"] for p in slack.posts()) == 1


def test_cleanup_forgets_old_sent_notifications_but_keeps_live_threads(
        store_url: str, slack: FakeSlack) -> None:
    import sqlalchemy as sa

    from alerts import db

    clock, alerts = Clock(), Alerts()
    n = make_notifier(store_url, slack, clock, route={"receiver": "security",
                                                      "group_by": ["client_id"]})
    n.send([alerts.fire("live"), alerts.fire("gone")])
    run(n, clock, 31)
    n.send([alerts.resolve("gone", ts=T0 + 60)])
    run(n, clock, 400, step=10)
    clock.advance(8 * 86400)
    n.cleanup(clock.t)
    with n.engine.connect() as conn:
        keys = set(conn.execute(sa.select(db.notify_messages.c.key)).scalars())
        queued = conn.execute(sa.select(sa.func.count()).select_from(db.notify_queue)).scalar()
    assert queued == 0
    assert len(keys) == 1 and next(iter(keys)).endswith(json.loads(alerts.fire("live"))["id"])
    # the live alert's thread still works after the clean-up
    n.send([alerts.resolve("live", ts=T0 + 9 * 86400)])
    run(n, clock, 400, step=10)
    assert len(slack.calls("chat.update")) == 2
