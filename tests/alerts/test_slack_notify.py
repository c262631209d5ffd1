"""Slack notifications, driven through slack-sdk's real WebClient against a local
fake Slack, with a fake clock for group_wait / group_interval / repeat_interval."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from alerts import db
from monitor.metrics import Metrics
from tests.alerts.fake_slack import Failure, FakeSlack
from tests.alerts.helpers import T0, Alerts, Clock, make_notifier, run


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


def _top_level(slack: FakeSlack) -> list[dict]:
    return [r.body for r in slack.posts() if "thread_ts" not in r.body]


def _replies(slack: FakeSlack) -> list[dict]:
    return [r.body for r in slack.posts() if "thread_ts" in r.body]


def _metric(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_group_wait_then_one_message_per_alert_and_repeats_as_thread_replies(
        sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock)
    n.send([alerts.fire("key-1"), alerts.fire("key-2")])

    run(n, clock, 29)  # group_wait is 30 s: nothing yet
    assert slack.posts() == []
    run(n, clock, 2)
    top = _top_level(slack)
    assert len(top) == 2
    assert all(p["channel"] == "security-oncall" for p in top)
    assert ["key-1" in top[0]["text"], "key-2" in top[1]["text"]] == [True, True]
    assert slack.calls()[0].method == "auth.test"

    # the detector repeats every few minutes: nothing new in the channel before
    # repeat_interval (4 h), then one thread reply per alert under its own message
    for minute in range(1, 60):
        n.send([alerts.fire("key-1", ts=T0 + 60 * minute), alerts.fire("key-2", ts=T0 + 60 * minute)])
    run(n, clock, 3 * 3600, step=30)
    assert len(slack.posts()) == 2
    run(n, clock, 3600 + 300, step=30)
    replies = _replies(slack)
    assert len(replies) == 2
    ts_of = {("key-1" in slack.messages[ts]["text"]): ts for ts in slack.messages}
    assert {r["thread_ts"] for r in replies} == set(ts_of.values())
    assert all("Still firing: 60 detection(s)" in r["text"] for r in replies)
    assert len(_top_level(slack)) == 2  # still one message per incident


def test_new_alert_in_a_notified_group_waits_for_group_interval(
        sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock)
    n.send([alerts.fire("key-1")])
    run(n, clock, 31)
    assert len(slack.posts()) == 1
    n.send([alerts.fire("key-2", ts=T0 + 40)])
    run(n, clock, 200, step=10)  # group_interval is 300 s after the first send
    assert len(slack.posts()) == 1
    run(n, clock, 100, step=10)
    assert len(slack.posts()) == 2


def test_resolution_edits_the_original_message_and_replies_in_its_thread(
        sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock)
    n.send([alerts.fire("key-1", severity="critical")])
    run(n, clock, 31)
    (original,) = slack.posts()
    ts = next(iter(slack.messages))
    assert original.body["attachments"][0]["color"] == "#D0021B"  # critical: red

    n.send([alerts.resolve("key-1", ts=T0 + 120, severity="critical")])
    run(n, clock, 300, step=10)
    (update,) = slack.calls("chat.update")
    assert update.body["ts"] == ts and update.body["channel"] == "C0SEC"
    assert update.body["attachments"][0]["color"] == "#2EB67D"  # resolved: green
    assert "RESOLVED" in update.body["text"]
    (reply,) = _replies(slack)
    assert reply["thread_ts"] == ts and "Resolved at" in reply["text"]
    assert len(_top_level(slack)) == 1
    assert n.queue_depth("security") == 0


def test_a_flap_inside_group_wait_is_never_posted(sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock)
    n.send([alerts.fire("key-1"), alerts.resolve("key-1", ts=T0 + 5)])
    run(n, clock, 120)
    assert slack.posts() == []


def test_ten_minute_outage_then_everything_delivered_once_in_order(
        sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    metrics = Metrics()
    n = make_notifier(sqlite_url, slack, clock, metrics=metrics,
                      route={"receiver": "security", "group_by": ["client_id"],
                             "group_wait_s": 0, "group_interval_s": 60})
    slack.down = Failure(500)
    sent_clients = []
    for minute in range(10):  # one new client per minute during the outage
        client = f"key-{minute:02d}"
        sent_clients.append(client)
        n.send([alerts.fire(client, ts=T0 + 60 * minute)])
        run(n, clock, 60, step=5)
    tried = len(slack.calls())
    assert tried <= 20, "backoff: no hammering during the outage"
    assert n.queue_depth("security") == 10
    assert _metric(metrics, "inferwatch_receiver_notifications_total",
                   receiver="security", result="server_error") >= 1
    assert _metric(metrics, "inferwatch_receiver_queue_depth", receiver="security") == 10

    slack.down = None
    run(n, clock, 600, step=5)
    posted = [p.body["text"] for p in slack.posts()]
    assert len(posted) == 10
    assert [next(c for c in sent_clients if c in t) for t in posted] == sent_clients
    assert n.queue_depth("security") == 0
    assert _metric(metrics, "inferwatch_receiver_notifications_total",
                   receiver="security", result="sent") == 10
    assert _metric(metrics, "inferwatch_receiver_delivery_seconds_count", receiver="security") == 10


def test_429_waits_exactly_the_retry_after(sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock, route={"receiver": "ml", "group_wait_s": 0})
    n.send([alerts.fire(None, kind="drift")])
    slack.failures = [Failure(429, retry_after=7)]
    run(n, clock, 1)
    assert len(slack.calls()) == 1 and slack.posts() == []  # auth.test was rate limited
    run(n, clock, 6)  # 429 said 7 s: not before
    assert len(slack.calls()) == 1
    run(n, clock, 1)
    assert len(slack.posts()) == 1 and slack.posts()[0].body["channel"] == "ml-alerts"


@pytest.mark.parametrize("where,error", [("auth.test", "invalid_auth"),
                                          ("chat.postMessage", "channel_not_found"),
                                          ("chat.postMessage", "restricted_action"),
                                          ("chat.postMessage", "a_code_slack_adds_later")])
def test_permanent_errors_stop_the_receiver_with_a_clear_log_line_and_a_metric(
        sqlite_url: str, slack: FakeSlack, caplog: pytest.LogCaptureFixture,
        where: str, error: str) -> None:
    """Only an error known to be about one message skips it: any other, also one
    inferwatch does not know, stops the receiver and its queue waits."""
    clock, alerts = Clock(), Alerts()
    metrics = Metrics()
    n = make_notifier(sqlite_url, slack, clock, metrics=metrics)
    n.send([alerts.fire("key-1")])
    if where == "chat.postMessage":
        run(n, clock, 31)  # auth.test + the first post succeed
        n.send([alerts.fire("key-2", ts=T0 + 40)])
        run(n, clock, 280, step=10)
    slack.failures = [Failure(200, error=error)]
    with caplog.at_level(logging.ERROR, logger="alerts.notify"):
        run(n, clock, 60)
    line = next(r.getMessage() for r in caplog.records if "stopped" in r.getMessage())
    assert "receiver security stopped" in line and error in line
    assert _metric(metrics, "inferwatch_receiver_blocked", receiver="security") == 1
    assert _metric(metrics, "inferwatch_receiver_notifications_total",
                   receiver="security", result=error) == 1
    calls = len(slack.calls())
    run(n, clock, 600, step=10)
    assert len(slack.calls()) == calls, "no retry storm against a bad token"
    run(n, clock, 400, step=10)  # permanent_retry_s (900 s) later: fixed, delivered
    assert n.queue_depth("security") == 0
    assert _metric(metrics, "inferwatch_receiver_blocked", receiver="security") == 0
    delivered = sorted(m["text"].split()[2] for m in slack.messages.values())
    assert delivered == (["key-1", "key-2"] if where == "chat.postMessage" else ["key-1"])


def test_hostile_client_strings_cannot_ping_or_link(sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock,
                      receivers={"security": {"mention": "<!subteam^S0SEC>"}})
    hostile = "<!channel>"
    n.send([alerts.fire(hostile, severity="critical", model="<https://evil|click>",
                        summary=f"Client {hostile} & <https://evil|click> flooded",
                        evidence={"sample_request_ids": ["<!here>", "<@U123>"],
                                  "long": "x" * 10_000, "features": {"age": 42}})])
    run(n, clock, 31)
    n.send([alerts.resolve(hostile, severity="critical", model="<https://evil|click>",
                           ts=T0 + 60)])
    run(n, clock, 300, step=10)
    assert len(slack.calls()) >= 4
    for req in slack.calls():
        raw = json.dumps(req.body)
        for bad in ("<!channel>", "<!here>", "<https://evil", "<@U123>"):
            assert bad not in raw
    post = slack.posts()[0].body
    raw = json.dumps(post)
    assert "&lt;!channel&gt;" in raw and "&lt;https://evil|click&gt;" in raw and "&amp;" in raw
    assert post["text"].startswith("<!subteam^S0SEC> ")  # the operator's mention stays live
    assert "42" not in raw and "withheld" in raw  # raw feature values stay out
    assert "truncated" in raw
    for block in post["attachments"][0]["blocks"]:
        for text in [block.get("text", {}).get("text", "")] + [
                f["text"] for f in block.get("fields", []) + block.get("elements", [])]:
            assert len(text) <= 3000
        assert len(block.get("fields", [])) <= 10


def test_alert_storm_gives_one_digest_message_per_group(sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock)
    for second in range(60):  # 500 clients start flooding within one minute
        n.send([alerts.fire(f"bot-{i:03d}", ts=T0 + second)
                for i in range(second * 500 // 60, (second + 1) * 500 // 60)])
        run(n, clock, 1)
    run(n, clock, 600, step=10)
    top = _top_level(slack)
    assert len(top) == 1
    assert "500 alerts at once" in json.dumps(slack.messages[next(iter(slack.messages))])
    assert len(slack.posts()) <= 3  # the digest, plus "N more joined" in its thread
    assert all(r["thread_ts"] == next(iter(slack.messages)) for r in _replies(slack))

    # the storm ends: one resolution reply, the digest edited to resolved
    n.send([alerts.resolve(f"bot-{i:03d}", ts=T0 + 900) for i in range(500)])
    run(n, clock, 300, step=10)
    assert len(_top_level(slack)) == 1
    final = slack.messages[next(iter(slack.messages))]
    assert "Resolved: all 500 alerts" in json.dumps(final)
    assert final["attachments"][0]["color"] == "#2EB67D"


def test_a_digest_mentions_when_any_alert_in_it_fires_at_a_mentioned_severity(
        sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock,
                      receivers={"security": {"mention": "<!subteam^S0SEC>"}})
    n.send([alerts.fire("key-0", severity="warning")]  # the first one ingested is a warning
           + [alerts.fire(f"key-{i}", severity="critical") for i in range(1, 7)])
    run(n, clock, 31)
    (digest,) = _top_level(slack)
    assert digest["text"].startswith("<!subteam^S0SEC> [CRITICAL] 7 alerts")


@pytest.mark.parametrize("severities,pinged", [(["warning", "critical"], True),
                                               (None, False)])  # the default: critical
def test_mention_severities_decide_who_is_pinged_for_a_warning(
        sqlite_url: str, slack: FakeSlack, severities: list[str] | None, pinged: bool) -> None:
    clock, alerts = Clock(), Alerts()
    receiver: dict = {"mention": "<!subteam^S0ML>"}
    if severities is not None:
        receiver["mention_severities"] = severities
    n = make_notifier(sqlite_url, slack, clock, receivers={"security": receiver})
    n.send([alerts.fire("key-1", severity="warning")])
    run(n, clock, 31)
    (post,) = _top_level(slack)
    assert post["text"].startswith("<!subteam^S0ML> ") is pinged


def test_silence_and_ack_from_the_store(sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock,
                      route={"receiver": "security", "group_by": ["client_id"],
                             "repeat_interval_s": 600})
    sid = db.add_silence(n.engine, ["client_id=key-1", "kind=flooding"], starts_at=clock.t,
                         ends_at=clock.t + 3600, created_by="alice", comment="pentest")
    n.send([alerts.fire("key-1"), alerts.fire("key-2")])
    run(n, clock, 31)
    assert ["key-2" in p.body["text"] for p in slack.posts()] == [True]

    db.expire_silence(n.engine, sid[:4], clock.t)
    run(n, clock, 31)
    assert len(_top_level(slack)) == 2 and "key-1" in _top_level(slack)[1]["text"]

    rec2 = json.loads(alerts.fire("key-2", ts=T0 + 60))
    n.send([json.dumps(rec2)])
    db.add_ack(n.engine, rec2, acked_by="bob", comment="blocking the key", now=clock.t)
    run(n, clock, 2)
    (ack,) = _replies(slack)
    assert "Acknowledged by bob: blocking the key" in ack["text"]
    run(n, clock, 1800, step=30)  # past repeat_interval: key-1 is reminded, acked key-2 not
    reminders = [r for r in _replies(slack) if "Still firing" in r["text"]]
    assert reminders and all("key-2" not in r["text"] for r in reminders)


def test_extraction_inhibits_flooding_for_the_same_client(sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock)
    n.send([alerts.fire("key-1", kind="extraction", summary="Client key-1 probes the boundary"),
            alerts.fire("key-1"), alerts.fire("key-2")])
    run(n, clock, 31)
    texts = [p.body["text"] for p in slack.posts()]
    assert len(texts) == 2
    assert any("probes the boundary" in t for t in texts)
    assert any("key-2 flooded" in t for t in texts)


def test_evasion_inhibits_flooding_only_for_the_same_source_address(
        sqlite_url: str, slack: FakeSlack) -> None:
    """Alerts on addresses (detectors.source_ip) have no client id: one address's
    evasion alert must not silence another address's flood."""
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock)
    n.send([alerts.fire(None, source_ip="10.0.0.1", kind="evasion",
                        summary="Source address 10.0.0.1 probes in small steps"),
            alerts.fire(None, source_ip="10.0.0.1", summary="Source address 10.0.0.1 flooded"),
            alerts.fire(None, source_ip="10.0.0.2", summary="Source address 10.0.0.2 flooded")])
    run(n, clock, 31)
    texts = [p.body["text"] for p in slack.posts()]
    assert len(texts) == 2
    assert any("10.0.0.1 probes" in t for t in texts)
    assert any("10.0.0.2 flooded" in t for t in texts)


