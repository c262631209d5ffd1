"""Per-key fan-out of one detector prototype (per client, per model version)."""

from __future__ import annotations

import pickle
import sys
import zlib
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal

from detectors.base import Detector, Finding
from detectors.event import Event

KeyKind = Literal["client", "source_ip", "fingerprint", "model"]
# the subject field an alert names a key by (model-wide keys have none)
_SUBJECT_FIELD = {"client": "client_id", "source_ip": "source_ip",
                  "fingerprint": "query_fingerprint"}


_NEVER = float("-inf")  # one object for every new slot's timestamps


class _Slot:
    """One key's state: its detector, or while the key is idle the detector's
    exported state packed into bytes (``packed``; ``detector`` is then None: only
    ``Keyed`` packs and unpacks, and it hands out live detectors only)."""

    __slots__ = ("detector", "firing", "last_notified", "last_ts", "model", "model_version",
                 "packed")
    detector: Detector

    def __init__(self, detector: Detector | None, model: str, model_version: str) -> None:
        self.detector = detector  # type: ignore[assignment]
        self.packed: bytes | None = None
        self.model = model
        self.model_version = model_version
        self.last_ts = _NEVER
        self.firing = False
        self.last_notified = _NEVER


class _Packer:
    """Packs exported states: pickled, then raw DEFLATE primed with the pickled state
    of a fresh clone (``zdict``), so the structure and parameters every client
    shares cost no bytes (about 110 B less per client than plain zlib)."""

    def __init__(self, zdict: bytes) -> None:
        self.zdict = zdict

    @classmethod
    def of(cls, prototype: Detector) -> _Packer:
        return cls(pickle.dumps(prototype.clone().export_state(), protocol=pickle.HIGHEST_PROTOCOL))

    def pack(self, state: Any) -> bytes:
        c = zlib.compressobj(1, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, self.zdict)
        return c.compress(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)) + c.flush()

    def unpack(self, packed: bytes) -> Any:
        d = zlib.decompressobj(-15, zdict=self.zdict)
        return pickle.loads(d.decompress(packed) + d.flush())


# attributes rebuilt after unpickling, never stored
_DERIVED = frozenset(("_moved", "_ticked", "_removed", "_live", "_config_repr", "_packer_obj"))


@dataclass
class Changes:
    """The keys whose state changed since the last ``Keyed.clear_changes()``:
    ``moved`` were created or seen (the tail of the LRU order, oldest first, with
    sequence numbers that continue the order), ``ticked`` changed in place,
    ``removed`` expired. A checkpoint writes just these."""

    moved: list[tuple[Hashable, int, _Slot]]
    ticked: list[tuple[Hashable, _Slot]]
    removed: list[Hashable]


