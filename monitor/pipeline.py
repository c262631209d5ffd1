"""The pipeline: decode → route → detectors → alert manager, for one replica.

It knows partitions (an id per ordered stream of records) but not Kafka: the
Kafka source and the replay source feed it the same way, so they raise the same
alerts for the same events in the same order.
"""

from __future__ import annotations

import gc
import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

import msgspec

from alerts.manager import AlertManager
from alerts.model import Alert, delivery_key
from alerts.outbox import OutboxEntry
from alerts.sinks import record_json
from detectors.base import Finding
from detectors.drift import ReferenceSet
from detectors.event import Event
from monitor.config import Config
from monitor.decode import BadRecord, Decoder
from monitor.metrics import Metrics
from monitor.reference import (
    Reference,
    apply_client_references,
    apply_references,
    collect_new_references,
)
from monitor.state import ModelState, PartitionId, PartitionState, client_detectors, model_detectors
from monitor.summaries import SummaryCollector
from monitor.versions import ModelVersions

CLIENT_TICK_S = 1.0
MAX_TICKS = 3600  # after a longer silence, tick only the last hour


GC_THRESHOLDS = (100_000, 50, 100)
_TS, _MODEL = attrgetter("ts"), attrgetter("model")
log = logging.getLogger(__name__)


def tune_gc() -> None:
    """Collect cyclic garbage less often. Detector state is millions of small,
    long-lived objects, and CPython's default (a young collection every 700
    allocations) cost 30% of the hot path (BENCHMARKS.md, "Where the time goes").
    The hot path makes no reference cycles, so this only delays freeing them."""
    if gc.get_threshold()[0] < GC_THRESHOLDS[0]:
        gc.set_threshold(*GC_THRESHOLDS)


class Record(msgspec.Struct, frozen=True, gc=False):
    """One raw message of a partition (a struct: built ten times faster than a frozen
    dataclass, once per message)."""

    offset: int
    value: bytes | None
    key: bytes | None = None


@dataclass
class BatchResult:
    good: int = 0
    duplicates: int = 0
    bad: list[tuple[Record, BadRecord]] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)


