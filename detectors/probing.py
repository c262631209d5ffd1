"""Boundary probing: a client whose answers are mostly low-confidence is querying
near the decision boundary, as model-extraction and black-box evasion attacks do
(MITRE ATLAS AML.T0024.002 extraction, AML.T0043.001 black-box optimisation)."""

from __future__ import annotations

from typing import Any

from detectors import ring
from detectors.base import Detector, SlotState, subject_name
from detectors.event import Event


class LowConfidenceShare(SlotState, Detector):
    """Share of a client's answers below ``low_confidence`` over ``window_s``.

    Benign traffic sits mostly far from the boundary; boundary-walking queries
    (HopSkipJump-style searches, active-learning extraction) get low-confidence
    answers most of the time. Fires when at least ``min_queries`` answers in the
    window and a share of at least ``max_share`` were low; clears below half of it.
    Counts (answers, low answers) are kept per sub-window (``detectors.ring``), so
    state is constant per client.

    >>> d = LowConfidenceShare(window_s=600, min_queries=20, max_share=0.5)
    >>> for i in range(40):
    ...     d.update(Event(ts=i, model="m", model_version="1", client_id="c",
    ...                    confidence=0.55 if i % 4 else 0.99))
    >>> d.detected, d.evidence()["low_confidence_share"]
    (True, 0.75)
    """

    name = "extraction.low_confidence_share"
    kind = "extraction"
    atlas = ("AML.T0024.002", "AML.T0043.001")

    counters = ("_counts",)
    __slots__ = ("_counts", "_detected", "_head", "_request_ids", "_width", "buckets",
                 "low_confidence", "max_share", "min_queries", "window_s")

    def __init__(
        self,
        *,
        window_s: float = 600.0,
        low_confidence: float = 0.6,
        min_queries: int = 50,
        max_share: float = 0.5,
        buckets: int = 10,
    ) -> None:
        self.window_s = window_s
        self.low_confidence = low_confidence
        self.min_queries = min_queries
        self.max_share = max_share
        self.buckets = buckets
        self._width = ring.width(window_s, buckets)
        self._counts = ring.counts(buckets, stride=2)  # per sub-window: answers, low answers
        self._head = -1
        self._detected = False
        self._request_ids: tuple[str, ...] = ()

    def update(self, event: Event) -> None:
        if event.confidence is None:
            return
        idx = ring.sub_window(event.ts, self._width)
        if idx > self._head:  # a new sub-window (or the first event)
            self._head = ring.advance(self._counts, self._head, idx, self.buckets, stride=2)
        if idx <= self._head - self.buckets:
            return
        slot = 2 * (idx % self.buckets)
        self._counts[slot] += 1
        low = event.confidence < self.low_confidence
        if low:
            self._counts[slot + 1] += 1
        share = self._evaluate()
        # sample ids only while the client looks like a prober: a benign client's state
        # holds no request ids (they are most of an idle client's memory otherwise)
        if (low and share >= self.max_share and event.request_id is not None
                and len(self._request_ids) < 5):
            self._request_ids += (event.request_id,)

    def tick(self, now: float) -> None:
        self._head = ring.advance(self._counts, self._head, ring.sub_window(now, self._width),
                                  self.buckets, stride=2)
        self._evaluate()

    def _share(self) -> tuple[int, float]:
        total = sum(self._counts[0::2])
        return total, (sum(self._counts[1::2]) / total if total else 0.0)

    def _evaluate(self) -> float:
        total, share = self._share()
        if not self._detected and total >= self.min_queries and share >= self.max_share:
            self._detected = True
        elif self._detected and share < self.max_share / 2:
            self._detected = False
            self._request_ids = ()
        return share

    @property
    def detected(self) -> bool:
        return self._detected

    def evidence(self) -> dict[str, Any]:
        total, share = self._share()
        return {
            "queries_in_window": total,
            "low_confidence_share": round(share, 4),
            "low_confidence_below": self.low_confidence,
            "share_threshold": self.max_share,
            "min_queries": self.min_queries,
            "window_s": self.window_s,
            "sample_request_ids": list(self._request_ids),
        }

    def summary(self, subject: dict[str, str], model: str) -> str:
        total, share = self._share()
        return (
            f"{subject_name(subject)} got low-confidence answers for {share:.0%} of "
            f"{total} queries to {model}: it is probing the decision boundary "
            f"(extraction or evasion); review and rate-limit it."
        )
