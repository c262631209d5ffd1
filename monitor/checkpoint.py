"""Checkpoints: detector state and the offsets it covers, stored in one
transaction — so a restart after ``kill -9`` resumes exactly where the stored
state ends.

Alert records go into the outbox as soon as they are raised (``journal``), ahead
of the checkpoint: after a crash, the restart raises them again from the stored
state, and the outbox keeps each ``delivery_key`` once. So no alert is lost or
doubled, and none waits for a checkpoint to be delivered.

A partition's state is stored as a shell (offsets, event time, detector
configuration) plus one row per client; a checkpoint writes only the clients
that changed since the previous one (``Keyed.changes()``), so its cost follows
the traffic, not the number of clients tracked.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import pickle
import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from alerts.model import Alert, delivery_key
from alerts.outbox import OutboxEntry
from alerts.sinks import record_json
from detectors.base import Finding
from detectors.keyed import Changes, Keyed
from monitor import reconfigure
from monitor.pipeline import Pipeline
from monitor.reference import load_references, save_new_references
from monitor.row_chunks import RowChunks
from monitor.state import ModelState, PartitionId, PartitionState
from monitor.store import (
    Checkpoint,
    ChunkWrites,
    ClientRows,
    PartitionsTakenError,
    Store,
    StoredAlert,
)
from monitor.summaries import write_deltas

log = logging.getLogger(__name__)


# The layout of the pickled detector state; bump it when a release changes the state
# of a detector: stored state of a format this release does not read is set aside (with
# an error in the log) instead of being fed to detectors that would misread it. A release
# also reads the older formats it still understands (READ_FORMATS): an upgrade keeps the
# state, a rollback to a release older than the format starts afresh.
# 5: a drift reference's warm-up rows are a RawRows, not dicts; 6: the model-wide state
# is pickled bytes whose RawRows are stored apart, in chunks (monitor.row_chunks);
# 7: the coverage signal's bitmap has 2,048 bits (one of 512 read from format 6 starts
# its window over: detectors.coverage); 8: a drift detector's merge map pools sparse
# cells into a rare pool numbered past the cells (one of format 7 is rebuilt on load)
STATE_FORMAT = 8
READ_FORMATS = (3, 4, 5, 6, 7, 8)  # 3: the verdict's out-of-range signal; 4: packed client rows


# added to the summary of the resolved record sent for a firing alert whose stored state
# cannot be read (Checkpointer._resolve_unreadable)
UNREADABLE_NOTE = " (closed by inferwatch: its stored state could not be read)"


class StateFormatError(ValueError):
    """Stored state written in another ``STATE_FORMAT``."""


def _dump_state(obj: object) -> bytes:
    return _dump((STATE_FORMAT, obj))


def _load_state(blob: bytes) -> Any:
    loaded = pickle.loads(blob)
    if not (isinstance(loaded, tuple) and len(loaded) == 2 and loaded[0] in READ_FORMATS):
        found = loaded[0] if isinstance(loaded, tuple) and loaded else "none"
        raise StateFormatError(f"state format {found}, this version reads "
                               f"{', '.join(map(str, READ_FORMATS))}")
    return loaded[1]


def _dump(obj: object) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


class Checkpointer:
    """Saves and restores a pipeline's state under scopes named by consumer group."""

    def __init__(self, store: Store, pipeline: Pipeline, *, group: str, producer: str,
                 on_release: Callable[[list[PartitionId]], None] | None = None) -> None:
        self.store = store
        self.pipeline = pipeline
        self.group = group
        self.producer = producer
        # told of the partitions dropped because another member took them
        self.on_release = on_release
        self._replace: set[str] = set()  # scopes whose stored clients the next save replaces
        self._resolved: list[Finding] = []  # of keys a configuration change dropped at restore
        self._chunks = RowChunks()  # the model-wide state's warm-up rows, stored apart
        # the epoch restore() took for each partition (Store.take_partitions): a save
        # stores them only while no other member has taken them since
        self._epochs: dict[PartitionId, int] = {}
        # the epochs of the partitions held last, by scope (_owners); None once one of
        # them has been taken while this member held no other
        self._last_owners: dict[str, int] | None = {}

    def partition_scope(self, pid: PartitionId) -> str:
        return f"partition:{self.group}:{pid[0]}:{pid[1]}"

    def summary_scope(self, pid: PartitionId) -> str:
        return f"{self.group}:{pid[0]}:{pid[1]}"

    def model_scope(self, pids: Iterable[PartitionId]) -> str:
        key = ",".join(f"{t}:{p}" for t, p in sorted(pids))
        return f"models:{self.group}:{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def save(self, pids: Iterable[PartitionId] | None = None) -> dict[PartitionId, int]:
        """Store the state of ``pids`` (default: all owned) with the model-wide state
        and the pending alert records; return the offsets now safe to commit.
        On failure nothing is lost: the pending records and changes stay queued.
        Partitions another member has taken since their restore are dropped from the
        pipeline, unsaved, and the rest saved without them; a member left with none
        holds its model-wide records and changes back (``_owners``)."""
        while True:
            try:
                return self._save(pids)
            except PartitionsTakenError as exc:
                self._release_taken(exc)

    def _release_taken(self, exc: PartitionsTakenError) -> None:
        p = self.pipeline
        lost = [pid for pid in self._epochs if self.partition_scope(pid) in exc.scopes]
        log.error("partitions %s were given to another member of the group (this one "
                  "was evicted): their state here is dropped, not stored",
                  ", ".join(f"{t}[{n}]" for t, n in lost))
        for pid in lost:
            p.release(pid)
            del self._epochs[pid]
        if self.on_release is not None and lost:
            self.on_release(lost)
        if not p.partitions and (p.pending or p.alerts.changed):
            self._last_owners = None  # see _owners
            log.warning("this member holds no partition now: %d alert records and %d alert "
                        "changes of its model-wide detectors wait, unstored, until it holds "
                        "partitions again (the model-wide state they come from stays here)",
                        len(p.pending), len(p.alerts.changed))

    def _held(self) -> dict[str, int]:
        """The epoch taken for each partition held (Store.take_partitions), by scope."""
        return {self.partition_scope(pid): self._epochs[pid] for pid in self.pipeline.partitions
                if pid in self._epochs}

    def _owners(self) -> dict[str, int] | None:
        """What a store is fenced with: the epochs of the partitions held. Holding none,
        what is left to store is model-wide (``Pipeline.release`` dropped the rest), raised
        from the events of the partitions held last: fenced with theirs. None once one of
        those has been taken (``_release_taken``): then those records and changes are
        neither stored nor dropped until this member holds partitions again. Stored, they
        could overwrite what the new owner has stored since (a resolved alert firing again
        for ever); dropped, they could be lost: the model-wide state that raised them stays
        with this member, and a new owner reads it (and raises them again) only as a fresh
        process taking the very same partitions (``restore``)."""
        p = self.pipeline
        if p.partitions:
            self._last_owners = self._held()
            return self._last_owners
        if not p.pending and not p.alerts.changed:
            return {}  # nothing to store that a fence covers
        return self._last_owners

    def _save(self, pids: Iterable[PartitionId] | None) -> dict[PartitionId, int]:
        p = self.pipeline
        pids = list(p.partitions) if pids is None else list(pids)
        pids = [pid for pid in pids if pid in p.partitions]
        states: dict[str, Checkpoint] = {}
        clients: dict[str, ClientRows] = {}
        changes: list[tuple[Keyed, Changes]] = []
        for pid in pids:
            part, scope = p.partitions[pid], self.partition_scope(pid)
            rows = clients[scope] = ClientRows([], [], [], replace=scope in self._replace)
            found_here = []
            for index, keyed in enumerate(part.detectors):
                if not keyed.tracking:  # never stored yet: all of it
                    keyed.start_tracking()
                found = keyed.changes()
                found_here.append(found)
                changes.append((keyed, found))
                export = keyed.stored_slot
                rows.upsert += [(index, _client(k), seq, _dump(export(slot)))
                                for k, seq, slot in found.moved]
                rows.update += [(index, _client(k), _dump(export(slot))) for k, slot in found.ticked]
                rows.delete += [(index, _client(k)) for k in found.removed]
            states[scope] = Checkpoint(_dump_state(_shell(part, found_here)), part.offset)
        chunks = ChunkWrites([], [], [], [])
        owned = bool(p.partitions)  # the model-wide state is keyed by them: none, no row
        if owned:
            model_scope = self.model_scope(p.partitions)
            models, chunks = self._chunks.dump(model_scope, p.models)
            states[model_scope] = Checkpoint(_dump_state(models), None)
        # every partition the model-wide row covers, not only those saved
        owners = self._owners()
        held_back = owners is None  # see _owners
        changed = [] if held_back else list(p.alerts.changed.values())
        stored = [StoredAlert(a.fingerprint, a.status, p.pending_record(a), _dump(a))
                  for a in changed]
        meta = {a.fingerprint: _meta(a) for a in changed}
        pending = [] if held_back else list(p.pending)
        summaries = p.summaries.take(pids)
        scopes = {pid: self.summary_scope(pid) for pid in summaries}
        sc = p.config.jobs.summaries

        def write_summaries(conn: Connection) -> None:
            write_deltas(conn, scopes, summaries, sc.bucket_s, sc.sample_size)

        self.store.save_checkpoint(self.producer, states, pending, stored, meta, clients=clients,
                                   chunks=chunks, extra=write_summaries if summaries else None,
                                   owners=owners or {})
        if owned:
            self._chunks.committed()
        for keyed, found in changes:
            keyed.clear_changes(found)
        self._replace -= set(clients)
        p.summaries.committed(summaries)
        del p.pending[: len(pending)]
        for a in changed:
            if p.alerts.changed.get(a.fingerprint) is a:
                del p.alerts.changed[a.fingerprint]
                p.changed_in.pop(a.fingerprint, None)
        p.events_since_checkpoint = 0
        if p.new_references:
            save_new_references(self.store, p.new_references)
        offsets: dict[PartitionId, int] = {}
        for pid in pids:
            state = p.partitions.get(pid)
            if state is not None and state.offset is not None:
                offsets[pid] = state.offset
        return offsets

    def journal(self) -> int:
        """Put the pending alert records in the outbox now; how many. On failure
        they stay pending (and the next journal or checkpoint writes them). Fenced
        like a save: partitions another member has taken are dropped from the
        pipeline, their records with them, and the rest journaled (or held back by a
        member left with no partition: ``_owners``)."""
        p = self.pipeline
        while True:
            pending = list(p.pending)
            owners = self._owners()
            if not pending or owners is None:  # None: held back (_owners)
                return 0
            try:
                self.store.append_outbox(self.producer, pending, owners=owners)
            except PartitionsTakenError as exc:
                self._release_taken(exc)
                continue
            del p.pending[: len(pending)]
            return len(pending)

    def restore(self, pids: Iterable[PartitionId]) -> dict[PartitionId, int | None]:
        """Adopt ``pids`` with their stored state; return where to resume each."""
        p = self.pipeline
        pids = list(pids)
        self._resolved = []  # (a retried restore starts over)
        offsets: dict[PartitionId, int | None] = {}
        # taken first: what a former owner stores from now on is refused, what it
        # stored before is read below
        epochs = self.store.take_partitions([self.partition_scope(pid) for pid in pids],
                                            self.producer)
        self._epochs.update((pid, epochs[self.partition_scope(pid)]) for pid in pids)
        for pid in pids:
            cp = self.store.load_checkpoint(self.partition_scope(pid))
            state = None if cp is None else self._load_or_start_afresh(pid, cp)
            p.adopt(pid, state)
            offsets[pid] = None if cp is None else cp.next_offset
        self._last_owners = self._held()
        fresh = all(not k.slots for k in p.models.detectors) and p.models.watermark == float("-inf")
        if fresh:
            scope = self.model_scope(pids)
            cp = self.store.load_checkpoint(scope)
            models = None if cp is None else self._load_models(scope, cp)
            if models is not None:
                done = reconfigure.model_wide(models.detectors, p.models.detectors)
                for note in done.notes:
                    log.warning("model-wide state under the new configuration: %s", note)
                models.detectors = done.detectors
                p.models = models
                self._resolved += done.resolved
                log.info("restored model-wide state (watermark %s)", models.watermark)
        p.alerts.load(self._load_alerts())
        # the keys a configuration change dropped: their open alerts resolve
        resolved, self._resolved = self._resolved, []
        p.alert(resolved)
        p.use_references(load_references(self.store))
        return offsets

    def _load_models(self, scope: str, cp: Checkpoint) -> ModelState | None:
        """The stored model-wide state, or None when it cannot be read (another
        format, or damaged): its windows start afresh, and the next save replaces it."""
        try:
            models = _load_state(cp.state)
            if isinstance(models, bytes):  # format 6 on: rows stored apart
                models = self._chunks.load(scope, models, self.store.load_chunks(scope))
            if not isinstance(models, ModelState):
                raise StateFormatError(f"a {type(models).__name__}, not a ModelState")
            return models
        except SQLAlchemyError:
            raise  # the store is away: the caller retries
        except Exception as exc:  # StateFormatError, ChunkError, any unpickling failure
            log.error("the stored model-wide state cannot be read (%s: %s): drift and "
                      "confidence windows start afresh", type(exc).__name__, exc)
            return None

    def _load_alerts(self) -> list[Alert]:
        """The stored firing alerts; one that cannot be read is left out and resolved
        (``_resolve_unreadable``)."""
        loaded = []
        for row in self.store.firing_alerts():
            try:
                alert = pickle.loads(row.state)
                if not isinstance(alert, Alert):
                    raise TypeError(f"a {type(alert).__name__}, not an Alert")
            except Exception as exc:  # any unpickling failure
                self._resolve_unreadable(row, f"{type(exc).__name__}: {exc}")
                continue
            loaded.append(alert)
        return loaded

    def _resolve_unreadable(self, row: StoredAlert, why: str) -> None:
        """Close a firing alert whose stored state cannot be read, or it would stay
        firing for ever, in the store and wherever it was sent: its row stops firing
        and the record last sent for it goes out again as resolved (if the condition
        goes on, its detector opens a new alert). Unless this member holds a newer
        change of it, which its next save stores."""
        if row.fingerprint in self.pipeline.alerts.changed:
            log.warning("the stored firing alert %s cannot be read (%s); this member's "
                        "newer state of it replaces it at the next checkpoint",
                        row.fingerprint, why)
            return
        entry = None
        try:
            record = json.loads(row.record)
            record["status"] = "resolved"
            record["summary"] = str(record["summary"]) + UNREADABLE_NOTE
            entry = OutboxEntry(delivery_key(self.pipeline.outbox_scope, record),
                                row.fingerprint, record_json(record))
        except Exception as exc:  # the record is damaged too: no resolved record to send
            why += f"; nor its record ({type(exc).__name__}: {exc})"
        self.store.resolve_alert(self.producer, row, entry)
        log.error("the stored firing alert %s cannot be read (%s): it is resolved%s; if its "
                  "condition goes on, its detector opens a new alert", row.fingerprint, why,
                  "" if entry else " with no record sent")

    def _load_or_start_afresh(self, pid: PartitionId, cp: Checkpoint) -> PartitionState:
        """The stored state, or — when this version cannot read it (written by an
        incompatible release, or damaged) — fresh detectors at the stored offset, so
        the daemon goes on without skipping an event; the next save replaces the rows."""
        try:
            return self.load_partition(pid, cp)
        except SQLAlchemyError:
            raise  # the store is away: the caller retries
        except Exception as exc:  # any unpickling failure
            log.error("the stored detector state of partition %s[%d] cannot be read (%s: %s); "
                      "its per-client detectors start afresh at offset %s, no event is skipped",
                      pid[0], pid[1], type(exc).__name__, exc, cp.next_offset)
            self._replace.add(self.partition_scope(pid))
            state = self.pipeline.new_partition_state()
            state.offset = cp.next_offset
            return state

    def load_partition(self, pid: PartitionId, cp: Checkpoint) -> PartitionState:
        """A partition's stored shell refilled with its stored clients, under the
        current configuration (``monitor.reconfigure``)."""
        state = _load_state(cp.state)
        assert isinstance(state, PartitionState)
        scope = self.partition_scope(pid)
        slots: list[list[tuple[Hashable, Any]]] = [[] for _ in state.detectors]
        for index, client, blob in self.store.load_clients(scope):
            model, client_id = json.loads(client)
            slots[index].append(((sys.intern(model), client_id), pickle.loads(blob)))
        done = reconfigure.partition(state.detectors, slots,
                                     self.pipeline.new_partition_state().detectors)
        for note in done.notes:
            log.warning("partition %s[%d] under the new configuration: %s", pid[0], pid[1], note)
        state.detectors = done.detectors
        for keyed in state.detectors:
            # rows stored under another layout are all written again at the next save
            keyed.tracking = not done.rows_changed
        if done.rows_changed:
            self._replace.add(scope)
        self._resolved += done.resolved
        return state


def _shell(part: PartitionState, changes: list[Changes]) -> PartitionState:
    """``part`` without its clients (they are stored one row each), as it will be
    once ``changes`` are stored: its sequence numbers used."""
    shells = []
    for keyed, found in zip(part.detectors, changes, strict=True):
        shell = copy.copy(keyed)
        shell.slots = OrderedDict()
        shell.firing_keys = set()
        shell.next_seq = keyed.next_seq + len(found.moved)
        shells.append(shell)
    return PartitionState(shells, part.offset, part.max_ts, part.next_tick, part.versions)


def _client(key: Hashable) -> str:
    """The key as JSON text (``json.dumps``, the stored form): a (model, client) pair
    of strings is written directly, in the same text, five times faster."""
    if type(key) is tuple and len(key) == 2 and type(key[0]) is str and type(key[1]) is str:
        return f"[{_json_string(key[0])}, {_json_string(key[1])}]"
    return json.dumps(key)


_json_string = json.encoder.encode_basestring_ascii  # what json.dumps uses by default


def _meta(a: Alert) -> dict[str, object]:
    return {"alert_id": a.id, "detector": a.detector, "kind": a.kind, "severity": a.severity,
            "model": a.model, "first_seen": a.first_seen, "last_seen": a.last_seen}
