"""Restored detector state under the configuration the daemon runs with now.

A checkpoint stores each keying of detectors (per client, per source address, per
query cell, per model) with the settings it ran under. When the configuration
changed between that run and this one (a threshold raised, a client allow-listed,
a signal turned on or off), the restored state takes the current settings and keeps
what still means the same:

- a keying's own settings (allow-list, idle time, capacity, renotification,
  packing) are always the current ones; a client allow-listed since has its state
  dropped and its open alerts resolved;
- a per-client signal configured as before keeps every client's state; a changed or
  new one starts afresh for every client, a removed one is dropped
  (``Detector.carry_state``, ``ClientAttack.carry_state``);
- a model-wide detector whose settings changed starts afresh: its windows and,
  without a stored reference, its warm-up reference are built again;
- a keying no longer configured is dropped and its firing keys resolve; a new one
  starts empty.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from detectors.allow import AllowListed
from detectors.base import Finding
from detectors.keyed import Keyed

Row = tuple[Hashable, tuple[Any, ...]]  # a key and its stored slot (Keyed.stored_slot)


@dataclass
class Reconfigured:
    """The keyings to run with, the findings of the keys dropped, whether the stored
    per-client rows still match them (else the next checkpoint writes them all
    again), and what changed, for the log."""

    detectors: list[Keyed]
    resolved: list[Finding] = field(default_factory=list)
    rows_changed: bool = False
    notes: list[str] = field(default_factory=list)


def _name(keyed: Keyed) -> str:
    return f"{type(keyed.prototype).__name__} per {keyed.key}"


def _difference(old: Keyed, new: Keyed) -> str:
    """What changed between two prototypes' settings: the parameters, or for a
    verdict over several signals the signals."""
    signals = getattr(new.prototype, "signals", None)
    if signals is None:
        before, after = old.prototype.settings(), new.prototype.settings()
        return ", ".join(f"{k} {before.get(k)} -> {v}" for k, v in after.items()
                         if before.get(k) != v)
    had = [s.settings_text() for s in getattr(old.prototype, "signals", ())]
    has = [s.settings_text() for s in signals]
    return "; ".join([f"was {t}" for t in had if t not in has]
                     + [f"now {t}" for t in has if t not in had]) or (
        f"was {old.prototype.settings_text()}; now {new.prototype.settings_text()}")


def _pairs(stored: list[Keyed], fresh: list[Keyed]) -> tuple[list[tuple[Keyed, int | None]],
                                                              list[int]]:
    """Each fresh keying with the position of the stored one that names its keys
    alike (None: it is new), and the positions of the stored ones left over."""
    used: set[int] = set()
    pairs: list[tuple[Keyed, int | None]] = []
    for new in fresh:
        i = next((i for i, old in enumerate(stored) if i not in used and new.keys_like(old)),
                 None)
        if i is not None:
            used.add(i)
        pairs.append((new, i))
    return pairs, [i for i in range(len(stored)) if i not in used]


def _carried(rows: list[Row], old: Keyed, new: Keyed) -> tuple[list[Row], list[Finding]]:
    """``rows`` stored under ``old``'s prototype, as states of ``new``'s; a state
    that means nothing under the new settings is replaced by a fresh one (the key
    keeps its place). A firing key whose incident the new settings close or rename
    (its signal changed or removed) resolves now, under the name it fired with."""
    out, resolved = [], []
    for key, row in rows:
        model, version, last_ts, firing, notified, stored = row
        state = old.unpack_stored(stored)
        carried = new.prototype.carry_state(state, old.prototype)
        if carried is None:  # a fresh state of its own (no field shared with another key)
            carried = new.prototype.clone().export_state()
        if firing:
            open_alert = old.resolution(key, row)
            after = new.prototype.restored(carried)  # only read: may share carried's objects
            if not after.detected or after.name != open_alert.detector:
                resolved.append(open_alert)
                firing = False
        out.append((key, (model, version, last_ts, firing, notified, carried)))
    return out, resolved


def partition(stored: list[Keyed], rows: list[list[Row]], fresh: list[Keyed]) -> Reconfigured:
    """The per-client keyings of ``fresh`` (built from the current configuration)
    with the keys of ``stored`` (a checkpoint's shells, whose keys are ``rows``)."""
    out = Reconfigured([])
    pairs, dropped = _pairs(stored, fresh)
    for new, i in pairs:
        if i is None:
            out.detectors.append(new)
            out.rows_changed = True
            out.notes.append(f"{_name(new)} is new: it starts with no keys")
            continue
        old, mine = stored[i], rows[i]
        if i != len(out.detectors):  # its rows are stored under another position
            out.rows_changed = True
        if old.prototype.settings_text() != new.prototype.settings_text():
            mine, closed = _carried(mine, old, new)
            out.resolved += closed
            out.rows_changed = True
            out.notes.append(f"{_name(new)}: settings changed ({_difference(old, new)}); "
                             f"what changed starts afresh for each of its {len(mine)} keys")
        old.take_settings(new)
        old.restore_slots(mine)
        if isinstance(old, AllowListed):
            out.resolved += old.drop_allowed()
            out.rows_changed |= len(old) < len(mine)
        out.detectors.append(old)
    for i in dropped:
        old = stored[i]
        old.restore_slots(rows[i])
        out.resolved += old.drop(list(old.slots))
        out.rows_changed = True
        out.notes.append(f"{_name(old)} is no longer configured: its {len(rows[i])} keys "
                         f"are dropped")
    return out


def model_wide(stored: list[Keyed], fresh: list[Keyed]) -> Reconfigured:
    """The model-wide keyings of ``fresh`` with the state of ``stored`` where their
    settings are unchanged."""
    out = Reconfigured([])
    pairs, dropped = _pairs(stored, fresh)
    for new, i in pairs:
        if i is None:
            out.detectors.append(new)
            continue
        old = stored[i]
        if old.prototype.settings_text() == new.prototype.settings_text():
            old.take_settings(new)
            out.detectors.append(old)
        else:
            out.resolved += old.drop(list(old.slots))
            out.detectors.append(new)
            out.notes.append(f"{_name(new)}: settings changed ({_difference(old, new)}); "
                             f"it starts afresh")
    for i in dropped:
        out.resolved += stored[i].drop(list(stored[i].slots))
        out.notes.append(f"{_name(stored[i])} is no longer configured: its state is dropped")
    return out
