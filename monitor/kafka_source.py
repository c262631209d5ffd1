"""The kafka-python source (``kafka.client: kafka-python``, the default): a
consumer-group member that hands batches to the pipeline and commits offsets only
when the daemon says they are safe (``monitor.source.Source``)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata

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


# the dead-letter producer; a send() waits at most max_block_ms for metadata or room
# Not idempotent (librdkafka's default too): after a letter expired in flight (stored,
# its answer lost), an idempotent producer needs a new producer epoch, and against a
# broker that does not grant it (Kafka before 2.5, the test broker) it delivered nothing
# more. The outbox sends a failed letter again anyway: at least once, not exactly once.
DEAD_LETTER_PRODUCER: dict[str, Any] = {"acks": "all", "max_block_ms": 1000,
                                        "enable_idempotence": False}


# kafka-python's names for our TLS and SASL settings
_SECURITY_NAMES = {"ssl_cafile": "ssl_cafile", "ssl_certfile": "ssl_certfile",
                   "ssl_keyfile": "ssl_keyfile", "ssl_password": "ssl_password",
                   "sasl_mechanism": "sasl_mechanism", "sasl_username": "sasl_plain_username",
                   "sasl_password": "sasl_plain_password"}


# how long one attempt to reach a broker at start may block (kafka-python's default,
# 30 s, held a SIGTERM that long): the daemon retries with backoff, checking for a stop
BOOTSTRAP_TIMEOUT_MS = 5000


def connection_settings(cfg: KafkaConfig) -> dict[str, Any]:
    """Settings shared by the consumer and the dead-letter producer (TLS, SASL)."""
    settings: dict[str, Any] = {
        "bootstrap_servers": list(cfg.bootstrap_servers),
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
        "client_id": cfg.client_id,
        "security_protocol": cfg.security_protocol,
        "ssl_check_hostname": cfg.ssl_check_hostname,
    }
    settings.update(security_settings(cfg, _SECURITY_NAMES))
    return settings


class _Listener(ConsumerRebalanceListener):
    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    """kafka-python calls these on its IO thread, which also sends the heartbeats."""

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        pids = [(tp.topic, tp.partition) for tp in revoked]
        if pids:
            log.info("partitions revoked: %s", fmt_partitions(pids))
            held = self.source.unrestored
            self.source.unrestored = [pid for pid in held if pid not in pids]
            # a partition revoked before its state was restored has nothing to store
            if owned := [pid for pid in pids if pid not in held]:
                self.source.on_revoke(owned)

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """Hold the new partitions (paused) until ``poll`` restores their state on
        the caller's thread. Restored here, a restore longer than the session timeout
        (a large state, a store outage) would stop the heartbeats: the member would
        be evicted, its partitions reassigned and restored again."""
        pids = [(tp.topic, tp.partition) for tp in assigned]
        log.info("partitions assigned: %s", fmt_partitions(pids))
        if pids:
            self.source.consumer.pause(*[TopicPartition(*pid) for pid in pids])
            self.source.unrestored.extend(pids)


class KafkaSource:
    """A ``monitor.source.Source`` on kafka-python."""

    def __init__(
        self,
        cfg: KafkaConfig,
        *,
        on_assign: OnAssign,
        on_revoke: OnRevoke,
    ) -> None:
        self.cfg = cfg
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self.consumer = KafkaConsumer(
            group_id=cfg.group_id,
            enable_auto_commit=False,
            auto_offset_reset=cfg.auto_offset_reset,
            max_poll_records=cfg.max_poll_records,
            max_poll_interval_ms=cfg.max_poll_interval_ms,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=max(100, cfg.session_timeout_ms // 3),
            fetch_max_bytes=cfg.fetch_max_bytes,
            max_partition_fetch_bytes=cfg.max_partition_fetch_bytes,
            # a consumer never creates its input: on a broker that auto-creates topics
            # a typo in kafka.topics would make an empty topic, watched in silence
            # (librdkafka's consumer does not ask for it either)
            allow_auto_create_topics=False,
            **connection_settings(cfg),
        )
        self.poll_failing_since: float | None = None
        self.unrestored: list[PartitionId] = []  # assigned, paused until poll restores them
        self._paused = False  # paused by the daemon (pause()), not just while restoring
        self._dlq: KafkaProducer | None = None
        if cfg.dead_letter_topic:
            self._dlq = KafkaProducer(**DEAD_LETTER_PRODUCER, **connection_settings(cfg))
        self._letters = DeadLetterOutbox(self._send_letter)
        self.consumer.subscribe(list(cfg.topics), listener=_Listener(self))

    def poll(self) -> dict[PartitionId, list[Record]]:
        """The next records per partition; nothing while the broker is unreachable
        (kafka-python raises its connection errors out of ``poll``: the loop must
        outlive them, reconnect and resume from the positions it holds)."""
        try:
            polled = self.consumer.poll(timeout_ms=self.cfg.poll_timeout_ms,
                                        max_records=self.cfg.max_poll_records)
        except KafkaError as exc:
            if self.poll_failing_since is None:
                self.poll_failing_since = time.monotonic()
                log.warning("cannot consume (%s: %s); retrying", type(exc).__name__, exc)
            time.sleep(min(1.0, self.cfg.poll_timeout_ms / 1000))
            return {}
        finally:
            self._restore_assigned()
        if self.poll_failing_since is not None:
            log.info("consuming again after %.0fs", time.monotonic() - self.poll_failing_since)
            self.poll_failing_since = None
        return {
            (tp.topic, tp.partition): [Record(m.offset, m.value, m.key) for m in msgs]
            for tp, msgs in polled.items()
        }

    def _restore_assigned(self) -> None:
        """Restore the state of the partitions assigned during the last poll (the
        daemon's ``on_assign``; a stop while it waits for the store raises
        ``StoppedWhileRestoring``), move each to its stored offset and let it fetch."""
        if not self.unrestored:  # every poll but those that brought an assignment
            return
        pids, self.unrestored = self.unrestored, []
        owned = self.assignment()
        pids = [pid for pid in pids if pid in owned]
        if not pids:
            return
        for pid, offset in self.on_assign(pids).items():
            if offset is not None:
                self.consumer.seek(TopicPartition(*pid), offset)
        if not self._paused:
            self.consumer.resume(*[TopicPartition(*pid) for pid in pids])

    def connected(self) -> bool:
        """False once the group coordinator has not answered a heartbeat for a whole
        session timeout: the broker is unreachable, so nothing can be consumed."""
        heartbeat = getattr(getattr(self.consumer, "_coordinator", None), "heartbeat", None)
        if self.poll_failing_since is not None:
            return False
        if heartbeat is None:  # another kafka-python layout: no signal, assume connected
            return True
        return not heartbeat.session_timeout_expired()

    def assignment(self) -> set[PartitionId]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def commit(self, offsets: dict[PartitionId, int], *, blocking: bool = True) -> None:
        """Commit to the group. Inside a rebalance listener (kafka-python runs it on
        its IO thread, where blocking calls are refused) pass ``blocking=False``: the
        outcome then comes from a later ``poll``."""
        owned = self.assignment()
        todo = {TopicPartition(*pid): OffsetAndMetadata(off, "", -1)
                for pid, off in offsets.items() if pid in owned}
        if not todo:
            return
        if not blocking:
            self.consumer.commit_async(offsets=todo, callback=_committed)
        else:  # waits at most a session timeout: after it the group has evicted us anyway
            self.consumer.commit(offsets=todo, timeout_ms=self.cfg.session_timeout_ms)

    def dead_letter(self, pid: PartitionId, record: Record, reason: str, detail: str) -> None:
        topic = self.cfg.dead_letter_topic
        if self._dlq is None or topic is None:
            return
        value, headers = dead_letter_record(pid, record, reason, detail,
                                            self.cfg.max_partition_fetch_bytes)
        self._letters.add(DeadLetter(topic, value, record.key, headers))

    def _send_letter(self, letter: DeadLetter) -> Outcome:
        assert self._dlq is not None
        future = self._dlq.send(letter.topic, value=letter.value, key=letter.key,
                                headers=letter.headers)
        return lambda: (None if not future.is_done
                        else "" if future.succeeded() else str(future.exception))

    def flush_dead_letters(self, timeout_s: float) -> int:
        if self._dlq is None:
            return 0
        self._letters.unacknowledged()  # the failed ones go again before the wait
        with contextlib.suppress(KafkaTimeoutError):  # the waiting ones are counted
            self._dlq.flush(timeout=timeout_s)
        return self._letters.unacknowledged()

    def pause(self) -> None:
        self._paused = True
        self.consumer.pause(*self.consumer.assignment())

    def resume(self) -> None:
        self._paused = False
        self.consumer.resume(*self.consumer.paused())

    def highwater(self, pid: PartitionId) -> int | None:
        """The partition's end as of the last fetch (None before the first)."""
        tp = TopicPartition(*pid)
        if tp not in self.consumer.assignment():
            return None
        return self.consumer.highwater(tp)

    def close(self) -> None:
        self.consumer.close(autocommit=False)  # its revocation checkpoints: dead letters too
        if self._dlq is not None:  # unacknowledged letters: the last checkpoint failed
            self._dlq.close(timeout=CLOSE_WAIT_S)


def _committed(_offsets: object, result: object) -> None:
    if isinstance(result, Exception):
        log.warning("offset commit to Kafka failed (%s); the store has the offsets", result)
