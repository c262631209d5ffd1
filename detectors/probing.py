"""Boundary probing: a client whose answers are mostly low-confidence is querying
near the decision boundary, as model-extraction and black-box evasion attacks do
(MITRE ATLAS AML.T0024.002 extraction, AML.T0043.001 black-box optimisation)."""

from __future__ import annotations

from typing import Any

from detectors.base import Detector, subject_name
from detectors.event import Event
from detectors.share import WindowedShare


class LowConfidenceShare(WindowedShare, Detector):
    """Share of a client's answers below ``low_confidence`` over ``window_s``.

    Benign traffic sits mostly far from the boundary; boundary-walking queries
    (HopSkipJump-style searches, active-learning extraction) get low-confidence
    answers most of the time. Fires when at least ``min_queries`` answers in the
    window and a share of at least ``max_share`` were low; clears below half of it
    (``detectors.share``: counts per sub-window, so state is constant per client).

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

    __slots__ = ("low_confidence",)

    def __init__(
        self,
        *,
        window_s: float = 600.0,
        low_confidence: float = 0.6,
        min_queries: int = 50,
        max_share: float = 0.5,
        buckets: int = 10,
    ) -> None:
        super().__init__(window_s=window_s, min_queries=min_queries, max_share=max_share,
                         buckets=buckets)
        self.low_confidence = low_confidence

    def update(self, event: Event) -> None:
        if event.confidence is None:
            return
        low = event.confidence < self.low_confidence
        share = self._count(event.ts, low)
        # sample ids only while the client looks like a prober: a benign client's state
        # holds no request ids (they are most of an idle client's memory otherwise)
        if share is not None and low and share >= self.max_share:
            self._sample(event.request_id)

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
        if not self.detected:  # the incident's resolution
            return self._resolution(subject, model, "got low-confidence answers for")
        total, share = self._share()
        return (
            f"{subject_name(subject)} got low-confidence answers for {share:.0%} of "
            f"{total} queries to {model}: what probing the decision boundary looks like "
            f"(extraction or evasion), or real inputs the model is unsure of; review it "
            f"and rate-limit it unless it is known."
        )
