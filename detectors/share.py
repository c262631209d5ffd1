"""The share of a client's queries that a signal flags, over a sliding window of event
time, with hysteresis: the base of the per-client signals that judge queries one by
one (low-confidence answers, inputs out of range)."""

from __future__ import annotations

from array import array

from detectors import ring
from detectors.base import SlotState, subject_name


class WindowedShare(SlotState):
    """Mixin of a ``Detector`` (listed before it: ``class X(WindowedShare, Detector)``)
    that fires when at least ``min_queries`` queries in the window were counted and a
    share of at least ``max_share`` of them were flagged; clears below half of it.
    Counts (queries, flagged) are kept per sub-window (``detectors.ring``), allocated
    on the first counted query: a client none of whose queries is judged holds none.
    Subclasses count each query with ``_count`` and keep up to five sample request
    ids while the share is high (``_request_ids``, cleared with the alert)."""

    counters = ("_counts",)
    __slots__ = ("_counts", "_detected", "_head", "_request_ids", "_width", "buckets",
                 "max_share", "min_queries", "window_s")

    def __init__(self, *, window_s: float, min_queries: int, max_share: float,
                 buckets: int) -> None:
        self.window_s = window_s
        self.min_queries = min_queries
        self.max_share = max_share
        self.buckets = buckets
        self._width = ring.width(window_s, buckets)
        self._counts: array | None = None  # per sub-window: queries, flagged ones
        self._head = -1  # absolute index of the newest sub-window
        self._detected = False
        self._request_ids: tuple[str, ...] = ()

    def _count(self, ts: float, flagged: bool) -> float | None:
        """Count one query at event time ``ts``; the share after it (None: the query
        is older than the window and not counted)."""
        counts = self._counts
        if counts is None:
            counts = self._counts = ring.counts(self.buckets, stride=2)
        idx = ring.sub_window(ts, self._width)
        if idx > self._head:  # a new sub-window (or the first event)
            self._head = ring.advance(counts, self._head, idx, self.buckets, stride=2)
        if idx <= self._head - self.buckets:
            return None
        slot = 2 * (idx % self.buckets)
        counts[slot] += 1
        if flagged:
            counts[slot + 1] += 1
        return self._evaluate()

    def tick(self, now: float) -> None:
        idx = ring.sub_window(now, self._width)
        if self._counts is None:  # nothing counted: only the newest sub-window moves
            if self._head < 0 or idx > self._head:
                self._head = idx
            return
        self._head = ring.advance(self._counts, self._head, idx, self.buckets, stride=2)
        self._evaluate()

    def _resolution(self, subject: dict[str, str], model: str, flagged: str) -> str:
        """The summary of an incident's end: the share is back under half its limit
        (``flagged``: what the client got or sent, up to the share: "got
        low-confidence answers for")."""
        total, share = self._share()
        if not total:
            return (f"{subject_name(subject)} sent no query to {model} in the last "
                    f"{self.window_s:g}s: back to normal.")
        return (f"{subject_name(subject)} {flagged} {share:.0%} of its last {total} "
                f"queries to {model}, under {self.max_share / 2:.0%}: back to normal.")

    def _share(self) -> tuple[int, float]:
        counts = self._counts
        if counts is None:
            return 0, 0.0
        total = sum(counts[0::2])
        return total, (sum(counts[1::2]) / total if total else 0.0)

    def _evaluate(self) -> float:
        total, share = self._share()
        if not self._detected and total >= self.min_queries and share >= self.max_share:
            self._detected = True
        elif self._detected and share < self.max_share / 2:
            self._detected = False
            self._cleared()
        return share

    def _cleared(self) -> None:
        """The condition cleared: forget the samples of the incident."""
        self._request_ids = ()

    def _sample(self, request_id: str | None) -> None:
        if request_id is not None and len(self._request_ids) < 5:
            self._request_ids += (request_id,)

    @property
    def detected(self) -> bool:
        return self._detected
