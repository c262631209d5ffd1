"""Windowed count rules as data (after Falco and Sigma): "more than N queries (or N
distinct inputs) per client in a window" with a stable name, a kind, a severity
and MITRE ATLAS tags, all from configuration. The catch-all for what no query
pattern gives away: natural-data model extraction (Knockoff Nets, Copycat CNN,
AML.T0024.002) and membership-inference sweeps (AML.T0024.000) look like ordinary
traffic one query at a time and differ only in volume. A rule can be scoped to some
models and some clients (exact names or ``prefix*``): a budget per model, or a
stricter one for anonymous keys.
"""

from __future__ import annotations

from array import array
from typing import Any, ClassVar

from detectors import ring
from detectors.allow import named
from detectors.base import Detector, SlotState, subject_name
from detectors.event import Event
from detectors.queries import query_input


class CountRule(SlotState, Detector):
    """More than ``max_events`` queries by one client within a sliding ``window_s``.

    With ``distinct``, a query whose input equals one of the client's previous 8
    inputs (a retry) is not counted. The window is ``buckets`` sub-windows of
    counts, so the state is a few dozen bytes whatever the volume. Clears when the
    count falls to half the limit. With ``models`` or ``clients`` (exact names or
    ``prefix*``), only the events of those models and clients count.

    >>> r = CountRule(rule="extraction.query_volume", window_s=3600, max_events=3)
    >>> for i in range(6):  # 3 inputs, each sent twice: 3 distinct
    ...     r.update(Event(ts=i, model="m", model_version="1", client_id="c",
    ...                    features={"x": float(i // 2)}))
    >>> r.detected, r.evidence()["count_in_window"]
    (False, 3)
    >>> r.update(Event(ts=7, model="m", model_version="1", client_id="c", features={"x": 9.0}))
    >>> r.detected, r.name, r.kind
    (True, 'extraction.query_volume', 'extraction')
    >>> anon = CountRule(rule="anon.volume", max_events=1, distinct=False, clients=("anon-*",))
    >>> for c in ("key-1", "key-1", "anon-7", "anon-7"):
    ...     anon.update(Event(ts=1, model="m", model_version="1", client_id=c))
    >>> anon.evidence()["count_in_window"]
    2
    """

    counters = ("_ring", "_recent")
    __slots__ = ("_detected", "_head", "_peak", "_recent", "_request_ids", "_ring", "_seen",
                 "_width", "atlas", "buckets", "clients", "distinct", "kind", "max_events",
                 "models", "rule", "severity", "window_s")
    # a rule stored before scopes counts every model and every client
    added_slots: ClassVar[dict[str, Any]] = {"clients": (), "models": ()}

    def __init__(
        self,
        *,
        rule: str = "extraction.query_volume",
        kind: str = "extraction",
        severity: str = "warning",
        atlas: tuple[str, ...] = ("AML.T0024.002", "AML.T0024.000"),
        window_s: float = 86_400.0,
        max_events: int = 1000,
        buckets: int = 24,
        distinct: bool = True,
        models: tuple[str, ...] = (),
        clients: tuple[str, ...] = (),
    ) -> None:
        self.rule = rule
        self.models = tuple(models)
        self.clients = tuple(clients)
        self.kind = kind  # type: ignore[misc]
        self.severity = severity
        self.atlas = tuple(atlas)  # type: ignore[misc]
        self.window_s = window_s
        self.max_events = max_events
        self.buckets = buckets
        self.distinct = distinct
        self._width = ring.width(window_s, buckets)
        self._ring = ring.counts(buckets)
        self._recent = array("I", bytes(4 * 8)) if distinct else None
        self._seen = 0
        self._head = -1
        self._detected = False
        self._peak = 0
        self._request_ids: tuple[str, ...] = ()

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.rule

    def in_scope(self, event: Event) -> bool:
        """Whether the rule counts this event (its model and client in scope)."""
        return (not self.models or named(event.model, self.models)) and (
            not self.clients or named(event.client_id, self.clients))

    def _is_repeat(self, event: Event) -> bool:
        if self._recent is None:
            return False
        query = query_input(event)
        if query is None:
            return False
        digest = query[1]
        if digest in self._recent[: min(self._seen, 8)]:
            return True
        self._recent[self._seen % 8] = digest
        self._seen += 1
        return False

    def update(self, event: Event) -> None:
        if (self.models or self.clients) and not self.in_scope(event):
            return
        idx = ring.sub_window(event.ts, self._width)
        if idx > self._head:  # a new sub-window (or the first event)
            self._head = ring.advance(self._ring, self._head, idx, self.buckets)
        if idx <= self._head - self.buckets or self._is_repeat(event):
            return
        self._ring[idx % self.buckets] += 1
        self._evaluate()
        if event.request_id is not None and self._detected and len(self._request_ids) < 5:
            self._request_ids += (event.request_id,)

    def tick(self, now: float) -> None:
        self._head = ring.advance(self._ring, self._head, ring.sub_window(now, self._width),
                                  self.buckets)
        self._evaluate()

    def _evaluate(self) -> None:
        count = sum(self._ring)
        if self._detected:
            self._peak = max(self._peak, count)
            if count <= self.max_events // 2:
                self._detected = False
                self._request_ids = ()
        elif count > self.max_events:
            self._detected = True
            self._peak = count

    @property
    def detected(self) -> bool:
        return self._detected

    def evidence(self) -> dict[str, Any]:
        scope = {k: list(v) for k, v in (("models", self.models), ("clients", self.clients)) if v}
        return {
            "rule": self.rule,
            **({"scope": scope} if scope else {}),
            "count_in_window": sum(self._ring),
            "peak_count_in_window": self._peak,
            "threshold": self.max_events,
            "window_s": self.window_s,
            "distinct_inputs_only": self.distinct,
            "sample_request_ids": list(self._request_ids),
        }

    def summary(self, subject: dict[str, str], model: str) -> str:
        what = "distinct inputs" if self.distinct else "queries"
        if not self._detected:  # the incident's resolution
            return (f"{subject_name(subject)} is back under half the limit of rule "
                    f"{self.rule} ({self.max_events} {what} to {model} in "
                    f"{self.window_s:g}s): {sum(self._ring)} now, {self._peak} at the peak.")
        return (
            f"{subject_name(subject)} sent {self._peak} {what} to {model} within "
            f"{self.window_s:g}s (rule {self.rule}: at most {self.max_events}): "
            f"check who owns the key and what it collects."
        )