class Pipeline:
    """Holds the detector state of the partitions this replica owns, plus the
    model-wide state, and turns records into alert records.

    Alert records wait in ``pending`` until they are put in the outbox, ahead of
    or with the checkpoint that stores the state which produced them (see
    ``monitor.checkpoint``).
    """

    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        tune_gc()
        self.config = config
        self.metrics = metrics or Metrics()
        self.decoder = Decoder(config.events)
        self.partitions: dict[PartitionId, PartitionState] = {}
        self.models = ModelState(model_detectors(config))
        self.references = ReferenceSet()  # the stored ones (not automatic), see use_references
        self.new_references: list[Reference] = []  # automatic drift references, to store
        self.alerts = AlertManager()
        self.pending: list[OutboxEntry] = []  # alert records not in the outbox yet
        # the partition whose events made each change in alerts.changed, when one did:
        # release() drops those changes unstored
        self.changed_in: dict[str, PartitionId] = {}
        self.outbox_scope = config.kafka.group_id  # alert records are keyed per group
        sc = config.jobs.summaries
        # window summaries for the scheduled jobs, saved by the checkpoint
        self.summaries = SummaryCollector(bucket_s=sc.bucket_s, sample_size=sc.sample_size,
                                          max_categories=sc.max_categories, enabled=sc.enabled)
        self.events_since_checkpoint = 0
        self.records_seen = 0
        self._versions_warned = False  # the too_many_versions warning is logged once

    # -- ownership ------------------------------------------------------------------
    def new_partition_state(self) -> PartitionState:
        return PartitionState(client_detectors(self.config, self.references),
                              versions=ModelVersions(self.config.events.max_model_versions))

    def use_references(self, refs: ReferenceSet) -> None:
        """Use the stored drift references (``monitor.reference.load_references``):
        the drift detectors compare with them, the per-client out-of-range signal
        judges queries against them."""
        self.references = refs
        apply_references(self.models.detectors, refs)
        for state in self.partitions.values():
            apply_client_references(state.detectors, refs)

    def adopt(self, pid: PartitionId, state: PartitionState | None) -> None:
        if state is None:
            state = self.new_partition_state()
        state.versions.limit = self.config.events.max_model_versions  # the current setting
        self.partitions[pid] = state

    def release(self, pid: PartitionId) -> None:
        """Forget ``pid``'s state, and the alert records and changes its events raised
        that are not stored yet: whoever takes the partition next resumes from its
        stored state and raises them again. (Stored by this member meanwhile, a change
        could overwrite what the new owner has stored since: an alert it resolved,
        firing again for ever.)"""
        self.partitions.pop(pid, None)
        self.models.partition_ts.pop(pid, None)
        self.summaries.release(pid)
        self.pending[:] = [e for e in self.pending if e.partition != pid]
        for fp in [fp for fp, source in self.changed_in.items() if source == pid]:
            del self.changed_in[fp]
            self.alerts.changed.pop(fp, None)

    # -- processing -----------------------------------------------------------------
    def process(self, pid: PartitionId, records: Sequence[Record]) -> BatchResult:
        state = self.partitions.get(pid)
        if state is None:
            state = self.partitions[pid] = self.new_partition_state()
        result = BatchResult()
        findings: list[Finding] = []
        good: list[Event] = []
        good_records: list[Record] = []
        decode = self.decoder.decode
        client_dets = state.detectors
        model_dets = self.models.detectors
        done = state.offset if state.offset is not None else -1
        for rec in records:
            if rec.offset < done:
                # already in the restored state: a fetch that raced the seek to the
                # checkpointed offset re-delivered it; counting it twice would
                # break crash equivalence
                result.duplicates += 1
                continue
            event = decode(rec.value)
            state.offset = rec.offset + 1
            if isinstance(event, BadRecord):
                result.bad.append((rec, event))
            else:
                good.append(event)
                good_records.append(rec)
        over = state.versions.over_limit(good)
        if over:
            good = self._set_aside(pid, state, good, records=good_records, over=over,
                                   result=result)
        for keyed in client_dets:  # their numeric work for the whole batch at once
            keyed.prepare(good)
        for event in good:
            ts = event.ts
            if ts >= state.next_tick:
                findings.extend(self._tick_clients(state, ts))
            for keyed in client_dets:
                found = keyed.update(event)
                if found:
                    findings.extend(found)
        if good:
            state.max_ts = max(state.max_ts, *map(_TS, good))
        per_model = Counter(map(_MODEL, good))
        # model-wide detectors only accumulate until the watermark closes their windows
        # (advance()), so they take the batch at once
        for keyed in model_dets:
            findings.extend(keyed.update_batch(good))
        self.summaries.add(pid, good)
        result.good = sum(per_model.values())
        self.events_since_checkpoint += len(records)
        self.records_seen += len(records)
        for model, n in per_model.items():
            self.metrics.events.labels(model, "ok").inc(n)
        if result.duplicates:
            self.metrics.events.labels("", "duplicate").inc(result.duplicates)
        if result.bad:
            self.metrics.events.labels("", "bad").inc(len(result.bad))
            for reason, n in Counter(b.reason for _, b in result.bad).items():
                self.metrics.bad_records.labels(reason).inc(n)
        self.models.partition_ts[pid] = state.max_ts
        result.alerts = self.alert(findings, pid)
        return result

    def _set_aside(self, pid: PartitionId, state: PartitionState, good: list[Event], *,
                   records: list[Record], over: list[int], result: BatchResult) -> list[Event]:
        """The events of ``good`` but those at ``over`` (their (model, version) pairs are
        over the limit), which become bad records."""
        limit = state.versions.limit
        if not self._versions_warned:
            self._versions_warned = True
            log.warning("partition %s[%d] tracks %d (model, model_version) pairs, the limit "
                        "(events.max_model_versions): events of further pairs are bad input "
                        "(too_many_versions) until a pair has been idle for 30 days",
                        pid[0], pid[1], limit)
        for i in over:
            e = good[i]
            result.bad.append((records[i], BadRecord(
                "too_many_versions", f"model {e.model[:80]!r} version {e.model_version[:80]!r}: "
                f"{limit} pairs tracked (events.max_model_versions)")))
        result.bad.sort(key=_offset_of)
        dropped = set(over)
        return [e for i, e in enumerate(good) if i not in dropped]

    @staticmethod
    def _tick_clients(state: PartitionState, ts: float) -> list[Finding]:
        """Tick the firing per-client detectors at every whole second of this
        partition's event time up to ``ts``: a client that went quiet resolves at
        the same event time however the records were batched."""
        end = math.floor(ts / CLIENT_TICK_S) * CLIENT_TICK_S
        start = state.next_tick if state.next_tick > end - MAX_TICKS * CLIENT_TICK_S else (
            end - MAX_TICKS * CLIENT_TICK_S)
        state.next_tick = end + CLIENT_TICK_S
        findings: list[Finding] = []
        for keyed in state.detectors:
            if not keyed.firing_keys:
                continue
            t = start
            while t <= end:
                findings.extend(keyed.tick(t))
                t += CLIENT_TICK_S
        return findings

    def advance(self, active: Iterable[PartitionId] = ()) -> list[dict]:
        """Move the watermark and close the model-wide windows it passed.

        ``active`` are the partitions that may still deliver older events (they
        have unread records): the watermark is the slowest one's event time, and
        it waits for an active partition that has delivered nothing yet. With no
        active partition (all caught up, or a replay), it is the newest event time.
        """
        active = list(active)
        seen = self.models.partition_ts
        if active:
            if any(seen.get(p, float("-inf")) == float("-inf") for p in active):
                return []
            watermark = min(seen[p] for p in active)
        else:
            watermark = max(seen.values(), default=float("-inf"))
        if watermark <= self.models.watermark:
            return []
        self.models.watermark = watermark
        self.metrics.watermark.set(watermark)
        findings: list[Finding] = []
        for keyed in self.models.detectors:
            findings.extend(keyed.tick(watermark))
        self.new_references.extend(collect_new_references(self.models.detectors))
        return self.alert(findings)

    def alert(self, findings: list[Finding], pid: PartitionId | None = None) -> list[dict]:
        """Raise ``findings`` (of partition ``pid``'s events, if they are) through the
        alert manager; their records go to the outbox (``pending``)."""
        records = []
        changed_in = self.changed_in
        for finding in findings:
            record = self.alerts.process(finding)
            if record is None:
                continue
            fp = record["fingerprint"]
            self.metrics.alerts.labels(record["kind"], record["severity"], record["status"]).inc()
            self.pending.append(OutboxEntry(delivery_key(self.outbox_scope, record), fp,
                                            record_json(record), pid))
            if pid is None:
                changed_in.pop(fp, None)
            else:
                changed_in[fp] = pid
            records.append(record)
        if len(changed_in) > len(self.alerts.changed):
            # changes stored or cleared meanwhile (a replay clears them after each batch)
            self.changed_in = {fp: s for fp, s in changed_in.items() if fp in self.alerts.changed}
        return records

    def tracked_clients(self) -> int:
        return sum(len(k) for s in self.partitions.values() for k in s.detectors)

    @staticmethod
    def pending_record(alert: Alert) -> str:
        return record_json(alert.record())


def _offset_of(bad: tuple[Record, BadRecord]) -> int:
    return bad[0].offset
