"""Small-step query chains: a client whose queries keep landing right next to its
own recent queries is running a query-based black-box attack (MITRE ATLAS
AML.T0043.001 black-box optimisation: HopSkipJump, Boundary, Sign-OPT, GeoDA,
ZOO, SimBA all estimate gradients or walk the boundary with tiny perturbations
of one input), or a perturbation-based extraction (AML.T0024.002).

After Blacklight (Li et al., USENIX Security 2022: fingerprints of recent
queries, alarm on many near-matches) and the stateful detector of Chen, Carlini
& Wagner (2020: distance to the k nearest earlier queries of the account), with
two changes that keep benign clients quiet:

- exact repeats (retries) are recognised by a hash of the raw input and never
  count as neighbours;
- a near copy is either close in L2 (dense small perturbations: HopSkipJump,
  Boundary, GeoDA) or equal to a recent query in all but one of ``groups``
  feature groups (sparse, coordinate-wise perturbations: SimBA, ZOO);
- one query with a few near copies (augmentation, test-time augmentation) is
  not enough: a query counts as a *hit* only when at least ``min_neighbours``
  distinct near copies sit among the last ``history`` distinct queries, i.e. a
  cluster larger than any augmentation burst, and the client fires after
  ``min_hits`` hits within ``window_s``;
- two search patterns count as hits before any cluster forms: a binary search
  (``halvings`` steps in a row, each half the one before) and a coordinate-wise
  walk (``sparse_steps`` queries in a row, each differing from the query before
  it in 1 to ``sparse_groups`` groups: SimBA changes one pixel per query, so it
  is seen after 4 steps instead of after 5 near copies of one query have piled
  up). A person editing one field at a time looks the same after 4 edits.

Distances are relative: L2 distance divided by the client's running mean query
norm, so the radius means "within 2% of a typical query of this client" for
any feature scale that is roughly uniform across features (standardise very
unevenly scaled features in the producer, or send an ``embedding``).
"""

from __future__ import annotations

import math
import sys
import zlib
from typing import Any, ClassVar

import numpy as np

from detectors.base import Detector, SlotState
from detectors.event import Event

_PROJECTIONS: dict[tuple[int, int], np.ndarray] = {}
_MIXERS: dict[int, np.ndarray] = {}
_TOP_BYTE = 7 if sys.byteorder == "little" else 0


def query_vector(event: Event) -> np.ndarray | None:
    """The numeric query: the embedding if any, else the numeric features in the
    producer's key order (bools as 0/1, nulls as 0; strings are left out). None:
    nothing numeric."""
    if event.embedding:
        return np.asarray(event.embedding, dtype=np.float64)
    feats = event.features
    if not feats:
        return None
    try:  # all numbers (the common case): one C loop
        return np.fromiter(feats.values(), dtype=np.float64, count=len(feats))
    except (TypeError, ValueError):
        values = [0.0 if v is None else float(v) for v in feats.values()
                  if not isinstance(v, str)]
    return np.asarray(values, dtype=np.float64) if values else None


_LAST_QUERY: list[Any] = [None, None, 0]  # the event last asked about, its vector, its hash


def query_input(event: Event) -> tuple[np.ndarray, int] | None:
    """``query_vector(event)`` and the CRC-32 of its bytes (the input's identity for
    retries and novelty), computed once per event however many per-client signals
    ask: a one-entry memo on the (immutable) event object."""
    last = _LAST_QUERY
    if last[0] is not event:
        x = query_vector(event)
        last[0], last[1], last[2] = event, x, 0 if x is None else zlib.crc32(x.tobytes())
    return None if last[1] is None else (last[1], last[2])


def _projection(d: int, dims: int) -> np.ndarray:
    """A fixed Gaussian projection d → dims (Johnson-Lindenstrauss), the same in
    every process (seeded by the shape), so replays agree."""
    key = (d, dims)
    mat = _PROJECTIONS.get(key)
    if mat is None:
        rng = np.random.default_rng(d * 7919 + dims)
        mat = rng.normal(0.0, 1.0 / np.sqrt(dims), size=(d, dims))
        _PROJECTIONS[key] = mat
    return mat


