"""End to end: Kafka → the daemon's detectors → the outbox → the notifier → Slack
(the fake one), with the JSONL contract file next to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.broker import EmbeddedBroker
from tests.alerts.fake_slack import FakeSlack
from tests.integration.scenario import SMALL, good_events
from tests.kafka_helpers import (
    daemon_config,
    encode_events,
    produce,
    read_alerts,
    small_detectors,
    start_daemon,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_daemon_posts_its_alerts_to_slack_once_each(
        broker: EmbeddedBroker, topic: str, tmp_path: Path, slack: FakeSlack) -> None:
    jsonl = tmp_path / "alerts.jsonl"
    cfg = daemon_config(broker.bootstrap, topic, f"sqlite:///{tmp_path / 'store.db'}", jsonl,
                        detectors=small_detectors())
    cfg["alerts"] |= {"slack": {"token": "xoxb-test", "base_url": slack.base_url},
                      "route": {"receiver": "ml", "group_by": ["kind", "model", "client_id"],
                                "group_wait_s": 0, "group_interval_s": 1,
                                "routes": [{"matchers": ["kind=~flooding|extraction|evasion"],
                                            "receiver": "security"}]},
                      "tick_s": 0.2}
    produce(broker.bootstrap, topic, encode_events(good_events()))

    d = start_daemon(cfg)
    try:
        def posted_flooder() -> bool:
            return any(SMALL.flooder in m["text"] for m in slack.messages.values())

        try:
            wait_until(posted_flooder, 90, "the flooding alert in Slack")
        except AssertionError:
            print("JSONL", [(r["kind"], r["subject"], r["status"]) for r in read_alerts(jsonl)])
            print("SLACK", [r.path for r in slack.calls()], list(slack.messages.values())[:2])
            raise
        records = read_alerts(jsonl)
        firing = {r["id"] for r in records if r["status"] == "firing"}
        wait_until(lambda: len(slack.messages) >= len(firing), 30, "every alert in Slack")
    finally:
        d.stop()
    # one channel message per alert episode of the contract file (the daemon's last
    # checkpoint at shutdown may add episodes the notifier had no loop left to post)
    channel = list(slack.messages.values())
    ids = [m["attachments"][0]["blocks"][-1]["elements"][-1]["text"].split("alert `")[1][:24]
           for m in channel]
    assert len(ids) == len(set(ids))
    assert firing <= set(ids) <= {r["id"] for r in read_alerts(jsonl) if r["status"] == "firing"}
    flood = next(m for m in channel if SMALL.flooder in m["text"])
    posts = {r.body["text"]: r.body["channel"] for r in slack.posts()}
    assert posts[flood["text"]] == "security-oncall"
    assert d.daemon.metrics.registry.get_sample_value(
        "inferwatch_receiver_notifications_total",
        {"receiver": "security", "result": "sent"}) >= 1


def test_a_jsonl_file_that_cannot_be_written_does_not_hold_back_slack_or_readiness(
        broker: EmbeddedBroker, topic: str, tmp_path: Path, slack: FakeSlack,
        caplog: pytest.LogCaptureFixture) -> None:
    """A sink's own failure is not a store outage: the other sinks deliver and the
    daemon stays ready; the log names the sink and the cause."""
    jsonl = tmp_path / "alerts.jsonl"
    jsonl.mkdir()  # the configured path is a directory
    cfg = daemon_config(broker.bootstrap, topic, f"sqlite:///{tmp_path / 'store.db'}", jsonl,
                        group=f"g-{topic}", detectors=small_detectors())
    cfg["alerts"] |= {"slack": {"token": "xoxb-test", "base_url": slack.base_url},
                      "route": {"receiver": "ml", "group_wait_s": 0}, "tick_s": 0.2}
    produce(broker.bootstrap, topic, encode_events(good_events()))

    d = start_daemon(cfg)
    try:
        wait_until(lambda: any(SMALL.flooder in m["text"] for m in slack.messages.values()),
                   60, "the flooding alert in Slack")
        assert d.daemon.ready() == (True, "ok")
    finally:
        d.stop()
    assert f"delivery to jsonl:{jsonl} failed" in caplog.text
    assert "Is a directory" in caplog.text
    assert "store unreachable" not in caplog.text