class Keyed:
    """Clones ``prototype`` for every key and turns its state changes into findings.

    ``key="client"`` keys by ``(model, client_id)`` (events without a client id are
    ignored), ``key="source_ip"`` by ``(model, source_ip)`` likewise;
    ``key="model"`` keys by ``(model, model_version)``; ``key="fingerprint"`` is
    ``detectors.fingerprint.FingerprintKeyed``'s, which computes its keys. A key idle for
    ``idle_s`` of event time is dropped, and at most ``max_keys`` are kept (least
    recently seen first out): O(1) amortised per event, bounded memory. With
    ``pack_after_s``, a key idle that long (and not firing) keeps its detector's
    exported state as compressed bytes (a third of the live objects' memory or
    less) until its next event restores it: the same results, a fraction of the memory for the
    many clients that are tracked but quiet (idle keys are packed when a batch is
    announced, ``prepare``). A key that is dropped while firing
    reports ``resolved``. While a condition holds, a repeat
    ``firing`` finding (fresh evidence, one more ``count``) goes out at most every
    ``renotify_s`` of event time.

    >>> from detectors.flooding import RequestRate
    >>> k = Keyed(RequestRate(window_s=10, max_events=3), key="client")
    >>> ev = lambda t: Event(ts=t, model="m", model_version="1", client_id="c")
    >>> [f.status for t in range(5) for f in k.update(ev(t))]
    ['firing']
    """

    def __init__(
        self,
        prototype: Detector,
        *,
        key: KeyKind,
        idle_s: float = 3600.0,
        max_keys: int = 1_000_000,
        renotify_s: float = 300.0,
        pack_after_s: float | None = None,
    ) -> None:
        self.prototype = prototype
        if key == "fingerprint" and type(self)._key_of is Keyed._key_of:
            raise ValueError('key="fingerprint" needs detectors.fingerprint.FingerprintKeyed')
        self.key = key
        self.idle_s = idle_s
        self.max_keys = max_keys
        self.renotify_s = renotify_s
        self.pack_after_s = pack_after_s
        self.slots: OrderedDict[Hashable, _Slot] = OrderedDict()
        # the keys whose detector is live (not packed), least recently seen first
        self._live: OrderedDict[Hashable, None] = OrderedDict()
        self._config_repr: str | None = None  # repr(prototype), made on the first finding
        self._packer_obj: _Packer | None = None  # made on the first pack
        self.firing_keys: set[Hashable] = set()
        self.now = float("-inf")
        self.tracking = False  # record changes for incremental checkpoints (changes())
        self.next_seq = 0  # LRU sequence number of the next key moved to the end
        # in a stored shell: the packer's dictionary its packed client rows need
        self.packing_dict: bytes | None = None
        self._new_changes()

    def _new_changes(self) -> None:
        self._moved: set[Hashable] = set()
        self._ticked: set[Hashable] = set()
        self._removed: set[Hashable] = set()

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in _DERIVED}
        # what the packed states stored with this shell (``stored_slot``) need to unpack
        state["packing_dict"] = self._packer().zdict if self.pack_after_s is not None else None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("pack_after_s", None)  # shells stored before packing
        self.__dict__.setdefault("packing_dict", None)  # ... or before packed rows
        self._config_repr = None
        self._packer_obj = None
        self._new_changes()
        self._live = OrderedDict() if self.pack_after_s is None else OrderedDict(
            (k, None) for k, s in self.slots.items() if s.detector is not None)

    def start_tracking(self) -> None:
        """Record changes from now on, counting every current key as changed."""
        self.tracking = True
        self._new_changes()
        self._moved.update(self.slots)

    def changes(self) -> Changes:
        """What changed since the last ``clear_changes()`` (see ``Changes``)."""
        moved = list(islice(reversed(self.slots), len(self._moved)))
        moved.reverse()
        return Changes(
            moved=[(k, self.next_seq + i, self.slots[k]) for i, k in enumerate(moved)],
            ticked=[(k, self.slots[k]) for k in self._ticked if k not in self._moved],
            removed=list(self._removed),
        )

    def clear_changes(self, changes: Changes) -> None:
        """Forget ``changes`` once they are stored; their sequence numbers are used."""
        self.next_seq += len(changes.moved)
        self._new_changes()

    def export_slot(self, slot: _Slot) -> tuple[Any, ...]:
        """A key's state as plain data (see ``Detector.export_state``)."""
        state = (self._packer().unpack(slot.packed) if slot.detector is None
                 else slot.detector.export_state())
        return (slot.model, slot.model_version, slot.last_ts, slot.firing, slot.last_notified,
                state)

    def stored_slot(self, slot: _Slot) -> tuple[Any, ...]:
        """``export_slot`` for a checkpoint row: a packed key's state stays packed
        bytes (no unpacking to store it, no packing to restore it)."""
        if slot.detector is None:
            return (slot.model, slot.model_version, slot.last_ts, slot.firing,
                    slot.last_notified, slot.packed)
        return self.export_slot(slot)

    def unpack_stored(self, state: Any) -> Any:
        """A state of a stored row (``stored_slot``) as plain data: packed ones are
        unpacked with the packing this shell was stored with."""
        if not isinstance(state, bytes):
            return state
        if self.packing_dict is None:
            raise ValueError("a packed client state stored without its packing dictionary")
        return _Packer(self.packing_dict).unpack(state)

    def restore_slots(self, slots: list[tuple[Hashable, tuple[Any, ...]]]) -> None:
        """Refill the keys from stored slots (``stored_slot`` or ``export_slot``), in
        LRU order (oldest first); the ones idle for ``pack_after_s`` stay packed."""
        self.slots = OrderedDict()
        self._live = OrderedDict()
        self.firing_keys = set()
        horizon = self._pack_horizon()
        # packed states stored with this packing are kept as they are
        reuse = self.packing_dict is not None and self.packing_dict == self._packer().zdict
        for key, (model, version, last_ts, firing, last_notified, stored) in slots:
            slot = _Slot(None, model, version)
            slot.last_ts, slot.firing, slot.last_notified = last_ts, firing, last_notified
            packed = stored if reuse and isinstance(stored, bytes) else None
            state = None if packed is not None else self.unpack_stored(stored)
            if last_ts < horizon and not firing:
                slot.packed = packed if packed is not None else self._packer().pack(state)
            else:
                slot.detector = self.prototype.restored(
                    state if packed is None else self._packer().unpack(packed))
                self._live[key] = None
            self.slots[key] = slot
            if firing:
                self.firing_keys.add(key)

    def keys_like(self, other: Keyed) -> bool:
        """Whether ``other`` names its keys as this one does (so its keys' state can
        move here)."""
        return (type(other) is type(self) and other.key == self.key
                and type(other.prototype) is type(self.prototype))

    def take_settings(self, other: Keyed) -> None:
        """Run with ``other``'s settings (a newer configuration) from now on, keeping
        the keys: its prototype, idle time, capacity, renotification and packing.
        Restore the slots afterwards (``restore_slots``) when the prototype or the
        packing changed."""
        self.prototype = other.prototype
        self.idle_s = other.idle_s
        self.max_keys = other.max_keys
        self.renotify_s = other.renotify_s
        self.pack_after_s = other.pack_after_s
        self._config_repr = None
        self._packer_obj = None

    def resolution(self, key: Hashable, row: tuple[Any, ...]) -> Finding:
        """The ``resolved`` finding of a stored firing key (a ``stored_slot`` row)
        whose incident is closed outside the stream: by a new configuration."""
        model, version, _, _, _, stored = row
        slot = _Slot(self.prototype.restored(self.unpack_stored(stored)), model, version)
        return self._finding(key, slot, "resolved", self.now)

    def drop(self, keys: list[Hashable]) -> list[Finding]:
        """Drop ``keys`` outside the stream (a new configuration no longer wants
        them): ``resolved`` for the firing ones."""
        return [finding for key in keys if (finding := self._remove(key)) is not None]

    def _remove(self, key: Hashable) -> Finding | None:
        """Forget ``key`` (and, when tracking, record it for the next checkpoint to
        delete); its ``resolved`` finding if it was firing."""
        slot = self.slots.pop(key)
        self._live.pop(key, None)
        if self.tracking:
            self._moved.discard(key)
            self._ticked.discard(key)
            self._removed.add(key)
        if not slot.firing:
            return None
        self.firing_keys.discard(key)
        return self._finding(key, slot, "resolved", self.now)

    def _packer(self) -> _Packer:
        packer = self._packer_obj
        if packer is None:
            packer = self._packer_obj = _Packer.of(self.prototype)
        return packer

    def _pack_horizon(self) -> float:
        return _NEVER if self.pack_after_s is None else self.now - self.pack_after_s

    def pack_idle(self) -> None:
        """Pack the detectors of the keys idle for ``pack_after_s`` of event time
        (firing ones stay live until they resolve)."""
        horizon = self._pack_horizon()
        live, slots = self._live, self.slots
        while live:
            key = next(iter(live))
            slot = slots[key]
            if slot.last_ts >= horizon:
                break
            del live[key]
            if not slot.firing:
                slot.packed = self._packer().pack(slot.detector.export_state())
                slot.detector = None  # type: ignore[assignment]

    def _unpack(self, key: Hashable, slot: _Slot) -> None:
        """Make ``key``'s detector live (restored from its packed state if need be)
        and, when packing, mark it the most recently seen of the live keys."""
        if slot.detector is None:
            detector = self.prototype.restored(self._packer().unpack(slot.packed))
            slot.detector, slot.packed = detector, None
        self._mark_live(key)

    def _mark_live(self, key: Hashable) -> None:
        """When packing: ``key`` is the most recently seen of the live keys."""
        if self.pack_after_s is not None:
            try:
                self._live.move_to_end(key)
            except KeyError:
                self._live[key] = None

    def __len__(self) -> int:
        return len(self.slots)

    def _key_of(self, event: Event) -> Hashable | None:
        if self.key == "client":
            return None if event.client_id is None else (event.model, event.client_id)
        if self.key == "source_ip":
            return None if event.source_ip is None else (event.model, event.source_ip)
        return (event.model, event.model_version)

    def _subject(self, key: Hashable) -> dict[str, str]:
        field = _SUBJECT_FIELD.get(self.key)
        return {} if field is None else {field: key[1]}  # type: ignore[index]

    def prepare(self, events: Sequence[Event]) -> None:
        """Announce the batch that ``update`` will take next, event by event, so the
        prototype can do its numeric work for all of it at once (see
        ``Detector.prepare``; results are the same without it)."""
        self.pack_idle()
        keys: list[Hashable | None] = []
        current: dict[Hashable, Detector | None] = {}
        slots = self.slots
        for event in events:
            key = self._key_of(event)
            if key is not None and not self.accepts(event):
                key = None
            keys.append(key)
            if key is not None and key not in current:
                slot = slots.get(key)
                if slot is None:
                    current[key] = None
                else:
                    if slot.detector is None:
                        self._unpack(key, slot)
                    current[key] = slot.detector
        if current:
            self.prototype.prepare(events, keys, current)

    def accepts(self, event: Event) -> bool:
        """Whether ``update`` takes this event (subclasses filter)."""
        return True

    def update(self, event: Event) -> list[Finding]:
        key = self._key_of(event)
        if key is None:
            return []
        key, slot = self._slot(key, event)
        ts = event.ts
        slot.last_ts = max(slot.last_ts, ts)
        slot.detector.update(event)
        findings = self._transition(key, slot, ts)
        self.now = max(self.now, ts)
        if self.slots and (len(self.slots) > self.max_keys
                           or next(iter(self.slots.values())).last_ts < self.now - self.idle_s):
            findings.extend(self._expire())
        return findings

    def _slot(self, key: Hashable, event: Event) -> tuple[Hashable, _Slot]:
        """The slot of ``key`` (created from the prototype if new), marked most recent."""
        slot = self.slots.get(key)
        if slot is None:
            # interned: a million slots share one copy of each model name and version
            model = sys.intern(event.model)
            key = (model, key[1])  # type: ignore[index]
            slot = _Slot(self.prototype.clone(), model, sys.intern(event.model_version))
            self.slots[key] = slot
            if self.tracking:
                self._removed.discard(key)
        else:
            self.slots.move_to_end(key)
        if self.pack_after_s is not None:
            if slot.detector is None:
                self._unpack(key, slot)
            else:  # the common case: _mark_live inline, once per event
                try:
                    self._live.move_to_end(key)
                except KeyError:
                    self._live[key] = None
        if self.tracking:
            self._moved.add(key)
        if slot.model_version != event.model_version:
            slot.model_version = sys.intern(event.model_version)
        return key, slot

    def update_batch(self, events: list[Event]) -> list[Finding]:
        """``update`` for a batch, one ``update_many`` call per key: for model-wide
        detectors, whose updates only accumulate until a watermark ``tick``, so
        grouping a batch by key changes no result."""
        groups: dict[Hashable, list[Event]] = {}  # in the order of each key's last event
        for event in events:
            key = self._key_of(event)
            if key is not None:
                group = groups.pop(key, None)
                if group is None:
                    group = []
                group.append(event)
                groups[key] = group
        findings: list[Finding] = []
        for group_key, group in groups.items():
            key, slot = self._slot(group_key, group[-1])
            ts = max(e.ts for e in group)
            slot.last_ts = max(slot.last_ts, ts)
            slot.detector.update_many(group)
            findings.extend(self._transition(key, slot, ts))
            self.now = max(self.now, ts)
        findings.extend(self._expire())
        return findings

    def tick(self, now: float) -> list[Finding]:
        """Advance event time: every key for model-wide detectors, only the firing
        keys for per-client ones (so a client that stops flooding resolves)."""
        findings: list[Finding] = []
        self.now = max(self.now, now)
        keys = list(self.slots) if self.key == "model" else list(self.firing_keys)
        for key in keys:
            slot = self.slots[key]
            if self.tracking:
                self._ticked.add(key)
            step = slot.detector.next_decision()
            while step is not None and step <= now:
                slot.detector.tick(step)
                findings.extend(self._transition(key, slot, step))
                following = slot.detector.next_decision()
                step = following if following is not None and following > step else None
            slot.detector.tick(now)
            findings.extend(self._transition(key, slot, now))
        findings.extend(self._expire())
        return findings

    def _transition(self, key: Hashable, slot: _Slot, ts: float) -> list[Finding]:
        detected = slot.detector.detected
        decided = slot.detector.decided_at
        if decided is not None:
            ts = decided
        if detected and (not slot.firing or ts - slot.last_notified >= self.renotify_s):
            slot.firing = True
            slot.last_notified = ts
            self.firing_keys.add(key)
            return [self._finding(key, slot, "firing", ts)]
        if slot.firing and not detected:
            slot.firing = False
            self.firing_keys.discard(key)
            self._mark_live(key)  # packable again once idle
            resolved = self._finding(key, slot, "resolved", ts)
            if slot.detector.next_incident():
                return [resolved, *self._transition(key, slot, ts)]
            return [resolved]
        return []

    def _expire(self) -> list[Finding]:
        findings: list[Finding] = []
        horizon = self.now - self.idle_s
        while self.slots:
            key, slot = next(iter(self.slots.items()))
            if slot.last_ts >= horizon and len(self.slots) <= self.max_keys:
                break
            finding = self._remove(key)
            if finding is not None:
                findings.append(finding)
        return findings

    def _config_text(self) -> str:
        """``repr`` of the prototype: every key's clone has the same parameters, so
        the alerts of thousands of clients share one string instead of one each."""
        text = self._config_repr
        if text is None:
            text = self._config_repr = repr(self.prototype)
        return text

    def _finding(self, key: Hashable, slot: _Slot, status: str, ts: float) -> Finding:
        det = slot.detector
        subject = self._subject(key)
        return Finding(
            detector=det.name,
            kind=det.kind,
            severity=det.severity,
            status=status,  # type: ignore[arg-type]
            model=slot.model,
            model_version=slot.model_version,
            subject=subject,
            summary=det.summary(subject, slot.model),
            ts=ts,
            evidence=det.evidence() | {"detector_config": self._config_text()},
            atlas=det.atlas,
        )
