"""Nothing is lost to a restart, and nothing is sent twice: the outbox, the
notification queue and the posted-message map live in the real store."""

from __future__ import annotations

import json

import pytest

from alerts.outbox import Dispatcher
from monitor.metrics import Metrics
from monitor.store import Store
from tests.alerts.fake_slack import Failure, FakeSlack
from tests.alerts.helpers import T0, Alerts, Clock, make_notifier, run

pytestmark = pytest.mark.integration  # PostgreSQL too


def _fill_outbox(store: Store, records: list[str]) -> None:
    store.save_checkpoint("replica-a", {}, [(json.loads(r)["fingerprint"], r) for r in records],
                          [], {})


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
