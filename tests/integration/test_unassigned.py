"""A member that gets no partition says why it may have none, in the log and on
/readyz: a topic that does not exist (a typo in ``kafka.topics``) or more members
in the group than the topics have partitions would otherwise idle in silence."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from monitor import daemon as daemon_module
from monitor.broker import EmbeddedBroker
from tests.kafka_helpers import DaemonThread, daemon_config, start_daemon, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def warn_after_2s(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(daemon_module, "NO_PARTITIONS_WARN_S", 2.0)
    caplog.set_level(logging.WARNING, logger="monitor.daemon")


def test_a_topic_that_does_not_exist_is_named(
    broker: EmbeddedBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    warn_after_2s: None,
) -> None:
    # librdkafka's consumer never asks the broker to create a topic (the test broker
    # creates one for kafka-python whatever the client asks, so this needs librdkafka)
    missing = f"inference-logz-{uuid.uuid4().hex[:6]}"
    cfg = daemon_config(broker.bootstrap, missing, f"sqlite:///{tmp_path / 's.db'}",
                        tmp_path / "alerts.jsonl", group="typo",
                        kafka={"client": "confluent-kafka"})
    d = start_daemon(cfg)
    try:
        wait_until(lambda: "no partitions assigned for" in caplog.text, 30, "the warning")
        assert f"kafka.topics: {missing}" in caplog.text and "exist" in caplog.text
        ready, reason = d.daemon.ready()
        assert not ready and f"(kafka.topics: {missing})" in reason, reason
        assert caplog.text.count("no partitions assigned for") == 1, "repeated at once"
    finally:
        d.stop()


def test_a_member_beyond_the_partition_count_says_so(
    broker: EmbeddedBroker, tmp_path: Path, kafka_client: str,
    caplog: pytest.LogCaptureFixture, warn_after_2s: None,
) -> None:
    topic = f"one-partition-{uuid.uuid4().hex[:6]}"
    broker.create_topic(topic, 1)
    store = f"sqlite:///{tmp_path / 's.db'}"
    first = start_daemon(daemon_config(broker.bootstrap, topic, store, tmp_path / "a.jsonl",
                                       instance="a", group=topic,
                                       kafka={"client": kafka_client}))
    try:
        wait_until(lambda: first.daemon.ready()[0], 60, "the first member ready")
        second = start_daemon(daemon_config(broker.bootstrap, topic, store,
                                            tmp_path / "b.jsonl", instance="b", group=topic,
                                            kafka={"client": kafka_client}))
        def idle() -> list[DaemonThread]:
            return [d for d in (first, second)
                    if d.daemon.source is not None and not d.daemon.source.assignment()]

        try:
            # the rebalance settled: one member holds the partition, the other says why
            wait_until(lambda: len(idle()) == 1 and f"(kafka.topics: {topic})"
                       in idle()[0].daemon.ready()[1], 60, "the idle member's reason")
            assert not idle()[0].daemon.ready()[0]
            assert f"group '{topic}' has no more members than" in caplog.text
        finally:
            second.stop()
    finally:
        first.stop()
