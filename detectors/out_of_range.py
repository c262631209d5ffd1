"""Out-of-range queries: a client whose inputs keep falling outside what the model
was trained on is sending synthetic queries — noise or crafted inputs for model
extraction (MITRE ATLAS AML.T0024.002, as in Copycat CNN and Knockoff Nets with
random queries, or the synthetic queries of Papernot et al.'s and Tramèr et al.'s
extraction attacks) or the off-manifold steps of a black-box evasion search
(AML.T0043.001).

The model's reference is a stored drift reference built from its training or
validation data (``inferwatch reference build``; automatic references, built from
production traffic, do not count). Its layout keeps every numeric feature's
minimum and maximum (the outer bin edges). A query is *out of range* when a
numeric feature lies beyond them by more than ``margin`` times the feature's
reference range (for a feature constant in the reference: the median range of the
others); features the reference does not know, missing values and strings are not
judged. Unlike the low-confidence share, this does not depend on
the model answering odd inputs with low confidence: many models answer noise
confidently.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from detectors.base import Detector, subject_name
from detectors.drift import ReferenceSet
from detectors.event import Event
from detectors.reference import Reference, feature_matrix
from detectors.share import WindowedShare

_MAX_EXAMPLES = 5
# the batch prepared, the (references, margin) it was judged with, and id(event) -> its
# out-of-range feature count
_PREPARED: list[Any] = [None, None, {}]


def _outside(ref: Reference, margin: float, features: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Per feature map, whether each of the reference's numeric features is out of its
    widened range (``Layout.widened_range``)."""
    layout = ref.layout
    lo, hi = layout.widened_range(margin)
    x = feature_matrix(features, layout.numeric)  # None, strings: NaN
    return (x < lo) | (x > hi)


class OutOfRangeShare(WindowedShare, Detector):
    """Share of a client's queries with a feature outside the model's reference range,
    over ``window_s``: fires when at least ``min_queries`` queries in the window were
    judged and a share of at least ``max_share`` were out of range; clears below
    half of it (``detectors.share``). Events of a model without a stored reference,
    or without features, are not counted.

    >>> from detectors.reference import build_reference
    >>> ref = build_reference([{"x": float(i % 10)} for i in range(100)], model="m")
    >>> d = OutOfRangeShare(references=ReferenceSet([ref]), min_queries=10)
    >>> for i in range(20):  # every other query far outside 0..9
    ...     d.update(Event(ts=i, model="m", model_version="1", client_id="c",
    ...                    features={"x": 50.0 if i % 2 else 4.0}))
    >>> d.detected, d.evidence()["out_of_range_share"], d.evidence()["example_features"]
    (True, 0.5, ['x'])
    """

    name = "extraction.out_of_range_share"
    kind = "extraction"
    atlas = ("AML.T0024.002", "AML.T0043.001")
    shared_params = ("references",)
    __slots__ = ("_examples", "margin", "references")

    def __init__(
        self,
        *,
        window_s: float = 600.0,
        min_queries: int = 20,
        max_share: float = 0.5,
        margin: float = 0.1,
        buckets: int = 10,
        references: ReferenceSet | None = None,
    ) -> None:
        super().__init__(window_s=window_s, min_queries=min_queries, max_share=max_share,
                         buckets=buckets)
        self.margin = margin
        # the stored references, shared by every client's clone (never in its state)
        self.references = references
        self._examples: tuple[str, ...] = ()  # out-of-range features, while it fires

    # -- the batch pass ----------------------------------------------------------------
    def prepare(self, events: Sequence[Event], keys: Sequence[Hashable],
                current: Mapping[Hashable, Detector | None]) -> None:
        """Judge every query of the batch against its model's reference, one numpy
        pass per model version; ``update`` then reads each event's count here."""
        if not self.references:
            return
        groups: dict[tuple[str, str], tuple[list[int], list[Mapping[str, Any]]]] = {}
        for event, key in zip(events, keys, strict=True):
            if key is not None and event.features:
                ids, features = groups.setdefault((event.model, event.model_version), ([], []))
                ids.append(id(event))
                features.append(event.features)
        counts: dict[int, int] = {}
        for (model, version), (ids, features) in groups.items():
            ref = self.references.get(model, version)
            if ref is not None:
                out = _outside(ref, self.margin, features).sum(axis=1)
                counts.update(zip(ids, out.tolist(), strict=True))
        _PREPARED[:] = [events, (self.references, self.margin), counts]

    def _out_of_range(self, ref: Reference, event: Event, features: Mapping[str, Any]) -> int:
        """How many features of the event's query are out of range."""
        prepared = _PREPARED[1]
        if prepared is not None and prepared[0] is self.references and prepared[1] == self.margin:
            found = _PREPARED[2].get(id(event))
            if found is not None:
                return found
        return int(_outside(ref, self.margin, [features]).sum())

    def _names_out(self, ref: Reference, features: Mapping[str, Any]) -> list[str]:
        outside = _outside(ref, self.margin, [features])[0]
        return [n for n, out in zip(ref.layout.numeric, outside, strict=True) if out]

    # -- one event ----------------------------------------------------------------------
    def update(self, event: Event) -> None:
        refs, features = self.references, event.features
        ref = refs.get(event.model, event.model_version) if refs and features else None
        if ref is None or features is None:  # not judged
            return
        n_out = self._out_of_range(ref, event, features)
        if self._count(event.ts, n_out > 0) is not None and n_out and self._detected:
            self._sample(event.request_id)
            if len(self._examples) < _MAX_EXAMPLES:
                new = [n for n in self._names_out(ref, features) if n not in self._examples]
                self._examples += tuple(new[:_MAX_EXAMPLES - len(self._examples)])

    def _cleared(self) -> None:
        super()._cleared()
        self._examples = ()

    def evidence(self) -> dict[str, Any]:
        total, share = self._share()
        return {
            "queries_in_window": total,
            "out_of_range_share": round(share, 4),
            "share_threshold": self.max_share,
            "min_queries": self.min_queries,
            "margin_of_range": self.margin,
            "window_s": self.window_s,
            "example_features": list(self._examples),
            "sample_request_ids": list(self._request_ids),
        }

    def summary(self, subject: dict[str, str], model: str) -> str:
        if not self.detected:  # the incident's resolution
            return self._resolution(subject, model, "sent features out of range in")
        total, share = self._share()
        where = f" ({', '.join(self._examples)})" if self._examples else ""
        return (
            f"{subject_name(subject)} sent {share:.0%} of {total} queries to {model} with "
            f"features outside the range of its reference data{where}: what synthetic or "
            f"crafted inputs look like (extraction or evasion), or data the reference never "
            f"saw (a new category, a wider range); review it and rate-limit it unless it is "
            f"known."
        )