def test_routing_sends_security_and_ml_kinds_to_their_channels(
        sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock)
    n.send([alerts.fire(None, kind="drift", summary="3 input features drifted"),
            alerts.fire("key-1", kind="extraction", summary="Client key-1 probes")])
    run(n, clock, 31)
    channels = {p.body["text"].split("] ", 1)[1]: p.body["channel"] for p in slack.posts()}
    assert channels == {"3 input features drifted": "ml-alerts",
                        "Client key-1 probes": "security-oncall"}


def test_an_attack_that_started_and_ended_during_a_backlog_is_still_posted(
        sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock)
    # the daemon catches up: the flood's firing and resolved records arrive together
    n.send([alerts.fire("key-1"), alerts.resolve("key-1", ts=T0 + 240)])
    run(n, clock, 31)
    (post,) = slack.posts()
    assert "RESOLVED" in post.body["text"] and "key-1" in post.body["text"]
    assert post.body["attachments"][0]["color"] == "#2EB67D"
    run(n, clock, 600, step=10)
    assert len(slack.calls("chat.postMessage")) == 1 and slack.calls("chat.update") == []


def test_a_message_slack_refuses_is_skipped_and_does_not_block_the_rest(
        sqlite_url: str, slack: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    clock, alerts = Clock(), Alerts()
    metrics = Metrics()
    n = make_notifier(sqlite_url, slack, clock, metrics=metrics,
                      route={"receiver": "security", "group_by": ["client_id"]})
    n.send([alerts.fire("key-1"), alerts.fire("key-2")])
    slack.method_failures["chat.postMessage"] = [Failure(200, error="invalid_blocks")]
    with caplog.at_level(logging.ERROR):
        run(n, clock, 31)
    assert [("key-2" in m["text"]) for m in slack.messages.values()] == [True]
    assert any("refused" in r.getMessage() and "invalid_blocks" in r.getMessage()
               for r in caplog.records)
    assert _metric(metrics, "inferwatch_receiver_notifications_total",
                   receiver="security", result="invalid_blocks") == 1
    assert n.queue_depth("security") == 0


def test_an_unexpected_receiver_error_does_not_escape_the_tick(
        sqlite_url: str, slack: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock)
    n.send([alerts.fire("key-1")])
    receiver = n.receivers["security"]
    real_send = receiver.send

    def broken(item: object) -> tuple[None, None]:
        raise RuntimeError("boom")

    receiver.send = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        run(n, clock, 31)  # must not raise into the daemon loop
    assert "unexpected error" in caplog.text and n.queue_depth("security") == 1
    receiver.send = real_send  # type: ignore[method-assign]
    run(n, clock, 31)
    assert len(slack.posts()) == 1


def test_sending_stops_at_the_budget_so_a_slow_slack_cannot_stall_the_daemon(
        sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    slack.latency_s = 0.01  # 40 posts take >= 0.4 s: more than one budget of 0.05 s
    n = make_notifier(sqlite_url, slack, clock, send_budget_s=0.05,
                      route={"receiver": "security", "group_by": ["client_id"]})
    n.send([alerts.fire(f"key-{i:02d}") for i in range(40)])
    run(n, clock, 31)
    first = len(slack.posts())
    assert 0 < first < 40  # one tick sent what fit in its budget
    # the next loops continue at once, without waiting for tick_s; a send that outlived
    # its budget is still in flight, and a tick finds it done only once it is (under
    # load the thread may take longer than many quick ticks): bound by time, not ticks
    deadline = time.monotonic() + 30
    while len(slack.posts()) < 40 and time.monotonic() < deadline:
        n.tick()
        time.sleep(0.005)
    texts = [p.body["text"] for p in slack.posts()]
    assert [next(f"key-{i:02d}" for i in range(40) if f"key-{i:02d}" in t) for t in texts] == [
        f"key-{i:02d}" for i in range(40)]


def test_a_hanging_slack_holds_a_tick_no_longer_than_the_budget_and_nothing_is_sent_twice(
        sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    slack.latency_s = 1.5  # each answer (auth.test, every post) takes seven budgets
    n = make_notifier(sqlite_url, slack, clock, send_budget_s=0.2,
                      route={"receiver": "security", "group_by": ["client_id"]})
    n.send([alerts.fire(f"key-{i}") for i in range(3)])
    run(n, clock, 29)  # group_wait: nothing sent yet
    longest, ticks = 0.0, 0
    deadline = time.monotonic() + 30
    while n.queue_depth("security") or len(slack.posts()) < 3:
        assert time.monotonic() < deadline, "the queue did not drain"
        clock.advance(1.0)
        started = time.monotonic()
        n.tick()
        longest, ticks = max(longest, time.monotonic() - started), ticks + 1
        time.sleep(0.05)  # the daemon's loop goes on meanwhile
    assert longest < 1.0, f"a tick waited {longest:.1f}s for a hanging Slack"
    assert ticks > 10  # the answers came in while the loop kept turning
    texts = [p.body["text"] for p in slack.posts()]
    assert [next(f"key-{i}" for i in range(3) if f"key-{i}" in t) for t in texts] == [
        "key-0", "key-1", "key-2"]  # each once, in order


def test_a_stop_records_the_send_in_flight_so_the_restart_does_not_repeat_it(
        sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    slack.latency_s = 1.0  # longer than the budget: the first post is still in flight
    settings = {"send_budget_s": 0.1, "route": {"receiver": "security",
                                                "group_by": ["client_id"]}}
    n = make_notifier(sqlite_url, slack, clock, **settings)
    n.send([alerts.fire(f"key-{i}") for i in range(3)])
    run(n, clock, 31)  # group_wait, then the three groups' messages queued
    assert n.queue_depth("security") == 3 and not slack.posts(), "not in flight"
    n.finish()  # the daemon stops: waits for the answer, records it, sends nothing new
    assert len(slack.posts()) == 1 and n.queue_depth("security") == 2
    slack.latency_s = 0.0
    restarted = make_notifier(sqlite_url, slack, clock, **settings)
    run(restarted, clock, 5)
    texts = [p.body["text"] for p in slack.posts()]
    assert [next(f"key-{i}" for i in range(3) if f"key-{i}" in t) for t in texts] == [
        "key-0", "key-1", "key-2"]


def test_an_escalation_to_critical_is_said_at_once_with_the_mention(
        sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock,
                      receivers={"security": {"mention": "<!subteam^S0SEC>"}})
    n.send([alerts.fire("key-1", severity="warning")])
    run(n, clock, 31)
    (first,) = slack.posts()
    assert not first.body["text"].startswith("<!subteam")  # a warning does not page
    n.send([alerts.fire("key-1", severity="critical", ts=T0 + 60),
            alerts.fire("key-2", severity="warning", ts=T0 + 60)])  # news of the same group
    run(n, clock, 5)  # at once, not at the group's next turn (group_interval_s: 300 s)
    (reply,) = _replies(slack)
    assert reply["text"].startswith("<!subteam^S0SEC> ") and "Escalated to *critical*" in reply[
        "text"]
    (update,) = slack.calls("chat.update")
    assert update.body["attachments"][0]["color"] == "#D0021B"
    assert len(_top_level(slack)) == 1  # the other news waits for the group's turn ...
    run(n, clock, 295, step=5)  # to 1 s past it: first flush at +30 s, + group_interval_s
    assert len(_top_level(slack)) == 2  # ... which the escalation did not put off
    n.send([alerts.fire("key-1", severity="critical", ts=T0 + 120)])
    run(n, clock, 600, step=10)
    assert len(_replies(slack)) == 1  # said once


def test_a_one_off_notice_closes_its_group_once_posted(sqlite_url: str, slack: FakeSlack) -> None:
    """A job's notice (the weekly drift report) never resolves: told once, its group
    is over, not kept open (one more row and group every week, and the model's next
    drift alert added to a weeks-old group)."""
    import sqlalchemy as sa

    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock)
    n.send([alerts.fire(None, kind="drift", evidence={"notice": True, "report": "weekly"},
                        summary="Drift report: no input feature drifted.")])
    run(n, clock, 31)
    top = _top_level(slack)
    assert len(top) == 1 and "Drift report: no input feature drifted." in top[0]["text"]
    run(n, clock, 8 * 3600, step=600)
    with n.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.notify_groups)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(db.notify_alerts)).scalar() == 0
    assert len(slack.posts()) == 1  # told once, no reminder


def test_a_digest_is_labelled_by_what_still_fires(sqlite_url: str, slack: FakeSlack) -> None:
    """The critical alert of a storm resolves, warnings go on firing: the edited
    digest says WARNING in the warning colour, not CRITICAL in red."""
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock)
    n.send([alerts.fire("key-0", severity="critical")]
           + [alerts.fire(f"key-{i}", severity="warning") for i in range(1, 7)])
    run(n, clock, 31)
    (digest,) = _top_level(slack)
    assert digest["text"].startswith("[CRITICAL] 7 alerts")
    n.send([alerts.resolve("key-0", severity="critical", ts=T0 + 60)])
    run(n, clock, 400, step=10)
    edited = slack.messages[next(iter(slack.messages))]
    assert edited["text"].startswith("[WARNING] 7 alerts")
    assert edited["attachments"][0]["color"] == "#F5A623"
