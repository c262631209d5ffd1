"""Delivery from the durable outbox: every stored alert record reaches every sink
once, in order, across outages and restarts."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from alerts.sinks import DeliveryError, Sink

log = logging.getLogger(__name__)


class OutboxEntry(NamedTuple):
    """An alert record on its way into the outbox, under its
    ``alerts.model.delivery_key`` (the outbox holds each key once; None: no key)."""

    delivery_key: str | None
    fingerprint: str
    record: str
    # the partition (topic, number) whose events raised it, None for any other: when
    # another member takes that partition, its records not in the outbox yet are dropped
    # (monitor.pipeline.Pipeline.release): they are the new owner's to raise again
    partition: tuple[str, int] | None = None


class _Row(Protocol):
    @property
    def seq(self) -> int: ...
    @property
    def record(self) -> str: ...


class OutboxStore(Protocol):
    def outbox_after(self, sink: str, producer: str | None = None,
                     limit: int = 500) -> Sequence[_Row]: ...
    def advance_cursor(self, sink: str, seq: int) -> None: ...
    def outbox_depth(self, sink: str, producer: str | None = None) -> int: ...


class Dispatcher:
    """Delivers pending outbox rows to each sink; a failing sink waits with
    exponential backoff (or the server's Retry-After) and blocks only itself."""

    def __init__(self, store: OutboxStore, sinks: Sequence[Sink], producer: str, *,
                 on_result: object = None, max_backoff_s: float = 300.0,
                 clock: object = time.monotonic) -> None:
        self.store = store
        self.sinks = list(sinks)
        self.producer = producer
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self.on_result = on_result
        self._retry_at: dict[str, float] = {}
        self._backoff: dict[str, float] = {}
        self._checked_prefix: set[str] = set()
        # per sink: records stored and not delivered to it, as of its last attempt (0 once
        # it has caught up; counted again at each failed attempt)
        self.depth: dict[str, int] = {}

    def _cursor_name(self, sink: Sink) -> str:
        return f"{sink.name}@{self.producer}" if sink.local else sink.name

    def deliver(self) -> int:
        """One pass over the sinks; returns how many records were delivered."""
        delivered = 0
        for sink in self.sinks:
            now = self.clock()  # type: ignore[operator]
            if self._retry_at.get(sink.name, 0.0) > now:
                continue
            delivered += self._deliver_to(sink, now)
        for sink in self.sinks:
            tick = getattr(sink, "tick", None)  # the notifier: group timers, its send queue
            if tick is not None:
                tick()
        return delivered

    def finish(self) -> None:
        """Before the process exits: sinks that send in the background (the
        notifier) wait for what is in flight and record it."""
        for sink in self.sinks:
            finish = getattr(sink, "finish", None)
            if finish is not None:
                finish()

    def _deliver_to(self, sink: Sink, now: float) -> int:
        cursor = self._cursor_name(sink)
        total = 0
        while True:
            rows = self.store.outbox_after(cursor, self.producer if sink.local else None)
            if not rows:
                self.depth[sink.name] = 0
                return total
            records = [r.record for r in rows]
            # _checked_prefix: the cursors known to match what their sink holds. A sink
            # may hold records past its cursor after a crash, or when the store went
            # away between a send and the cursor's move: those are not sent again.
            if cursor not in self._checked_prefix:
                try:
                    done = sink.delivered_prefix(records)
                except Exception as exc:
                    self._blocked(sink, cursor, exc, now)
                    return total
                if done:
                    log.info("%s already holds %d pending record(s); not writing them again",
                             sink.name, done)
                    self.store.advance_cursor(cursor, rows[done - 1].seq)
                    rows, records = rows[done:], records[done:]
                self._checked_prefix.add(cursor)
                if not rows:
                    continue
            self._checked_prefix.discard(cursor)
            try:
                sink.send(records)
            except Exception as exc:
                self._blocked(sink, cursor, exc, now)
                return total
            self.store.advance_cursor(cursor, rows[-1].seq)
            self._checked_prefix.add(cursor)
            self._backoff.pop(sink.name, None)
            self._report(sink.name, "sent", len(rows))
            total += len(rows)

    def _blocked(self, sink: Sink, cursor: str, exc: Exception, now: float) -> None:
        """The sink itself failed: it alone waits. An exception other than
        DeliveryError (the console on a full disk, a file path that is a directory)
        is retried with backoff."""
        if not isinstance(exc, DeliveryError):
            exc = DeliveryError(f"{type(exc).__name__}: {exc}", retryable=True, reason="error")
        self._failed(sink, exc, now)
        self.depth[sink.name] = self.store.outbox_depth(
            cursor, self.producer if sink.local else None)

    def _failed(self, sink: Sink, exc: DeliveryError, now: float) -> None:
        self._report(sink.name, exc.reason, 1)
        if exc.reason == "standby":  # another replica holds the notifier lease
            log.debug("%s: %s", sink.name, exc)
            wait = exc.retry_after_s or 5.0
        elif not exc.retryable:
            log.error("delivery to %s failed permanently (%s): %s; fix the sink's settings, "
                      "pending alerts stay in the outbox", sink.name, exc.reason, exc)
            wait = self.max_backoff_s
        else:
            wait = exc.retry_after_s or min(self._backoff.get(sink.name, 0.5) * 2,
                                            self.max_backoff_s)
            log.warning("delivery to %s failed (%s), retrying in %.1fs: %s",
                        sink.name, exc.reason, wait, exc)
        self._backoff[sink.name] = wait
        self._retry_at[sink.name] = now + wait

    def _report(self, sink: str, result: str, n: int) -> None:
        if self.on_result is not None:
            self.on_result(sink, result, n)  # type: ignore[operator]