def group_codes(x: np.ndarray, groups: int) -> np.ndarray:
    """One byte per feature group (feature ``j`` in group ``j % groups``) that changes
    when any value of the group changes: two queries that differ in one feature
    differ in exactly one code."""
    bits = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)
    pad = (-bits.shape[0]) % groups
    if pad:
        bits = np.concatenate([bits, np.zeros(pad, np.uint64)])
    mixer = _MIXERS.get(bits.shape[0])
    if mixer is None:  # odd 64-bit multipliers, the same in every process
        rng = np.random.default_rng(bits.shape[0])
        odd = rng.integers(0, 2**63, bits.shape[0], dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        mixer = _MIXERS[bits.shape[0]] = np.asarray(odd, dtype=np.uint64)
    sums = (bits * mixer).reshape(-1, groups).sum(axis=0)
    return sums.view(np.uint8)[_TOP_BYTE::8]  # the top byte of each sum (its best-mixed bits)


class QueryNeighbours(SlotState, Detector):
    """Fires when a client's queries form a tight cluster of distinct inputs.

    Parameters: ``history`` distinct recent queries are kept (as ``dims``-value
    float16 sketches plus a 4-byte hash of the raw input, 20 bytes each by default);
    ``radius`` is the near-copy distance relative to the client's mean query
    norm, and a query that differs from a recent one in at most ``sparse_groups`` of
    ``groups`` feature groups (inputs with at least 4 features) is a near copy too;
    a query with at least ``min_neighbours`` near copies in the history is a
    hit, and so is the ``halvings``-th bisection step or the ``sparse_steps``-th
    sparse step in a row, or the ``star_steps``-th query in a row around one
    centre; ``min_hits`` hits within ``window_s`` fire; no hit for ``window_s``
    clears.

    >>> d = QueryNeighbours()
    >>> base = [1.0, 2.0, 3.0, 4.0]
    >>> for i in range(12):  # a walk in tiny steps from one point
    ...     x = [v + 0.001 * i * (j + 1) for j, v in enumerate(base)]
    ...     d.update(Event(ts=i, model="m", model_version="1", client_id="c",
    ...                    features=dict(zip("abcd", x))))
    >>> d.detected, d.evidence()["first_hit_query"]
    (True, 6)
    """

    name: ClassVar[str] = "evasion.query_neighbours"
    kind: ClassVar[str] = "evasion"
    atlas: ClassVar[tuple[str, ...]] = ("AML.T0043.001", "AML.T0024.002")
    severity = "critical"

    __slots__ = ("_anchor", "_buf", "_filled", "_first_hit", "_halvings", "_hits", "_last_hit",
                 "_max_halvings", "_max_near", "_max_sparse", "_max_star", "_norm_mean",
                 "_queries", "_repeats", "_request_ids", "_sparse", "_star", "_step",
                 "_window_hits", "dims", "groups", "halvings", "history", "min_hits",
                 "min_neighbours", "radius", "sparse_groups", "sparse_steps", "star_radius",
                 "star_steps", "window_s")

    def __init__(
        self,
        *,
        history: int = 16,
        dims: int = 8,
        radius: float = 0.02,
        groups: int = 8,
        sparse_groups: int = 2,
        min_neighbours: int = 5,
        halvings: int = 4,
        sparse_steps: int = 4,
        star_steps: int = 6,
        star_radius: float = 0.3,
        min_hits: int = 1,
        window_s: float = 600.0,
    ) -> None:
        self.history = history
        self.dims = dims
        self.radius = radius
        self.groups = groups
        self.sparse_groups = sparse_groups
        self.min_neighbours = min_neighbours
        self.halvings = halvings
        self.sparse_steps = sparse_steps
        self.star_steps = star_steps
        self.star_radius = star_radius
        self.min_hits = min_hits
        self.window_s = window_s
        # (history,) uint32 input hashes, (history, groups) group codes, then
        # (history, k) float16 sketches, in one raw buffer (compact in memory and in
        # checkpoints), allocated on the first query
        self._buf: bytearray | None = None
        self._filled = 0  # distinct queries written so far (ring position = _filled % history)
        self._norm_mean = 0.0
        self._queries = 0
        self._repeats = 0
        self._hits = 0  # hits in the current window
        self._window_hits = 0
        self._last_hit = float("-inf")
        self._first_hit: int | None = None
        self._max_near = 0
        self._step = 0.0  # distance of the latest query to its nearest earlier one
        self._halvings = 0  # current run of bisection steps
        self._max_halvings = 0
        self._sparse = 0  # current run of sparse steps (each a sparse copy of the one before)
        self._max_sparse = 0
        self._anchor = -1  # distinct-query number of the current star's centre
        self._star = 0  # current run of queries around it
        self._max_star = 0
        self._request_ids: tuple[str, ...] = ()

    def _sketch(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] > self.dims:
            x = x @ _projection(x.shape[0], self.dims)
        return x

    def update(self, event: Event) -> None:
        self.tick(event.ts)
        query = query_input(event)
        if query is None:
            return
        x, digest = query
        self._queries += 1
        s = self._sketch(x)
        k = s.shape[0]
        h = self.history
        g = self.groups if x.shape[0] >= max(4, self.groups) else 0
        off = 4 * h + (h * g + 1) // 2 * 2  # float16 sketches start 2-byte aligned
        if self._buf is None or len(self._buf) != off + h * 2 * k:
            self._buf = bytearray(off + h * 2 * k)
            self._filled = 0
        all_hashes = np.frombuffer(self._buf, dtype=np.uint32, count=h)
        codes = np.frombuffer(self._buf, dtype=np.uint8, count=h * g, offset=4 * h).reshape(h, g)
        ring = np.frombuffer(self._buf, dtype=np.float16, offset=off).reshape(h, k)
        n = min(self._filled, h)
        if n and digest in all_hashes[:n].tolist():
            self._repeats += 1  # a retry: neither evidence nor history
            self._star = 0  # ... and a resent input starts any star over
            return
        norm = math.sqrt(float(x @ x))
        # running mean of the query norm (exact mean for the first 64, then EW)
        self._norm_mean += (norm - self._norm_mean) / min(self._queries - self._repeats, 64)
        near = 0
        code = group_codes(x, g) if g else None
        chain = False
        if n:
            d2 = ((ring[:n] - s) ** 2).sum(axis=1)
            limit = self.radius * max(self._norm_mean, 1e-12)
            close = d2 <= limit * limit
            prev = (self._filled - 1) % h
            sparse_step = False
            if code is not None:
                changed = (codes[:n] != code).sum(axis=1)
                sparse = (changed >= 1) & (changed <= self.sparse_groups)
                close |= sparse
                sparse_step = bool(sparse[prev])
            near = int(np.count_nonzero(close))
            nearest = int(d2.argmin())
            d2_min = float(d2[nearest])
            chain = self._bisection_step(d2_min, float(d2[prev]))
            chain |= self._sparse_step(sparse_step)
            chain |= self._star_step(d2, nearest, self.star_radius * self._norm_mean)
        pos = self._filled % h
        if code is not None:
            codes[pos] = code
        ring[pos] = s
        all_hashes[pos] = digest
        self._filled += 1
        self._max_near = max(self._max_near, near)
        if near >= self.min_neighbours or chain:
            self._hit(event)

    def _bisection_step(self, d2_min: float, d2_prev: float) -> bool:
        """A binary search (HopSkipJump, Sign-OPT, GeoDA locating the boundary) halves
        its step: each query lands at half the previous step from the query before
        it. ``halvings`` such steps in a row count as a hit."""
        step = math.sqrt(d2_min)
        # the previous query is (one of) the nearest: bisection's midpoint is equally far
        # from both ends of its interval, and one end is always the previous query
        recent = d2_prev <= 1.21 * step * step
        halved = recent and self._step > 0 and 0.45 <= step / self._step <= 0.55
        self._step = step
        self._halvings = self._halvings + 1 if halved else 0
        self._max_halvings = max(self._max_halvings, self._halvings)
        return 0 < self.halvings <= self._halvings

    def _sparse_step(self, step: bool) -> bool:
        """Coordinate-wise search (SimBA, ZOO) changes one or two coordinates of its
        current point per query: each query differs from the one before it in 1 to
        ``sparse_groups`` feature groups. ``sparse_steps`` such queries in a row count
        as a hit (augmented copies change every feature, retries none)."""
        self._sparse = self._sparse + 1 if step else 0
        self._max_sparse = max(self._max_sparse, self._sparse)
        return 0 < self.sparse_steps <= self._sparse

    def _star_step(self, d2: np.ndarray, nearest: int, scale: float) -> bool:
        """A noise search around one input (GeoDA's and Foolbox's hunt for a first
        adversarial point: the input plus noise of growing size) sends queries that
        all sit around that input: for each, the centre is (within 1.5x) as near as
        its nearest earlier query, and within ``star_radius`` of a typical query.
        ``star_steps`` such queries in a row count as a hit. Their distances are not
        tested for growth: the 8-value sketches blur them too much. An augmentation
        burst is such a star of 2-4 copies, one more when the next input happens to
        be close; an input resent later starts over (see ``update``)."""
        f, h = self._filled, self.history
        a = self._anchor
        d2a = float(d2[a % h]) if a >= 0 and f - a <= h else math.inf
        if d2a <= 2.25 * float(d2[nearest]) and d2a <= scale * scale:
            self._star += 1
        else:  # the nearest earlier query is the centre of the next star
            self._anchor, self._star = f - 1 - (f - 1 - nearest) % h, 1
        self._max_star = max(self._max_star, self._star)
        return 0 < self.star_steps <= self._star

    def _hit(self, event: Event) -> None:
        ts = event.ts
        if ts - self._last_hit > self.window_s:
            self._window_hits = 0
        self._window_hits += 1
        self._hits += 1
        self._last_hit = ts
        if self._first_hit is None and self._window_hits >= self.min_hits:
            self._first_hit = self._queries
        if event.request_id is not None and len(self._request_ids) < 5:
            self._request_ids += (event.request_id,)

    def tick(self, now: float) -> None:
        if self._window_hits and now - self._last_hit > self.window_s:
            self._window_hits = 0
            self._request_ids = ()

    @property
    def detected(self) -> bool:
        return self._window_hits >= self.min_hits

    def evidence(self) -> dict[str, Any]:
        return {
            "queries": self._queries,
            "exact_repeats": self._repeats,
            "clustered_queries_in_window": self._window_hits,
            "clustered_queries_total": self._hits,
            "max_near_copies": self._max_near,
            "longest_bisection_run": self._max_halvings,
            "longest_sparse_run": self._max_sparse,
            "longest_star_run": self._max_star,
            "first_hit_query": self._first_hit,
            "min_neighbours": self.min_neighbours,
            "history": self.history,
            "radius_relative": self.radius,
            "mean_query_norm": round(self._norm_mean, 6),
            "window_s": self.window_s,
            "sample_request_ids": list(self._request_ids),
        }

    def summary(self, subject: dict[str, str], model: str) -> str:
        return (
            f"Client {subject.get('client_id')} sent {self._window_hits} queries to {model} "
            f"that each had {self.min_neighbours}+ distinct near copies among its last "
            f"{self.history}: small-step probing (black-box evasion or extraction); "
            f"review and rate-limit the key."
        )
