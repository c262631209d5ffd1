"""The per-client attack verdict: every per-client signal in one keyed slot.

One ``ClientAttack`` per (model, client) holds the signal detectors (flooding,
boundary probing, small-step query chains, ...) and turns them into one verdict:
the first signal to fire names the alert (its detector name, kind, severity and
MITRE ATLAS technique) until that signal clears; the evidence carries the
figures of every signal, and which others fire too. One slot per client instead
of one per signal keeps an idle client's state near 1 KB, and on-call gets one
incident per client, not one message per signal.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Self

from detectors.base import Detector, SlotState
from detectors.event import Event
from detectors.flooding import RequestRate
from detectors.neighbours import QueryNeighbours
from detectors.probing import LowConfidenceShare


class ClientAttack(SlotState, Detector):
    """Fires when any of ``signals`` fires; named after the one that fired first.

    ``signals`` are detector prototypes (cloned here, so one prototype serves every
    client); ``None`` means the default three: ``QueryNeighbours`` (evasion),
    ``LowConfidenceShare`` (extraction) and ``RequestRate`` (flooding). When several
    fire on the same event, the earlier in ``signals`` names the verdict.

    >>> d = ClientAttack(signals=(RequestRate(window_s=10, max_events=3),))
    >>> for t in range(5):
    ...     d.update(Event(ts=t, model="m", model_version="1", client_id="c"))
    >>> d.detected, d.name, d.kind, d.evidence()["firing_signals"]
    (True, 'flooding.request_rate', 'flooding', ['flooding.request_rate'])
    """

    __slots__ = ("_active", "_lead_index", "signals")

    def __init__(self, *, signals: tuple[Detector, ...] | None = None) -> None:
        protos = signals if signals is not None else (
            QueryNeighbours(), LowConfidenceShare(), RequestRate())
        self.signals = tuple(p.clone() for p in protos)
        self._lead_index = 0  # the signal that names the alert (kept after it clears)
        self._active = False  # whether that signal's incident is open

    def export_state(self) -> tuple[Any, ...]:
        return (tuple(s.export_state() for s in self.signals), self._lead_index, self._active)

    def blank(self) -> Self:
        det = super().blank()
        det.signals = tuple(s.blank() if isinstance(s, SlotState) else s.clone()
                            for s in self.signals)  # each client its own
        return det

    def import_state(self, state: tuple[Any, ...]) -> None:
        signals, self._lead_index, self._active = state
        for signal, saved in zip(self.signals, signals, strict=True):
            signal.import_state(saved)

    def carry_state(self, state: Any, old: Detector) -> Any | None:
        """Signal by signal: a signal configured as in ``old`` keeps its state, a
        changed or new one starts afresh, a removed one is dropped; the open
        incident stays open if its signal is kept."""
        if type(old) is not type(self):
            return None
        assert isinstance(old, ClientAttack)
        signal_states, lead, active, *rest = state
        before = {s.settings_text(): i for i, s in enumerate(old.signals)}
        carried = []
        for signal in self.signals:
            i = before.get(signal.settings_text())
            # a fresh state of its own for a new signal (no field shared between clients)
            carried.append(signal.clone().export_state() if i is None else signal_states[i])
        now = [s.settings_text() for s in self.signals]
        lead_text = old.signals[lead].settings_text() if old.signals else None
        if lead_text in now:
            lead = now.index(lead_text)
        else:
            lead, active = 0, False
        return (tuple(carried), lead, active, *rest)

    def _lead(self) -> Detector:
        return self.signals[self._lead_index]

    @property
    def name(self) -> str:  # type: ignore[override]
        return self._lead().name if self.signals else "attack.client"

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self._lead().kind if self.signals else "extraction"

    @property
    def atlas(self) -> tuple[str, ...]:  # type: ignore[override]
        return self._lead().atlas if self.signals else ()

    @property
    def severity(self) -> str:  # type: ignore[override]
        return self._lead().severity if self.signals else "warning"

    def _decide(self) -> None:
        if self._active:
            # the incident ends with its own signal (resolved under its own name); another
            # signal still firing opens the next one (``next_incident``)
            self._active = self.signals[self._lead_index].detected
            return
        for i, s in enumerate(self.signals):
            if s.detected:
                self._lead_index, self._active = i, True
                return

    def next_incident(self) -> bool:
        """Decide again as soon as an incident resolves: a signal still firing names
        the next one now, so a client that has gone quiet is still reported under it
        (a subclass's own ``_decide`` rule applies)."""
        self._decide()
        return self.detected

    def prepare(self, events: Sequence[Event], keys: Sequence[Hashable],
                current: Mapping[Hashable, Detector | None]) -> None:
        for j, signal in enumerate(self.signals):
            if type(signal).prepare is Detector.prepare:
                continue  # nothing to do for the batch
            signal.prepare(events, keys, {
                key: det.signals[j] if isinstance(det, ClientAttack) else None
                for key, det in current.items()})

    def update(self, event: Event) -> None:
        for s in self.signals:
            s.update(event)
        self._decide()

    def tick(self, now: float) -> None:
        for s in self.signals:
            s.tick(now)
        self._decide()

    @property
    def detected(self) -> bool:
        return self._active

    def evidence(self) -> dict[str, Any]:
        lead = self._lead() if self.signals else None
        out = dict(lead.evidence()) if lead is not None else {}
        out["firing_signals"] = [s.name for s in self.signals if s.detected]
        out["other_signals"] = {s.name: s.evidence() for s in self.signals
                                if s is not lead and s.detected}
        return out

    def summary(self, subject: dict[str, str], model: str) -> str:
        text = self._lead().summary(subject, model) if self.signals else super().summary(
            subject, model)
        others = [s.name for s in self.signals if s.detected and s is not self._lead()]
        return text + (f" Also firing: {', '.join(others)}." if others else "")


class SourceAttack(ClientAttack):
    """``ClientAttack`` keyed by source address (``Keyed(key="source_ip")``): its
    signals see the queries of every client id the address uses, so an attack split
    over several keys (Sybil splitting) adds up again. It reports only an address
    that has used at least ``min_clients`` client ids (one key on an address of its
    own is that client's alert already); the evidence names the first
    ``MAX_CLIENT_IDS`` keys seen from the address. (``detectors.fingerprint.CellAttack``
    builds on it for cells of similar queries.)

    >>> d = SourceAttack(signals=(RequestRate(window_s=10, max_events=3),))
    >>> for t in range(5):  # five keys, one request each
    ...     d.update(Event(ts=t, model="m", model_version="1", client_id=f"k{t}",
    ...                    source_ip="10.0.0.9"))
    >>> d.detected, d.evidence()["client_ids"]
    (True, ['k0', 'k1', 'k2', 'k3', 'k4'])
    """

    MAX_CLIENT_IDS = 10
    IDS_SEEN = "seen from it"  # how the summary introduces the client ids ...
    IDS_LISTED = "the first"  # ... and which of them it lists when there are more
    __slots__ = ("_client_ids", "min_clients")

    def __init__(self, *, signals: tuple[Detector, ...] | None = None,
                 min_clients: int = 2) -> None:
        super().__init__(signals=signals)
        self.min_clients = min_clients
        self._client_ids: tuple[str, ...] = ()

    def export_state(self) -> tuple[Any, ...]:
        return (*super().export_state(), self._client_ids)

    def import_state(self, state: tuple[Any, ...]) -> None:
        *base, self._client_ids = state
        super().import_state(tuple(base))

    def update(self, event: Event) -> None:
        cid = event.client_id
        if cid is not None and len(self._client_ids) < self.MAX_CLIENT_IDS \
                and cid not in self._client_ids:
            self._client_ids += (cid,)
        super().update(event)

    @property
    def detected(self) -> bool:
        return self._active and len(self._client_ids) >= self.min_clients

    def evidence(self) -> dict[str, Any]:
        return super().evidence() | {"client_ids": list(self._client_ids),
                                     "client_ids_listed_max": self.MAX_CLIENT_IDS}

    def summary(self, subject: dict[str, str], model: str) -> str:
        more = (f" ({self.IDS_LISTED} {self.MAX_CLIENT_IDS})"
                if len(self._client_ids) >= self.MAX_CLIENT_IDS else "")
        return (super().summary(subject, model)
                + f" Client ids {self.IDS_SEEN}{more}: {', '.join(self._client_ids)}.")
