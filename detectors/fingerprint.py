"""Linkage by query fingerprint: the queries of every client id that land near the
same input are watched together, so a black-box attack split over many keys
*and* source addresses (Sybil splitting from a botnet or rotating cloud hosts)
adds up again.

A query's fingerprint is its cell on a coarse grid: a 16-value projection of the
query (``queries.sketches``) divided by the query's norm, and the log of that
norm, each cut into steps of ``width`` at a fixed random offset, then hashed.
Queries that differ by much less than ``width`` of their size (the gradient
probes and boundary steps of HopSkipJump, Boundary, GeoDA, SimBA) share a
fingerprint unless a grid line separates them; unrelated natural inputs rarely
do. After Blacklight (Li et al., USENIX Security 2022), whose hashed
fingerprints of quantised queries are matched across a whole service; here the
grid cell only routes queries to a shared ``QueryNeighbours`` (its near-copy,
bisection, coordinate-walk and star tests) that sees every key's queries, and the
cell fires only when they are answered near the decision boundary (``CellAttack``).

``FingerprintKeyed`` keys by ``(model, fingerprint)``; its subject is
``{"query_fingerprint": "<16 hex digits>"}``. Most natural queries open a cell
of their own that never sees a second query, so cells are capped and expire
fast (``max_keys``, ``idle_s``). ``CellAttack`` is a cell's verdict: near copies
from several client ids, answered near the decision boundary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from detectors import queries
from detectors.allow import AllowListed
from detectors.attack import ClientAttack, SourceAttack
from detectors.base import Detector
from detectors.event import Event
from detectors.keyed import Keyed
from detectors.neighbours import QueryNeighbours
from detectors.probing import LowConfidenceShare
from detectors.queries import row_sums, sketches

DIMS = 16  # twice query neighbours' sketch: distinct natural inputs seldom share a cell
_OFFSETS = np.random.default_rng(20221).uniform(0.0, 1.0, DIMS + 1)  # the grid's shift


def cells(x: np.ndarray, width: float) -> list[str]:
    """The fingerprint of each query (row of ``x``): the same bits for a row alone or
    in any batch (elementwise arithmetic and ordered sums)."""
    sk = sketches(x, DIMS)
    norm = np.sqrt(row_sums(x * x))
    safe = np.maximum(norm, 1e-300)
    k = sk.shape[1]
    grid = np.empty((x.shape[0], k + 1), dtype=np.int64)
    grid[:, :k] = np.floor(sk / (width * safe[:, None]) + _OFFSETS[:k])
    grid[:, k] = np.floor(np.log(safe) / width + _OFFSETS[k])
    grid[norm == 0.0] = 0  # the zero query: one cell of its own
    prefix = x.shape[1].to_bytes(4, "little")
    raw = grid.tobytes()
    step = 8 * (k + 1)
    return [hashlib.blake2b(prefix + raw[i:i + step], digest_size=8).hexdigest()
            for i in range(0, len(raw), step)]


def batch_fingerprints(events: Sequence[Event], width: float) -> list[str | None]:
    """The fingerprint of each event's query (None: no numeric query), computed per
    query length in one pass over the prepared batch (``queries.prepare``)."""
    batch = queries.prepare(events)
    per_group = [cells(x, width) for x in batch.groups]
    return [None if w is None else per_group[w[0]][w[1]] for w in batch.where]


def fingerprint(event: Event, width: float) -> str | None:
    """The fingerprint of one event's query, computed alone (None: no numeric query)."""
    found = queries.query_input(event)
    return None if found is None else cells(found[0][None, :], width)[0]


class FingerprintKeyed(AllowListed):
    """``AllowListed`` keyed by ``(model, query fingerprint)`` (see the module
    docstring); a batch's fingerprints are computed when it is announced
    (``prepare``), an event outside it alone, with the same result."""

    def __init__(self, *args: Any, width: float = 0.05, **kwargs: Any) -> None:
        super().__init__(*args, key="fingerprint", **kwargs)
        self.width = width
        self._prepared: dict[int, tuple[Event, str | None]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in super().__getstate__().items() if k != "_prepared"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._prepared = {}

    def keys_like(self, other: Keyed) -> bool:
        """Cells of another width are other keys."""
        return super().keys_like(other) and getattr(other, "width", None) == self.width

    def prepare(self, events: Sequence[Event]) -> None:
        found = batch_fingerprints(events, self.width)
        self._prepared = {id(e): (e, f) for e, f in zip(events, found, strict=True)}
        super().prepare(events)

    def _key_of(self, event: Event) -> Hashable | None:
        hit = self._prepared.get(id(event))
        fp = hit[1] if hit is not None and hit[0] is event else fingerprint(event, self.width)
        return None if fp is None else (event.model, fp)


class CellAttack(SourceAttack):
    """The verdict on a cell: its ``QueryNeighbours`` fires on the queries of at
    least ``min_clients`` client ids *and* its ``LowConfidenceShare`` finds most of
    the cell's answers low-confidence (``signals`` are these two, in this order).
    A query-based attack walks the decision boundary; the near copies of a popular
    input, sent by its many users (edited, augmented, rescaled), are answered with
    confidence. The evidence lists the client ids whose queries were the cell's
    latest hits, most recent last, and only they count towards ``min_clients``: a
    busy cell's other visitors (ordinary users whose inputs happen to fall in it)
    are not part of the walk, unless an input sits around the attacked one as a
    noise search's queries do (the star test), which makes it a hit too. In
    ``bench.attacks``, where 1,650 clients query the same 899 images, cells named
    301 of 1,000 benign clients a day at first, 39 with the gate, 5 once only
    clients with hits counted (with 16-value cells, 3 hits).

    >>> d = CellAttack(min_clients=2)
    >>> for i in range(12):  # two keys walk in tiny steps near the boundary
    ...     x = [v + 0.001 * i * (j + 1) for j, v in enumerate([1.0, 2.0, 3.0, 4.0])]
    ...     d.update(Event(ts=i, model="m", model_version="1", client_id=f"k{i % 2}",
    ...                    confidence=0.55, features=dict(zip("abcd", x))))
    >>> d.detected, d.name, d.evidence()["firing_signals"]
    (True, 'evasion.query_neighbours', ['evasion.query_neighbours', 'extraction.low_confidence_share'])
    """

    __slots__ = ()
    IDS_SEEN = "whose queries were its latest hits"
    IDS_LISTED = "the latest"

    def __init__(self, *, signals: tuple[Detector, ...] | None = None,
                 min_clients: int = 2) -> None:
        signals = signals or (QueryNeighbours(), LowConfidenceShare(min_queries=1))
        if not (len(signals) == 2 and isinstance(signals[0], QueryNeighbours)
                and isinstance(signals[1], LowConfidenceShare)):
            raise ValueError("CellAttack takes (QueryNeighbours, LowConfidenceShare)")
        super().__init__(signals=signals, min_clients=min_clients)

    def update(self, event: Event) -> None:
        near = self.signals[0]
        assert isinstance(near, QueryNeighbours)
        before = near.hits
        ClientAttack.update(self, event)
        cid = event.client_id
        if near.hits > before and cid is not None and (
                not self._client_ids or self._client_ids[-1] != cid):
            ids = (*[i for i in self._client_ids if i != cid], cid)
            self._client_ids = ids[-self.MAX_CLIENT_IDS:]

    def _decide(self) -> None:
        near, boundary = self.signals
        self._lead_index = 0  # the alert is the near copies'; the share is evidence
        self._active = near.detected and boundary.detected
