"""Flooding: a client sending more requests than its budget (MITRE ATLAS AML.T0029
denial of ML service, AML.T0034 cost harvesting)."""

from __future__ import annotations

from typing import Any

from detectors import ring
from detectors.base import Detector, SlotState, subject_name
from detectors.event import Event


class RequestRate(SlotState, Detector):
    """More than ``max_events`` requests in a sliding ``window_s`` of event time.

    The window is kept as ``buckets`` equal sub-windows of counts (a ring), so the
    state is a few integers per client whatever the rate: the count is exact to
    one sub-window. Clears when the count falls back to half the budget.

    >>> d = RequestRate(window_s=60, max_events=100)
    >>> for i in range(150):
    ...     d.update(Event(ts=i * 0.1, model="m", model_version="1", client_id="c"))
    >>> d.detected, d.evidence()["requests_in_window"]
    (True, 150)
    """

    name = "flooding.request_rate"
    kind = "flooding"
    atlas = ("AML.T0029", "AML.T0034")

    counters = ("_ring",)
    __slots__ = ("_detected", "_head", "_peak", "_request_ids", "_ring", "_width", "buckets",
                 "max_events", "window_s")

    def __init__(
        self, *, window_s: float = 60.0, max_events: int = 600, buckets: int = 12
    ) -> None:
        self.window_s = window_s
        self.max_events = max_events
        self.buckets = buckets
        self._width = ring.width(window_s, buckets)
        self._ring = ring.counts(buckets)
        self._head = -1  # absolute index of the newest sub-window
        self._detected = False
        self._peak = 0
        self._request_ids: tuple[str, ...] = ()

    def update(self, event: Event) -> None:
        idx = ring.sub_window(event.ts, self._width)
        if idx > self._head:  # a new sub-window (or the first event)
            self._head = ring.advance(self._ring, self._head, idx, self.buckets)
        if idx > self._head - self.buckets:
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
        if self._detected and count > self._peak:
            self._peak = count
        if not self._detected and count > self.max_events:
            self._detected = True
            self._peak = count
            self._request_ids = ()
        elif self._detected and count <= self.max_events // 2:
            self._detected = False

    @property
    def detected(self) -> bool:
        return self._detected

    @property
    def severity(self) -> str:  # type: ignore[override]
        return "critical" if self._peak > 5 * self.max_events else "warning"

    def evidence(self) -> dict[str, Any]:
        return {
            "requests_in_window": sum(self._ring),
            "peak_requests_in_window": self._peak,
            "threshold": self.max_events,
            "window_s": self.window_s,
            "sample_request_ids": list(self._request_ids),
        }

    def summary(self, subject: dict[str, str], model: str) -> str:
        if not self._detected:  # the incident's resolution
            return (f"{subject_name(subject)} is back under half its budget of "
                    f"{self.max_events} requests to {model} in {self.window_s:g}s "
                    f"({sum(self._ring)} now; {self._peak} at the peak).")
        return (
            f"{subject_name(subject)} sent {self._peak} requests to {model} "
            f"in {self.window_s:g}s (budget {self.max_events}): throttle or block it."
        )
