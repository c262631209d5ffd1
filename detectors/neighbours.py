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
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from detectors import queries
from detectors.base import Detector, SlotState, subject_name
from detectors.event import Event
from detectors.queries import row_sums, sketches

_MIXERS: dict[int, np.ndarray] = {}
_TOP_BYTE = 7 if sys.byteorder == "little" else 0


def group_codes(x: np.ndarray, groups: int) -> np.ndarray:
    """One byte per feature group (feature ``j`` in group ``j % groups``) for each
    query (row of ``x``), that changes when any value of the group changes: two
    queries that differ in one feature differ in exactly one code."""
    bits = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)
    pad = (-bits.shape[1]) % groups
    if pad:
        bits = np.concatenate([bits, np.zeros((bits.shape[0], pad), np.uint64)], axis=1)
    width = bits.shape[1]
    mixer = _MIXERS.get(width)
    if mixer is None:  # odd 64-bit multipliers, the same in every process
        rng = np.random.default_rng(width)
        odd = rng.integers(0, 2**63, width, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        mixer = _MIXERS[width] = np.asarray(odd, dtype=np.uint64)
    sums = (bits * mixer).reshape(bits.shape[0], -1, groups).sum(axis=1)
    # the top byte of each sum (its best-mixed bits)
    return np.ascontiguousarray(sums.view(np.uint8)[:, _TOP_BYTE::8])


def _layout(history: int, k: int, g: int) -> tuple[int, int]:
    """Offset of the sketches and total size of a client's ring buffer: ``history``
    uint32 input hashes, ``history x g`` group codes, then ``history x k`` float16
    sketches (2-byte aligned). With ``k <= dims`` the size determines (k, g)."""
    off = 4 * history + (history * g + 1) // 2 * 2
    return off, off + history * 2 * k


class _Client:
    """A client's ring as the batch pass sees it, event after event."""

    __slots__ = ("config", "filled", "hashes", "norm_mean", "owner", "queries", "repeats",
                 "ring", "size")

    def __init__(self, owner: QueryNeighbours | None, config: tuple[Any, ...], ring: list[int],
                 hashes: list[int]) -> None:
        self.owner = owner  # the detector the steps are for (None: not yet created) ...
        self.config = config  # ... and the parameters they were computed with
        self.size = len(owner._buf) if owner is not None and owner._buf is not None else -1
        self.filled = owner._filled if owner is not None else 0
        self.queries = owner._queries if owner is not None else 0
        self.repeats = owner._repeats if owner is not None else 0
        self.norm_mean = owner._norm_mean if owner is not None else 0.0
        self.ring = ring  # row in the layout's pool of each ring position
        self.hashes = hashes


class _Step:
    """What one event does to its client's ring, computed with the batch: the
    client's counts before it (to check the step still applies), and the
    comparisons with the client's recent queries."""

    __slots__ = ("client", "code", "d2", "digest", "event", "filled", "n", "near",
                 "nearest", "norm_mean", "queries", "repeat", "size", "sketch", "sparse_prev")

    def __init__(self, event: Event, client: _Client, size: int, digest: int) -> None:
        self.event = event
        self.client = client
        self.queries = client.queries
        self.filled = client.filled
        self.size = size  # the ring buffer size this query's layout needs
        self.digest = digest
        self.repeat = False
        self.n = 0  # distinct queries it is compared with
        self.norm_mean = 0.0
        self.near = 0
        self.nearest = 0
        self.sparse_prev = False
        self.d2: list[float] = []
        self.code: memoryview | None = None
        self.sketch: memoryview | None = None


class _Pool:
    """The queries of one ring layout in a batch: the rings of the batch's clients
    as it starts, then the batch's own queries, as rows of one array, so that every
    comparison of the batch is one gather and a few array operations."""

    def __init__(self, history: int, k: int, g: int) -> None:
        self.h, self.k, self.g = history, k, g
        self.offsets: dict[int, int] = {}  # query group -> its first row here
        self.sketches: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []
        self.rows = 0
        self.starts: list[_Client] = []
        self.start_bufs: list[bytes] = []
        self.compared: list[tuple[_Step, int, int, list[int]]] = []

    def add_group(self, j: int, sketches: np.ndarray, codes: np.ndarray | None) -> None:
        self.offsets[j] = self.rows
        self.rows += sketches.shape[0]
        self.sketches.append(sketches)
        if codes is not None:
            self.codes.append(codes)

    def add_start(self, owner: QueryNeighbours, config: tuple[Any, ...]) -> _Client:
        base = len(self.starts) * self.h
        client = _Client(owner, config, list(range(base, base + self.h)), [])
        self.starts.append(client)
        self.start_bufs.append(bytes(owner._buf))  # type: ignore[arg-type]
        return client

    def gather_starts(self) -> None:
        """Read the starting rings: hashes for the retry check, sketches and codes
        as the first rows of the pool."""
        h, k, g = self.h, self.k, self.g
        size = _layout(h, k, g)[1]
        raw = np.frombuffer(b"".join(self.start_bufs), dtype=np.uint8).reshape(-1, size)
        for client, hashes in zip(self.starts, raw[:, :4 * h].copy().view(np.uint32).tolist(),
                                  strict=True):
            client.hashes = hashes
        self.start_sketches = raw[:, size - 2 * h * k:].copy().view(np.float16).reshape(-1, k)
        self.start_codes = raw[:, 4 * h:4 * h + h * g].reshape(-1, max(g, 1))
        self.first_row = len(self.starts) * h

    def row_of(self, j: int, row: int) -> int:
        return self.offsets[j] + row

    def pooled(self, at: int) -> int:
        return self.first_row + at

    def compare(self, step: _Step, at: int, prev: int, ring: list[int]) -> None:
        self.compared.append((step, at, prev, ring[:]))

    def finish(self, radius: float, sparse_groups: int) -> None:
        """The comparisons of every query of this layout with its client's ring."""
        h, k, g = self.h, self.k, self.g
        queries = (self.sketches[0] if len(self.sketches) == 1
                   else np.concatenate(self.sketches))
        stored = queries.astype(np.float16)
        raw = stored.data.cast("B")
        codes = None
        if g:
            codes = self.codes[0] if len(self.codes) == 1 else np.concatenate(self.codes)
            raw_codes = codes.data.cast("B")
        for step, at, _, _ in self.compared:
            step.sketch = raw[at * 2 * k:(at + 1) * 2 * k]
            if codes is not None:
                step.code = raw_codes[at * g:(at + 1) * g]
        compared = [c for c in self.compared if c[0].n]
        if not compared:
            return
        pool = np.concatenate([self.start_sketches, stored]).astype(np.float64)
        query_rows = np.fromiter((c[1] for c in compared), dtype=np.intp, count=len(compared))
        n = np.fromiter((c[0].n for c in compared), dtype=np.intp, count=len(compared))
        valid = np.arange(h) < n[:, None]
        # positions beyond n may still name rows of another layout: point them anywhere
        ring = np.where(valid, np.array([c[3] for c in compared], dtype=np.intp), 0)
        limit = radius * np.maximum(
            np.fromiter((c[0].norm_mean for c in compared), dtype=np.float64,
                        count=len(compared)), 1e-12)
        diff = pool[ring] - queries[query_rows][:, None, :]
        d2 = np.where(valid, row_sums(diff * diff), np.inf)
        close = d2 <= (limit * limit)[:, None]
        rows = np.arange(len(compared))
        prev = np.fromiter((c[2] for c in compared), dtype=np.intp, count=len(compared))
        sparse_prev = [False] * len(compared)
        if codes is not None:
            stored_codes = np.concatenate([self.start_codes, codes])
            changed = (stored_codes[ring] != codes[query_rows][:, None, :]).sum(axis=2)
            sparse = (changed >= 1) & (changed <= sparse_groups)
            close |= sparse
            sparse_prev = sparse[rows, prev].tolist()
        near = np.count_nonzero(close & valid, axis=1).tolist()
        nearest = d2.argmin(axis=1).tolist()
        for (step, *_), row, nr, ns, sp in zip(compared, d2.tolist(), near, nearest,
                                               sparse_prev, strict=True):
            step.d2, step.near, step.nearest, step.sparse_prev = row, nr, ns, sp


# the batch being processed, and per keying that prepared it (by client, by source
# address) a map id(event) -> _Step
_STEPS: list[Any] = [None, []]
_ALONE = object()  # the key of an event whose step is computed alone


class QueryNeighbours(SlotState, Detector):
    """Fires when a client's queries form a tight cluster of distinct inputs.

    Parameters: ``history`` distinct recent queries are kept (as ``dims``-value
    float16 sketches, ``groups`` one-byte group codes and a 4-byte hash of the raw
    input: 28 bytes each by default);
    ``radius`` is the near-copy distance relative to the client's mean query
    norm, and a query that differs from a recent one in at most ``sparse_groups`` of
    ``groups`` feature groups (inputs with at least 4 features) is a near copy too;
    a query with at least ``min_neighbours`` near copies in the history is a
    hit, and so is the ``halvings``-th bisection step or the ``sparse_steps``-th
    sparse step in a row, or the ``star_steps``-th query in a row around one
    centre; ``min_hits`` hits within ``window_s`` fire; no hit for ``window_s``
    clears.

    The pipeline announces each batch (``prepare``): the sketches, group codes and
    ring comparisons of all its events are then computed in a few numpy passes,
    and ``update`` only applies each event's step. Without ``prepare``, ``update``
    computes the step of its one event with the same arithmetic (the same bits).

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

    def _config(self) -> tuple[Any, ...]:
        return (self.history, self.dims, self.groups, self.radius, self.sparse_groups)

    # -- the batch pass ---------------------------------------------------------------
    def prepare(self, events: Sequence[Event], keys: Sequence[Hashable],
                current: Mapping[Hashable, Detector | None]) -> None:
        """Compare every query of the batch with its key's recent queries in a few
        numpy passes (``keys[i]`` is the key of ``events[i]``, None when no clone
        takes it; ``current`` its detector as the batch starts, None for a key not
        seen yet); ``update`` then takes each event's step from here."""
        steps = self._steps(events, keys, current, queries.prepare(events))
        if _STEPS[0] is not events:
            _STEPS[0], _STEPS[1] = events, []
        _STEPS[1].append(steps)

    def _steps(self, events: Sequence[Event], keys: Sequence[Hashable],
               current: Mapping[Hashable, Detector | None],
               batch: queries.QueryBatch) -> dict[int, _Step]:
        h = self.history
        # per query length: sketches, norms, group codes and the ring layout
        per_group = []
        for x in batch.groups:
            d = x.shape[1]
            k = min(d, self.dims)
            g = self.groups if d >= max(4, self.groups) else 0
            sk = sketches(x, self.dims)
            per_group.append((_layout(h, k, g)[1], k, g, sk, np.sqrt(row_sums(x * x)).tolist(),
                              group_codes(x, g) if g else None))
        # the layouts (ring sizes) of the batch, with their rows in one pool each
        pools: dict[int, _Pool] = {}
        for j, (size, k, g, sk, _, codes) in enumerate(per_group):
            pool = pools.get(size)
            if pool is None:
                pool = pools[size] = _Pool(h, k, g)
            pool.add_group(j, sk, codes)
        # clients as the batch starts: their ring buffers, gathered per layout
        clients: dict[Hashable, _Client] = {}
        config = self._config()
        for key in dict.fromkeys(keys):
            if key is None:
                continue
            det = current.get(key)
            owner = det if isinstance(det, QueryNeighbours) else None
            pool = pools.get(len(owner._buf)) if owner is not None and owner._buf else None
            if owner is None or pool is None:
                clients[key] = _Client(owner, config, [0] * h, [0] * h)
            else:
                clients[key] = pool.add_start(owner, config)
        for pool in pools.values():
            pool.gather_starts()
        # the events in order, one client's ring at a time (retries leave it as it is)
        steps: dict[int, _Step] = {}
        for i, event in enumerate(events):
            where = batch.where[i]
            if where is None or keys[i] is None:
                continue
            j, row, digest = where
            size, norms = per_group[j][0], per_group[j][4]
            client = clients[keys[i]]
            step = _Step(event, client, size, digest)
            steps[id(event)] = step
            client.queries += 1
            if client.size != size:
                client.size, client.filled = size, 0
            n = min(client.filled, h)
            if n and digest in client.hashes[:n]:
                step.repeat = True
                client.repeats += 1
                continue
            client.norm_mean += ((norms[row] - client.norm_mean)
                                 / min(client.queries - client.repeats, 64))
            step.norm_mean, step.n = client.norm_mean, n
            pool = pools[size]
            at = pool.row_of(j, row)
            pool.compare(step, at, (client.filled - 1) % h, client.ring)
            pos = client.filled % h
            client.ring[pos] = pool.pooled(at)
            client.hashes[pos] = digest
            client.filled += 1
        for pool in pools.values():
            pool.finish(self.radius, self.sparse_groups)
        return steps

    # -- one event ----------------------------------------------------------------------
    def _step_of(self, event: Event) -> _Step | None:
        """This event's step from the prepared batch, if it still applies to this
        detector; else computed for the event alone (the same arithmetic)."""
        for prepared in _STEPS[1]:
            step = prepared.get(id(event))
            if step is not None and step.event is event and step.queries == self._queries \
                    and step.filled == self._filled:
                owner = step.client.owner
                if owner is self:
                    return step
                if owner is None and step.client.config == self._config():
                    # a new key's first update claims its steps; the keyings update each
                    # event in the order they prepared, so an earlier keying's new key
                    # has claimed its own steps before a later keying looks
                    step.client.owner = self
                    return step
        steps = self._steps([event], [_ALONE], {_ALONE: self}, queries.QueryBatch([event]))
        return steps.get(id(event))

    def update(self, event: Event) -> None:
        self.tick(event.ts)
        step = self._step_of(event)
        if step is None:  # nothing numeric
            return
        self._queries += 1
        h = self.history
        if self._buf is None or len(self._buf) != step.size:
            self._buf = bytearray(step.size)
            self._filled = 0
        if step.repeat:
            self._repeats += 1  # a retry: neither evidence nor history
            self._star = 0  # ... and a resent input starts any star over
            return
        self._norm_mean = step.norm_mean
        chain = False
        if step.n:
            d2 = step.d2
            prev = (self._filled - 1) % h
            chain = self._bisection_step(d2[step.nearest], d2[prev])
            chain |= self._sparse_step(step.sparse_prev)
            chain |= self._star_step(d2, step.nearest, self.star_radius * self._norm_mean)
        self._write(step)
        self._max_near = max(self._max_near, step.near)
        if step.near >= self.min_neighbours or chain:
            self._hit(event)

    def _write(self, step: _Step) -> None:
        """Store the query in the ring: its hash, group codes and sketch."""
        h, buf = self.history, self._buf
        pos = self._filled % h
        assert buf is not None and step.sketch is not None
        buf[4 * pos:4 * pos + 4] = step.digest.to_bytes(4, sys.byteorder)
        if step.code is not None:
            g = len(step.code)
            buf[4 * h + pos * g:4 * h + (pos + 1) * g] = step.code
        width = len(step.sketch)
        at = len(buf) - (h - pos) * width
        buf[at:at + width] = step.sketch
        self._filled += 1

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

    def _star_step(self, d2: Sequence[float], nearest: int, scale: float) -> bool:
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
        # the centre, if still in the ring (not overwritten, nor dropped by a new layout)
        d2a = float(d2[a % h]) if a >= 0 and 0 < f - a <= min(f, h) else math.inf
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

    @property
    def hits(self) -> int:
        """Queries that were hits so far (near-copy clusters and search steps)."""
        return self._hits

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
            f"{subject_name(subject)} sent {self._window_hits} queries to {model} "
            f"that each had {self.min_neighbours}+ distinct near copies among its last "
            f"{self.history}: small-step probing (black-box evasion or extraction); "
            f"review and rate-limit it."
        )
