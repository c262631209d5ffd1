"""The librdkafka source (``kafka.client: confluent-kafka``, the ``confluent``
extra): the same ``monitor.source.Source`` as the kafka-python one, on
confluent-kafka, whose fetching, decompression and CRC checks run in librdkafka's
C threads instead of taking the interpreter's time.

librdkafka calls the rebalance callbacks, its error callback and its statistics
callback from inside ``consume`` (and ``close``), on the daemon's own thread.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from monitor.config import KafkaConfig
from monitor.dead_letters import CLOSE_WAIT_S, DeadLetter, DeadLetterOutbox, Outcome
from monitor.pipeline import Record
from monitor.source import (
    OnAssign,
    OnRevoke,
    dead_letter_record,
    fmt_partitions,
    security_settings,
)
from monitor.state import PartitionId

log = logging.getLogger(__name__)

STATS_INTERVAL_MS = 1000
# librdkafka refuses a fetch.max.bytes above receive.message.max.bytes - 512
_RECEIVE_MAX_BYTES = 100_000_000
# ... and below message.max.bytes (the largest request it sends; its default is this):
# a smaller fetch size lowers it, which a consumer's small requests never reach
_MESSAGE_MAX_BYTES = 1_000_000
DEAD_LETTER_PRODUCER: dict[str, Any] = {"acks": "all"}


# librdkafka's names for our TLS and SASL settings
_SECURITY_NAMES = {"ssl_cafile": "ssl.ca.location", "ssl_certfile": "ssl.certificate.location",
                   "ssl_keyfile": "ssl.key.location", "ssl_password": "ssl.key.password",
                   "sasl_mechanism": "sasl.mechanism", "sasl_username": "sasl.username",
                   "sasl_password": "sasl.password"}


def connection_settings(cfg: KafkaConfig) -> dict[str, Any]:
    """librdkafka's names for the settings the consumer and the dead-letter
    producer share (TLS, SASL); its log lines go to the ``librdkafka`` logger."""
    settings: dict[str, Any] = {
        "bootstrap.servers": ",".join(cfg.bootstrap_servers),
        "client.id": cfg.client_id,
        "security.protocol": cfg.security_protocol.lower(),
        "ssl.endpoint.identification.algorithm": "https" if cfg.ssl_check_hostname else "none",
        "logger": logging.getLogger("librdkafka"),
    }
    settings.update(security_settings(cfg, _SECURITY_NAMES))
    return settings


class ConfluentSource:
    """A ``monitor.source.Source`` on confluent-kafka. Every commit is asynchronous,
    ``blocking`` or not: its outcome comes from a later ``consume``, and ``close``
    waits for it. A synchronous one could wait up to librdkafka's
    ``socket.timeout.ms`` (a minute) for a coordinator; the daemon bounds the wait
    for ``close`` instead."""

    def __init__(self, cfg: KafkaConfig, *, on_assign: OnAssign, on_revoke: OnRevoke) -> None:
        self.cfg = cfg
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self.poll_failing_since: float | None = None
        self._owned: set[PartitionId] = set()
        self._paused = False
        self._coordinator_down_since: float | None = None  # by the statistics
        self.consumer = Consumer({
            "group.id": cfg.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": cfg.auto_offset_reset,
            "max.poll.interval.ms": cfg.max_poll_interval_ms,
            "session.timeout.ms": cfg.session_timeout_ms,
            "heartbeat.interval.ms": max(100, cfg.session_timeout_ms // 3),
            "fetch.max.bytes": cfg.fetch_max_bytes,
            "max.partition.fetch.bytes": cfg.max_partition_fetch_bytes,
            "receive.message.max.bytes": max(_RECEIVE_MAX_BYTES, cfg.fetch_max_bytes + 512),
            "message.max.bytes": min(_MESSAGE_MAX_BYTES, cfg.fetch_max_bytes),
            "statistics.interval.ms": STATS_INTERVAL_MS,
            "stats_cb": self._stats,
            "error_cb": self._error,
            "on_commit": _committed,
            **connection_settings(cfg),
        })
        self._dlq: Producer | None = None
        if cfg.dead_letter_topic:
            self._dlq = Producer({**DEAD_LETTER_PRODUCER, "error_cb": self._error,
                                  **connection_settings(cfg)})
        self._letters = DeadLetterOutbox(self._send_letter)
        self.consumer.subscribe(list(cfg.topics), on_assign=self._assigned,
                                on_revoke=self._revoked, on_lost=self._revoked)

    # -- librdkafka's callbacks (run inside consume / close) --------------------------
    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        pids = [(tp.topic, tp.partition) for tp in partitions]
        log.info("partitions assigned: %s", fmt_partitions(pids))
        resume = self.on_assign(pids)
        for tp in partitions:
            offset = resume.get((tp.topic, tp.partition))
            tp.offset = OFFSET_INVALID if offset is None else offset  # invalid: the group's
        consumer.assign(partitions)
        self._owned.update(pids)
        if self._paused:
            consumer.pause(partitions)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        pids = [(tp.topic, tp.partition) for tp in partitions]
        if pids:
            log.info("partitions revoked: %s", fmt_partitions(pids))
            self.on_revoke(pids)
        self._owned.difference_update(pids)
        consumer.unassign()

    def _error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN and self.poll_failing_since is None:
            self.poll_failing_since = time.monotonic()
            log.warning("cannot consume (%s); retrying", err.str())
        elif err.fatal():
            log.error("Kafka client failed: %s", err.str())
        else:
            log.debug("Kafka client: %s", err.str())

    def _stats(self, stats_json: str) -> None:
        now = time.monotonic()
        if (json.loads(stats_json).get("cgrp") or {}).get("state") != "up":
            if self._coordinator_down_since is None:
                self._coordinator_down_since = now
            return
        self._coordinator_down_since = None
        if self.poll_failing_since is not None:
            log.info("consuming again after %.0fs", now - self.poll_failing_since)
            self.poll_failing_since = None

    # -- Source -----------------------------------------------------------------------
    def poll(self) -> dict[PartitionId, list[Record]]:
        """The next records per partition; librdkafka reconnects on its own, so an
        outage shows as empty polls (and ``connected()`` False), never as an error."""
        try:
            messages = self.consumer.consume(num_messages=self.cfg.max_poll_records,
                                             timeout=self.cfg.poll_timeout_ms / 1000)
        except KafkaException as exc:
            log.warning("cannot consume (%s); retrying", exc)
            time.sleep(min(1.0, self.cfg.poll_timeout_ms / 1000))
            return {}
        out: dict[Any, list[Record]] = {}  # a fetched message has its topic, partition, offset
        for m in messages:
            err = m.error()
            if err is not None:
                log.warning("fetch error on %s[%s]: %s", m.topic(), m.partition(), err.str())
                continue
            pid = (m.topic(), m.partition())
            records = out.get(pid)
            if records is None:
                records = out[pid] = []
            records.append(Record(m.offset(), m.value(), m.key()))  # type: ignore[arg-type]
        for pid in out.keys() - self._owned:  # fetched before a revocation: its next owner's
            del out[pid]
        return out

    def connected(self) -> bool:
        """False from librdkafka's report that every broker is down until the
        statistics (each second) find the group coordinator up again, and once they
        have found it not up for a whole session timeout."""
        if self.poll_failing_since is not None:
            return False
        down = self._coordinator_down_since
        return down is None or time.monotonic() - down < self.cfg.session_timeout_ms / 1000

    def assignment(self) -> set[PartitionId]:
        return set(self._owned)

    def commit(self, offsets: dict[PartitionId, int], *, blocking: bool = True) -> None:
        todo = [TopicPartition(t, p, off) for (t, p), off in offsets.items() if (t, p) in self._owned]
        if todo:
            self.consumer.commit(offsets=todo, asynchronous=True)

    def dead_letter(self, pid: PartitionId, record: Record, reason: str, detail: str) -> None:
        topic = self.cfg.dead_letter_topic
        if self._dlq is None or topic is None:
            return
        value, headers = dead_letter_record(pid, record, reason, detail,
                                            self.cfg.max_partition_fetch_bytes)
        self._letters.add(DeadLetter(topic, value, record.key, headers))

    def _send_letter(self, letter: DeadLetter) -> Outcome:
        """Raises BufferError while the producer's queue is full."""
        assert self._dlq is not None
        result: list[str | None] = [None]

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            result[0] = "" if err is None else err.str()

        self._dlq.produce(letter.topic, value=letter.value, key=letter.key,
                          headers=list(letter.headers), on_delivery=delivered)
        self._dlq.poll(0)
        return lambda: result[0]

    def flush_dead_letters(self, timeout_s: float) -> int:
        if self._dlq is None:
            return 0
        self._letters.unacknowledged()  # the failed ones go again before the wait
        self._dlq.flush(timeout_s)
        return self._letters.unacknowledged()

    def pause(self) -> None:
        self._paused = True
        self.consumer.pause(self._partitions())

    def resume(self) -> None:
        self._paused = False
        self.consumer.resume(self._partitions())

    def highwater(self, pid: PartitionId) -> int | None:
        """The partition's end as of the last fetch (None before the first)."""
        if pid not in self._owned:
            return None
        _, high = self.consumer.get_watermark_offsets(TopicPartition(*pid), cached=True)
        return high if high >= 0 else None

    def close(self) -> None:
        self.consumer.close()  # its revocation checkpoints: dead letters too
        if self._dlq is not None:  # unacknowledged letters: the last checkpoint failed
            self._dlq.flush(CLOSE_WAIT_S)

    def _partitions(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self._owned]


def _committed(err: KafkaError | None, partitions: list[TopicPartition]) -> None:
    failed = [f"{tp.topic}[{tp.partition}]: {tp.error.str()}" for tp in partitions
              if tp.error is not None]
    if err is not None or failed:
        log.warning("offset commit to Kafka failed (%s); the store has the offsets",
                    err.str() if err is not None else "; ".join(failed))
