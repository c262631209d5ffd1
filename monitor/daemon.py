"""``inferwatch run``: the main loop.

poll a batch → process → dead-letter the bad records → put the alert records
raised in the outbox → deliver the outbox → maybe checkpoint (detector state and
offsets in one store transaction, then the Kafka commit). SIGTERM/SIGINT finish
the batch, checkpoint and leave the group.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import sqlalchemy as sa
from kafka.errors import KafkaError

from alerts.notify import build_notifiers
from alerts.outbox import Dispatcher
from alerts.sinks import ConsoleSink, JsonlSink, Sink
from detectors.neighbours import compile_walk
from monitor.checkpoint import Checkpointer
from monitor.config import Config
from monitor.http import HealthServer
from monitor.logs import short_error
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline
from monitor.scheduler import JobService
from monitor.source import Source, StoppedWhileRestoring, open_source
from monitor.state import PartitionId
from monitor.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")

# how long a checkpoint waits for Kafka to acknowledge the dead-letter records
DEAD_LETTER_WAIT_S = 2.0
# how long a member may hold no partition before the log says so, and how often again
# while it lasts (a missing topic or a surplus member otherwise idles in silence)
NO_PARTITIONS_WARN_S = 60.0
NO_PARTITIONS_REPEAT_S = 600.0


class StartupError(RuntimeError):
    """The daemon cannot start for a reason the operator must fix (exit 1)."""


def build_sinks(config: Config) -> list[Sink]:
    sinks: list[Sink] = []
    if config.alerts.console.enabled:
        sinks.append(ConsoleSink())
    if config.alerts.jsonl.path:
        sinks.append(JsonlSink(config.alerts.jsonl.path))
    return sinks


class Daemon:
    """One consumer-group member with its pipeline, store, sinks and HTTP port."""

    def __init__(self, config: Config, *, sinks: Sequence[Sink] | None = None,
                 metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.pipeline = Pipeline(config, self.metrics)
        self.store = Store(config.store.url.get_secret_value(), pool_size=config.store.pool_size)
        self.checkpointer = Checkpointer(self.store, self.pipeline, group=config.kafka.group_id,
                                         producer=config.instance_id, on_release=self._forget)
        self.sinks = list(build_sinks(config) if sinks is None else sinks)
        if sinks is None:
            self.sinks.extend(build_notifiers(config, self.store, self.metrics))
        self.dispatcher = Dispatcher(self.store, self.sinks, config.instance_id,
                                     on_result=self._delivery_result)
        self.stopping = threading.Event()
        self.source: Source | None = None
        self.http: HealthServer | None = None
        self.last_loop = time.monotonic()
        self.store_ok = False
        self.dead_letters_waiting = 0  # as of the last checkpoint
        self.restored = False
        self.restoring = False  # an assignment's state is being restored from the store
        self.last_checkpoint = time.monotonic()
        self.last_records: dict[PartitionId, float] = {}
        self.assigned_at: dict[PartitionId, float] = {}
        # until when a partition's end, as the client knows it, may predate an outage or
        # a pause (a caught-up partition may have had records appended meanwhile)
        self.ends_unsure: dict[PartitionId, float] = {}
        self.jobs: JobService | None = None  # scheduled jobs (monitor.scheduler)
        self.unassigned_since: float | None = None  # since when no partition is assigned
        self._unassigned_reported: float | None = None  # when the log last said so
        self._checkpoint_backoff = 0.0
        self.pending_since: float | None = None  # when the oldest pending alert was raised

    # -- probes ---------------------------------------------------------------------
    def healthy(self) -> tuple[bool, str]:
        age = time.monotonic() - self.last_loop
        limit = max(30.0, 3 * self.config.kafka.poll_timeout_ms / 1000)
        if age > limit:
            return False, f"main loop stalled for {age:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self.source is None or not self.source.assignment():
            since = self.unassigned_since
            if since is None or time.monotonic() - since < NO_PARTITIONS_WARN_S:
                return False, "no partitions assigned"
            return False, (f"no partitions assigned for {time.monotonic() - since:.0f}s "
                           f"(kafka.topics: {', '.join(self.config.kafka.topics)})")
        if not self.restored:
            return False, "state not restored"
        if not self.source.connected():
            return False, "cannot consume: the Kafka group coordinator does not answer"
        if not self.store_ok:
            return False, "store unreachable"
        if self.dead_letters_waiting:
            return False, (f"{self.dead_letters_waiting} dead-letter records wait for "
                           "Kafka's acknowledgement")
        return True, "ok"

    # -- lifecycle ------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: object) -> None:
            log.info("%s received: finishing the batch, checkpointing, leaving the group",
                     signal.Signals(signum).name)
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def _retrying(self, action: Callable[[], T], failing: str, *, max_delay_s: float,
                  errors: type[Exception] = Exception, store: bool = False) -> T | None:
        """``action()``, retried with backoff (0.5 s, doubling up to ``max_delay_s``)
        while it raises ``errors``: alive (the loop's age stays fresh), not ready;
        ``store``: a failure means the store is unreachable. None once stopping."""
        delay = 0.5
        while not self.stopping.is_set():
            try:
                return action()
            except errors as exc:
                if store:
                    self.store_ok = False
                self.last_loop = time.monotonic()
                log.warning("%s (%s); retrying in %.1fs", failing, short_error(exc), delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, max_delay_s)
        return None

    def _migrate(self) -> None:
        """The store's tables; a store that comes up later is waited for."""
        def migrate() -> bool:
            self.store.migrate()
            return True

        self.store_ok = bool(self._retrying(migrate, "store unreachable", store=True,
                                            max_delay_s=self.config.checkpoint.retry_max_s))

    def run(self) -> None:
        log.info("starting inferwatch %s as %s", _version(), self.config.instance_id)
        if self.config.http.enabled:
            host, port = self.config.http.host, self.config.http.port
            try:
                self.http = HealthServer(host, port, self.metrics.registry, self.healthy,
                                         self.ready)
            except OSError as exc:
                raise StartupError(f"cannot serve /metrics and the probes on {host}:{port} "
                                   f"({exc.strerror}): free the port or set http.port") from None
            self.http.start()
            log.info("metrics and health on port %d", self.http.port)
        try:
            self._migrate()
            if self.config.jobs.enabled and not self.stopping.is_set():
                self.jobs = JobService(self.config, self.store, registry=self.metrics.registry)
                self.jobs.start()
            compile_walk()  # before joining: the first batch does not wait for numba
            self.source = self._open_source()  # None once stopping
            while not self.stopping.is_set():
                self._step()
        except StoppedWhileRestoring:
            log.warning("stopped while the assigned partitions' state waited for the store: "
                        "nothing is stored, their next owner restores it")
        finally:
            self._shutdown()

    def _open_source(self) -> Source | None:
        """Join the consumer group; kafka-python must reach a broker first (an
        unreachable or untrusted one: alive, not ready, retrying with backoff)."""
        return self._retrying(
            lambda: open_source(self.config.kafka, on_assign=self._on_assign,
                                on_revoke=self._on_revoke),
            "cannot reach Kafka", errors=KafkaError, max_delay_s=30.0)

    def _step(self) -> None:
        assert self.source is not None
        self.last_loop = time.monotonic()
        batches = self.source.poll()
        now = time.monotonic()
        if self.source.assignment() or not self.source.connected():
            self.unassigned_since = None  # an outage has its own warnings
        else:
            self._report_unassigned(now)
        if self._checkpoint_backoff or not self.source.connected():
            # paused, or the broker away: the client fetches nothing and the ends it
            # holds go stale. Each partition counts as behind until it delivers, or
            # for idle_partition_s once fetching resumes (one without new records)
            until = now + self.config.kafka.idle_partition_s
            self.ends_unsure.update(dict.fromkeys(self.pipeline.partitions, until))
        if batches:
            if self._all_silent(now):
                # deliveries resume after every partition was silent (a broker outage, a
                # quiet topic): each gets idle_partition_s anew to catch up before it stops
                # holding the watermark, or the first to deliver would close the windows
                # the others' older events still belong to
                self.last_records.update((pid, now) for pid in self.pipeline.partitions)
            with self.metrics.batch_seconds.time():
                for pid, records in batches.items():
                    if pid not in self.pipeline.partitions:
                        continue  # another member has it since (Checkpointer.save)
                    result = self.pipeline.process(pid, records)
                    self.last_records[pid] = now
                    self.ends_unsure.pop(pid, None)  # this fetch brought its end
                    for rec, bad in result.bad:
                        self.source.dead_letter(pid, rec, bad.reason, bad.detail)
                        if self.config.kafka.dead_letter_topic:
                            self.metrics.dead_lettered.inc()
        active = self._active_partitions(now)
        self.metrics.watermark_partitions.set(len(active))
        self.pipeline.advance(active)
        self._journal(now)
        # deliver first: an alert raised in this batch does not wait for the checkpoint
        if self.store_ok:  # while the store is away, the outbox waits in it
            try:
                self.dispatcher.deliver()
                for sink, depth in self.dispatcher.depth.items():
                    self.metrics.outbox_depth.labels(sink).set(depth)
            except sa.exc.SQLAlchemyError as exc:  # the next checkpoint retries the store
                self.store_ok = False
                log.warning("alert delivery paused: store unreachable (%s)", short_error(exc))
        cp = self.config.checkpoint
        due = (now - self.last_checkpoint >= cp.interval_s
               or self.pipeline.events_since_checkpoint >= cp.max_events)
        if due and now >= self._checkpoint_backoff_until():
            # the loop does not wait for the group's answer: the store has the offsets
            self.checkpoint(blocking_commit=False)

    def _report_unassigned(self, now: float) -> None:
        """Say in the log, after ``NO_PARTITIONS_WARN_S`` without a partition and every
        ``NO_PARTITIONS_REPEAT_S`` while it lasts, why this member may have none."""
        if self.unassigned_since is None:
            self.unassigned_since, self._unassigned_reported = now, None
            return
        waited = now - self.unassigned_since
        last = self._unassigned_reported
        if waited < NO_PARTITIONS_WARN_S or (last is not None
                                             and now - last < NO_PARTITIONS_REPEAT_S):
            return
        self._unassigned_reported = now
        kafka = self.config.kafka
        log.warning("no partitions assigned for %.0fs (kafka.topics: %s): check that the "
                    "topics exist (inferwatch never creates them) and that group %r has "
                    "no more members than the topics have partitions; until then this "
                    "member reads nothing and is not ready", waited, ", ".join(kafka.topics),
                    kafka.group_id)

    def _journal(self, now: float) -> None:
        """Alert records go to the outbox ``alert_flush_s`` after they are raised,
        without waiting for the checkpoint (``Checkpointer.journal``)."""
        if not self.pipeline.pending:
            self.pending_since = None
            return
        if self.pending_since is None:
            self.pending_since = now
        if not self.store_ok or now - self.pending_since < self.config.checkpoint.alert_flush_s:
            return  # while the store is away, the next checkpoint retries with backoff
        try:
            self.checkpointer.journal()
        except Exception as exc:
            self.store_ok = False
            log.warning("alert records wait for the store (%s); the next checkpoint retries",
                        short_error(exc))
            return
        self.pending_since = None

    def _silent_for(self, pid: PartitionId, now: float) -> float:
        return now - self.last_records.get(pid, self.assigned_at.get(pid, now))

    def _all_silent(self, now: float) -> bool:
        """Whether no partition delivered for ``idle_partition_s``."""
        idle = self.config.kafka.idle_partition_s
        return all(self._silent_for(pid, now) >= idle for pid in self.pipeline.partitions)

    def _active_partitions(self, now: float) -> list[PartitionId]:
        """Partitions that still hold unread records, and so may deliver events
        older than the others'; one silent for ``idle_partition_s`` while others
        deliver stops counting (a stalled partition does not hold the windows). When
        every one is silent, the silence is not theirs (the broker is away): none
        stops counting. After an outage or a pause a partition counts until it
        delivers again, or for ``idle_partition_s``: the end it seemed caught up to
        may be stale."""
        assert self.source is not None
        idle = self.config.kafka.idle_partition_s
        everyone_silent = self._all_silent(now)
        active = []
        for pid in self.pipeline.partitions:
            if not everyone_silent and self._silent_for(pid, now) >= idle:
                continue
            if self._unread_of(pid) == 0 and self.ends_unsure.get(pid, 0.0) <= now:
                continue
            active.append(pid)
        return active

    def _unread_of(self, pid: PartitionId) -> int | None:
        """Records of ``pid`` not read yet, as of the last fetch (None: end not known)."""
        assert self.source is not None
        high = self.source.highwater(pid)
        if high is None:
            return None
        offset = self.pipeline.partitions[pid].offset
        return max(0, high - (offset if offset is not None else 0))

    def _checkpoint_backoff_until(self) -> float:
        return self.last_checkpoint + self._checkpoint_backoff

    def checkpoint(self, *, blocking_commit: bool = True) -> bool:
        """Store state + alerts + offsets, then commit the offsets to Kafka. Offsets
        past a malformed record are stored only once Kafka has acknowledged its
        dead-letter copy: until then the checkpoint fails and is retried."""
        assert self.source is not None
        if self.restoring:
            # the pipeline does not hold the stored state (its restore was cut short):
            # storing what it holds would overwrite that state with a blank one
            return False
        started = time.monotonic()
        try:
            waiting = self.source.flush_dead_letters(DEAD_LETTER_WAIT_S)
        except Exception as exc:
            return self._checkpoint_failed(f"dead-letter records: {short_error(exc)}")
        self.dead_letters_waiting = waiting
        if waiting:
            return self._checkpoint_failed(
                f"{waiting} dead-letter records not acknowledged by Kafka yet")
        try:
            offsets = self.checkpointer.save()
        except Exception as exc:
            self.store_ok = False
            return self._checkpoint_failed(short_error(exc))
        self.metrics.checkpoint_seconds.observe(time.monotonic() - started)
        if not self.store_ok or self._checkpoint_backoff:
            log.info("checkpoint succeeded; resuming consumption")
            self.source.resume()
        self.store_ok = True
        self._checkpoint_backoff = 0.0
        self.last_checkpoint = time.monotonic()
        if self.source.connected():  # else a commit only waits on an absent coordinator
            try:
                self.source.commit(offsets, blocking=blocking_commit)
            except Exception as exc:
                log.warning("offset commit to Kafka failed (%s); the store has them", short_error(exc))
        else:
            log.debug("offset commit skipped: the group coordinator is unreachable")
        self.metrics.tracked_clients.set(self.pipeline.tracked_clients())
        for pid, state in self.pipeline.partitions.items():
            lag = self._unread_of(pid)
            if lag is not None and state.offset is not None:
                self.metrics.consumer_lag.labels(pid[0], str(pid[1])).set(lag)
        return True

    def _checkpoint_failed(self, reason: str) -> bool:
        """Pause consumption and retry the checkpoint with backoff; False."""
        assert self.source is not None
        self.metrics.checkpoint_failures.inc()
        self._checkpoint_backoff = min(max(1.0, self._checkpoint_backoff * 2),
                                       self.config.checkpoint.retry_max_s)
        self.last_checkpoint = time.monotonic()
        log.warning("checkpoint failed (%s); consumption paused, retrying in %.0fs",
                    reason, self._checkpoint_backoff)
        self.source.pause()
        return False

    def _on_assign(self, pids: list[PartitionId]) -> dict[PartitionId, int | None]:
        """Restore the state of ``pids`` from the store, retrying with backoff while
        it is unreachable (a stop ends the wait: ``StoppedWhileRestoring``)."""
        self.restored = False
        self.restoring = True
        resume = self._retrying(lambda: self.checkpointer.restore(pids),
                                "restoring state failed", store=True,
                                max_delay_s=self.config.checkpoint.retry_max_s)
        if resume is None:
            raise StoppedWhileRestoring
        self.restored = True
        self.restoring = False
        self.store_ok = True
        now = time.monotonic()
        self.assigned_at.update((pid, now) for pid in pids)
        # the end a client cached for a partition it held before may be stale: both
        # clients keep it for a partition a rebalance gives back, librdkafka also
        # through an outage that cost the group (fetching stopped meanwhile). Like
        # after an outage, each counts as behind until it delivers, or for
        # idle_partition_s
        self.ends_unsure.update(dict.fromkeys(pids, now + self.config.kafka.idle_partition_s))
        return resume

    def _on_revoke(self, pids: list[PartitionId]) -> None:
        if not self.checkpoint(blocking_commit=False):
            log.warning("partitions %s leave without a fresh checkpoint: their next owner "
                        "re-reads from the last stored one (at-least-once)", pids)
        for pid in pids:
            self.pipeline.release(pid)
        self._forget(pids)

    def _forget(self, pids: list[PartitionId]) -> None:
        """Drop what the loop keeps of partitions it no longer holds: revoked, or taken by
        another member (``Checkpointer._release_taken``), whose revoke comes only once the
        group tells this member (an evicted one: when it reaches Kafka again)."""
        for pid in pids:
            self.last_records.pop(pid, None)
            self.assigned_at.pop(pid, None)
            self.ends_unsure.pop(pid, None)
            with contextlib.suppress(KeyError):  # its lag is the next owner's to report
                self.metrics.consumer_lag.remove(pid[0], str(pid[1]))

    def _shutdown(self) -> None:
        try:
            if self.source is not None:
                try:
                    self.checkpoint()
                    self._finish_delivery()
                finally:
                    self._leave_group()
        finally:
            if self.jobs is not None:
                self.jobs.stop()
            if self.http is not None:
                self.http.stop()
            self.store.close()

    def _finish_delivery(self) -> None:
        """Deliver what the outbox holds, then wait for the sends in flight and record
        them (``Dispatcher.finish``), whether or not the last checkpoint succeeded: a
        message Slack took is not posted again after the restart."""
        try:
            if self.store_ok:
                self.dispatcher.deliver()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("alert delivery stopped: store unreachable (%s); the restart "
                        "delivers the rest", short_error(exc))
        finally:
            self.dispatcher.finish()

    def _leave_group(self) -> None:
        """Close the source, waiting at most a session timeout: by then the group has
        evicted this member anyway, and a broker that drops packets without closing
        the connection can hold a Kafka client's close for minutes. The last
        checkpoint is tried before."""
        source = self.source
        assert source is not None
        failed: list[Exception] = []

        def close() -> None:
            try:
                source.close()
            except Exception as exc:  # kafka-python: dead-letter copies never acknowledged
                failed.append(exc)

        closing = threading.Thread(target=close, name="leave-group", daemon=True)
        closing.start()
        closing.join(self.config.kafka.session_timeout_ms / 1000)
        if closing.is_alive():
            log.warning("leaving the consumer group takes over %.0fs; exiting without it (the "
                        "group evicts this member after its session timeout)",
                        self.config.kafka.session_timeout_ms / 1000)
        elif failed:
            log.warning("closing the Kafka clients failed (%s)", short_error(failed[0]))
        else:
            log.info("left the consumer group")

    def _delivery_result(self, sink: str, result: str, n: int) -> None:
        self.metrics.notifications.labels(sink, result).inc(n)


def _version() -> str:
    from monitor import __version__

    return __version__
