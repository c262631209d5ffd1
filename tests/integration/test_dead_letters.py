"""Dead-letter records survive a broker outage: a checkpoint waits for Kafka to
acknowledge them without holding the loop for the outage, and a record whose
delivery failed (the producer's delivery timeout passed) is sent again, never
dropped while the offsets past it are stored."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from monitor import confluent_source, kafka_source
from monitor.config import build_config
from monitor.daemon import Daemon
from monitor.pipeline import Record
from monitor.source import DLQ_SOURCE_HEADER, Source, open_source
from tests.integration.proxy import ProxiedBroker
from tests.kafka_helpers import daemon_config, wait_until

pytestmark = [pytest.mark.integration]
PID = ("in", 0)

# delivery timeouts of seconds, not minutes, so the test sees deliveries fail
SHORT_DELIVERY = {
    "kafka-python": (kafka_source, {"request_timeout_ms": 1000, "delivery_timeout_ms": 2000}),
    "confluent-kafka": (confluent_source, {"message.timeout.ms": 2000}),
}


def _dead_letter_sources(bootstrap: str, topic: str) -> list[str]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    consumer.assign([TopicPartition(topic, 0)])
    found = [dict(m.headers)[DLQ_SOURCE_HEADER].decode() for m in consumer]
    consumer.close()
    return found


def _daemon(pb: ProxiedBroker, tmp_path: Path, kafka_client: str,
            monkeypatch: pytest.MonkeyPatch) -> tuple[Daemon, Source]:
    """A daemon writing dead letters of topic ``in`` to ``in-dlq`` with a short delivery
    timeout, and its source, never polled: no group to join, only the producer."""
    module, settings = SHORT_DELIVERY[kafka_client]
    for key, value in settings.items():
        monkeypatch.setitem(module.DEAD_LETTER_PRODUCER, key, value)
    pb.create_topic("in", 1)
    pb.create_topic("in-dlq", 1)
    config = build_config(daemon_config(
        pb.bootstrap, "in", f"sqlite:///{tmp_path / 's.db'}", tmp_path / "alerts.jsonl",
        group="dlq", kafka={"client": kafka_client, "dead_letter_topic": "in-dlq"}), env={})
    daemon = Daemon(config, sinks=[])
    daemon.store.migrate()
    daemon.store_ok = True
    source = daemon.source = open_source(config.kafka, on_assign=dict.fromkeys,
                                         on_revoke=lambda pids: None)
    return daemon, source


@contextlib.contextmanager
def _one_letter_stored(tmp_path: Path, kafka_client: str, monkeypatch: pytest.MonkeyPatch,
                       ) -> Iterator[tuple[ProxiedBroker, Daemon, Source]]:
    """A broker behind a proxy and ``_daemon`` on it, whose first dead letter (offset 0
    of ``PID``) Kafka has acknowledged in a checkpoint; all closed afterwards."""
    pb = ProxiedBroker(tmp_path)
    try:
        daemon, source = _daemon(pb, tmp_path, kafka_client, monkeypatch)
        try:
            source.dead_letter(PID, Record(0, b"not json", b"k"), "not_json", "before")
            assert daemon.checkpoint()
            yield pb, daemon, source
        finally:
            source.close()
            daemon.store.close()
    finally:
        pb.close()


def test_dead_letters_wait_out_an_outage_and_a_failed_delivery_is_sent_again(
    tmp_path: Path, kafka_client: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="monitor")
    with _one_letter_stored(tmp_path, kafka_client, monkeypatch) as (pb, daemon, source):
        pb.proxy.cut()
        for offset in (1, 2):
            source.dead_letter(PID, Record(offset, b"{", b"k"), "not_json", "in the outage")
        started = time.monotonic()
        assert not daemon.checkpoint(), "offsets stored past unacknowledged dead letters"
        assert time.monotonic() - started < 5, "the checkpoint waits out the outage"
        assert daemon.dead_letters_waiting == 2

        time.sleep(3)  # past the delivery timeout: both deliveries fail ...
        assert not daemon.checkpoint()  # ... and they are sent again, still waiting
        assert daemon.dead_letters_waiting == 2
        assert "dead-letter records were not delivered" in caplog.text

        pb.proxy.restore()
        wait_until(daemon.checkpoint, 60, "the checkpoint once Kafka acknowledges them")
        assert daemon.dead_letters_waiting == 0
        found = _dead_letter_sources(pb.bootstrap, "in-dlq")
    assert sorted(set(found)) == ["in/0/0", "in/0/1", "in/0/2"]  # at least once each


def test_a_dead_letter_whose_answer_was_lost_is_delivered_once_kafka_answers_again(
    tmp_path: Path, kafka_client: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker stores a dead letter but its answer is lost, and the letter expires
    in flight. An idempotent kafka-python producer then needs a new producer epoch,
    which this broker (Tansu) never grants: it delivered nothing more. The dead-letter
    producer is not idempotent (the outbox sends again anyway: at least once)."""
    with _one_letter_stored(tmp_path, kafka_client, monkeypatch) as (pb, daemon, source):
        pb.proxy.lose_answers()
        source.dead_letter(PID, Record(1, b"{", b"k"), "not_json", "answer lost")
        assert not daemon.checkpoint()
        time.sleep(3)  # past the delivery timeout: the letter expires in flight
        pb.proxy.cut()
        pb.proxy.restore()
        wait_until(daemon.checkpoint, 30, "the checkpoint once Kafka answers again")
        found = _dead_letter_sources(pb.bootstrap, "in-dlq")
    assert sorted(set(found)) == ["in/0/0", "in/0/1"]  # at least once each
