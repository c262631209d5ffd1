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
- a near copy is close in L2 (dense small perturbations: HopSkipJump, Boundary,
  GeoDA, ZOO's finite differences); a copy that differs in one or two feature
  groups only counts as a step of a coordinate-wise walk (below), since a client
  that varies one field of otherwise fixed inputs makes such copies all the time;
- one query with a few near copies (augmentation, test-time augmentation) is
  not enough: a query counts as a *hit* only when at least ``min_neighbours``
  distinct near copies sit among the last ``history`` distinct queries, i.e. a
  cluster larger than any augmentation burst, and the client fires after
  ``min_hits`` hits within ``window_s``;
- three search patterns count as hits before any cluster forms: a binary search
  (``halvings`` steps in a row, each half the one before, from the previous
  query: HopSkipJump, Sign-OPT, GeoDA locating the boundary), a coordinate-wise
  walk (``sparse_steps`` queries in a row, each differing from the query before
  it in 1 to ``sparse_groups`` groups, and moving through the groups: SimBA
  changes one random pixel per query, so it is seen after 4 steps; a person
  editing one field after another looks the same after 4 edits, while a client
  whose one varying field changes at (nearly) every step of its recent queries,
  an amount or a reading, is not a walk), and a
  noise search around one input (``star_steps`` queries in a row whose nearest
  earlier query is, within 1.5x, that centre, within ``star_radius`` of a typical
  query: GeoDA's and Foolbox's hunt for a first adversarial point; an
  augmentation burst is such a star of 2-4 copies, and an input resent later
  starts over; only for inputs of at least ``max(4, groups)`` values: with two or
  three numbers per query, one of a client's first queries is the nearest of the
  next five by chance, for about one ordinary client in a thousand).

Near copies and noise searches look the same in the queries of a device whose
readings drift slowly (a sensor's sliding window, a thermostat, a health check that
fills in the hour). When the model's answers are logged, they therefore count only
where a search shows itself (``boundary_only``): in a burst (a distinct query within
``burst_s`` of the one before: a search loop sends its next query as soon as it has an
answer) or at the decision boundary (a near copy, the star's centre or a query of its
run answered otherwise, or this answer under ``low_confidence``). Bisection and
coordinate-wise steps always count.

Distances are relative: L2 distance divided by the client's running mean query
norm, so the radius means "within 2% of a typical query of this client" for
any feature scale that is roughly uniform across features (standardise very
unevenly scaled features in the producer, or send an ``embedding``).
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Hashable, Mapping, Sequence
from operator import attrgetter
from typing import Any, ClassVar

import numpy as np

from detectors import queries, query_walk
from detectors.base import Detector, SlotState, subject_name
from detectors.event import Event
from detectors.queries import row_sums, sketches
from detectors.reference import label as reference_label

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
    uint32 input hashes, ``history x g`` group codes, ``history`` answer codes, then
    ``history x k`` float16 sketches (2-byte aligned). With ``k <= dims`` the size
    determines (k, g)."""
    off = 4 * history + (history * (g + 1) + 1) // 2 * 2
    return off, off + history * 2 * k


# float16's largest value: sketches are clipped to it, not stored as infinities (an
# input with a value past about 2e5, a Unix time or an account number, made every query
# of its client infinitely far from the others: an attacker could hide by adding one)
_FLOAT16_MAX = float(np.finfo(np.float16).max)


_ANSWER_CODES: dict[str, int] = {}


def answer_code(event: Event) -> int:
    """A byte (1-255) naming the model's answer to ``event``: its predicted class, or
    the most probable one; 0 when unknown (a regression value, no answer logged).
    A whole number is a class id (JSON gives class 1 as 1.0: ``reference.label``).
    The same in every process (CRC-32, not Python's salted hash)."""
    label = event.prediction
    if label is not None and not isinstance(label, str):
        if not float(label).is_integer():  # a regression value, no class
            return 0
        label = reference_label(label)
    elif label is None:
        probs = event.probabilities
        if not probs:
            return 0
        if isinstance(probs, dict):
            label = max(probs, key=probs.__getitem__)
        else:
            label = str(max(range(len(probs)), key=probs.__getitem__))
    code = _ANSWER_CODES.get(label)
    if code is None:
        code = zlib.crc32(label.encode()) % 255 + 1
        if len(_ANSWER_CODES) < 100_000:
            _ANSWER_CODES[label] = code
    return code


class _Client:
    """A key of a walked batch: the detector its results are for (None: a key not
    seen yet, whose first update claims them) and the parameters they assume."""

    __slots__ = ("config", "owner")

    def __init__(self, owner: QueryNeighbours | None, config: tuple[Any, ...]) -> None:
        self.owner = owner
        self.config = config


class _Walk:
    """One keying's walk through a batch (``query_walk.walk``): per event its
    client, the client's state after it, and what ``update`` writes to the ring."""

    __slots__ = ("answers", "clients", "codes", "floats", "ints", "sizes", "sketches", "where",
                 "widths")

    def __init__(self, n: int) -> None:
        self.clients: list[_Client | None] = [None] * n
        self.answers = bytearray(n)  # per event: its answer code
        self.ints: list[list[int]] = []
        self.floats: list[list[float]] = []
        self.sizes: list[int] = []
        self.where: list[tuple[int, int, int] | None] = []  # queries.QueryBatch.where
        self.sketches: list[memoryview] = []  # per query group: its float16 sketches raw,
        self.widths: list[int] = []  # ... their bytes per query,
        self.codes: list[memoryview | None] = []  # ... and its group codes raw


# the batch being walked, id(event) -> its index there, and the walks of the keyings
# that prepared it (by client, by source address, ...)
_WALKS: list[Any] = [None, {}, []]
_ALONE = object()  # the key of an event walked alone
_STATE = attrgetter(*query_walk.INT_ATTRS)
_FLOATS = attrgetter(*query_walk.FLOAT_ATTRS)


class QueryNeighbours(SlotState, Detector):
    """Fires when a client's queries form a tight cluster of distinct inputs.

    Parameters: ``history`` distinct recent queries are kept (as ``dims``-value
    float16 sketches, ``groups`` one-byte group codes and a 4-byte hash of the raw
    input: 28 bytes each by default);
    ``radius`` is the near-copy distance relative to the client's mean query
    norm; a query with at least ``min_neighbours`` near copies in the history is a
    hit, and so is the ``halvings``-th bisection step or the ``sparse_steps``-th
    sparse step in a row (a query that differs from the one before in 1 to
    ``sparse_groups`` of ``groups`` feature groups, for inputs with at least
    ``max(4, groups)`` features; not when one group changed at nearly every recent
    step), or (same inputs) the ``star_steps``-th query in a row around one
    centre; with ``boundary_only``, near copies and stars only in a burst
    (``burst_s``) or at the decision boundary (``low_confidence``), when answers are
    logged; ``min_hits`` hits within ``window_s`` fire; no hit for ``window_s``
    clears.

    The pipeline announces each batch (``prepare``): the sketches and group codes of
    all its events are computed in a few numpy passes, and every event's comparisons
    and search patterns in one compiled walk through the batch
    (``detectors.query_walk``); ``update`` only applies each event's result. Without
    ``prepare``, ``update`` walks its one event alone (the same bits).

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

    # stored states are tuples in this order: slots added later go at the end
    __slots__ = ("_anchor", "_buf", "_filled", "_first_hit", "_halvings", "_hits", "_last_hit",  # noqa: RUF023
                 "_max_halvings", "_max_near", "_max_sparse", "_max_star", "_norm_mean",
                 "_queries", "_repeats", "_request_ids", "_sparse", "_star", "_step",
                 "_window_hits", "dims", "groups", "halvings", "history", "min_hits",
                 "min_neighbours", "radius", "sparse_groups", "sparse_steps", "star_radius",
                 "star_steps", "window_s",
                 # added after release: see added_slots
                 "_star_mixed", "_window_patterns", "_last_query_ts", "boundary_only",
                 "low_confidence", "burst_s")
    added_slots: ClassVar[dict[str, Any]] = {
        "_star_mixed": 0, "_window_patterns": 0, "_last_query_ts": float("-inf"),
        "boundary_only": True, "low_confidence": 0.6, "burst_s": 3.0}

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
        boundary_only: bool = True,
        low_confidence: float = 0.6,
        burst_s: float = 3.0,
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
        self.boundary_only = boundary_only
        self.low_confidence = low_confidence
        self.burst_s = burst_s
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
        self._star_mixed = 0  # whether a query of the current star got another answer
        self._window_patterns = 0  # query_walk.HIT_* bits of the hits in the current window
        self._last_query_ts = float("-inf")  # of the latest distinct query
        self._request_ids: tuple[str, ...] = ()

    def _config(self) -> tuple[Any, ...]:
        """The parameters a walk's results depend on."""
        return (self.history, self.dims, self.groups, self.radius, self.sparse_groups,
                self.min_neighbours, self.halvings, self.sparse_steps, self.star_steps,
                self.star_radius, self.boundary_only, self.low_confidence, self.burst_s)

    # -- the batch pass ---------------------------------------------------------------
    def prepare(self, events: Sequence[Event], keys: Sequence[Hashable],
                current: Mapping[Hashable, Detector | None]) -> None:
        """Walk every query of the batch through its key's recent queries
        (``keys[i]`` is the key of ``events[i]``, None when no clone takes it;
        ``current`` its detector as the batch starts, None for a key not seen yet);
        ``update`` then applies each event's result."""
        batch = queries.prepare(events)
        walked = self._walk(events, keys, current, batch)
        if _WALKS[0] is not events:
            _WALKS[0], _WALKS[1], _WALKS[2] = events, queries.batch_index(), []
        _WALKS[2].append(walked)

    def _walk(self, events: Sequence[Event], keys: Sequence[Hashable],
              current: Mapping[Hashable, Detector | None],
              batch: queries.QueryBatch) -> _Walk:
        h, dims, groups = self.history, self.dims, self.groups
        n = len(events)
        out = _Walk(n)
        out.where = batch.where
        # per query length: its layout (k sketch values, g group codes, ring size)
        layouts = []
        for x in batch.groups:
            d = x.shape[1]
            k = min(d, dims)
            g = groups if d >= max(4, groups) else 0
            layouts.append((k, g, _layout(h, k, g)[1]))
        width = max([k for k, _, _ in layouts], default=1)
        code_width = max([g for _, g, _ in layouts], default=0)
        # the clients, numbered in the order of their first event
        config = self._config()
        index: dict[Hashable, int] = {}
        clients: list[_Client] = []
        client = np.full(n, -1, dtype=np.int64)
        rows: list[list[int]] = [[] for _ in layouts]  # per query group: its events
        answers = out.answers
        unsure = np.zeros(n, dtype=np.bool_)
        low = self.low_confidence
        for i, key in enumerate(keys):
            where = batch.where[i]
            if where is None or key is None:
                continue
            event = events[i]
            answers[i] = a = answer_code(event)
            unsure[i] = a == 0 or (event.confidence is not None and event.confidence < low)
            c = index.get(key)
            if c is None:
                c = index[key] = len(clients)
                det = current.get(key)
                clients.append(_Client(det if isinstance(det, QueryNeighbours) else None, config))
            client[i] = c
            out.clients[i] = clients[c]
            rows[where[0]].append(i)
        # each event's query, as computed and as the ring stores it, and its group codes
        digest = np.zeros(n, dtype=np.int64)
        norm = np.zeros(n)
        query = np.zeros((n, width))
        stored = np.zeros((n, width))
        code = np.zeros((n, max(code_width, 1)), dtype=np.uint8)
        has_code = np.zeros(n, dtype=np.bool_)
        sizes = np.zeros(n, dtype=np.int64)
        for x, (k, g, size), idx in zip(batch.groups, layouts, rows, strict=True):
            sk = np.clip(sketches(x, dims), -_FLOAT16_MAX, _FLOAT16_MAX)
            sk16 = sk.astype(np.float16)
            out.sketches.append(sk16.data.cast("B"))
            out.widths.append(2 * k)
            codes = group_codes(x, g) if g else None
            out.codes.append(codes.data.cast("B") if codes is not None else None)
            if not idx:
                continue
            at = [batch.where[i][1] for i in idx]  # type: ignore[index]
            query[idx, :k] = sk[at]
            stored[idx, :k] = sk16[at]
            norm[idx] = np.sqrt(row_sums(x[at] * x[at]))
            digest[idx] = [batch.where[i][2] for i in idx]  # type: ignore[index]
            sizes[idx] = size
            if codes is not None:
                code[idx, :g] = codes[at]
                has_code[idx] = True
        out.sizes = sizes.tolist()
        # the clients as the batch starts: their counters and rings
        m = len(clients)
        ints = np.zeros((m, query_walk.N_INTS), dtype=np.int64)
        ints[:, query_walk.ANCHOR] = -1
        ints[:, query_walk.SIZE] = -1
        floats = np.zeros((m, query_walk.N_FLOATS))
        floats[:, 2] = -np.inf
        ring = np.zeros((m, h, width))
        ring_codes = np.zeros((m, h, max(code_width, 1)), dtype=np.uint8)
        hashes = np.zeros((m, h), dtype=np.int64)
        ring_answers = np.zeros((m, h), dtype=np.uint8)
        known = [(c, cl.owner) for c, cl in enumerate(clients) if cl.owner is not None]
        if known:
            ids = [c for c, _ in known]
            ints[ids, :query_walk.N_ATTRS] = [_STATE(o) for _, o in known]
            floats[ids] = [_FLOATS(o) for _, o in known]
            self._gather_rings(known, {size: (k, g) for k, g, size in layouts},
                               (ints, ring, ring_codes, hashes, ring_answers))
        params_f = np.array([self.radius, self.star_radius, self.burst_s], dtype=np.float64)
        params_i = np.array([self.sparse_groups, self.min_neighbours, self.halvings,
                             self.sparse_steps, self.star_steps, int(self.boundary_only)],
                            dtype=np.int64)
        out_ints = np.zeros((n, query_walk.N_OUT_INTS), dtype=np.int64)
        out_floats = np.zeros((n, query_walk.N_FLOATS))
        times = np.array([e.ts for e in events], dtype=np.float64)
        query_walk.walk((client, times, sizes, digest, norm, query, stored, code, has_code,
                         np.frombuffer(answers, dtype=np.uint8), unsure),
                        (ints, floats, ring, ring_codes, hashes, ring_answers),
                        (params_f, params_i),
                        (out_ints, out_floats))
        out.ints = out_ints.tolist()
        out.floats = out_floats.tolist()
        return out

    def _gather_rings(self, known: list[tuple[int, QueryNeighbours]],
                      layouts: dict[int, tuple[int, int]], arrays: tuple[np.ndarray, ...]) -> None:
        """Read the rings of the batch's known clients (those of a layout the batch
        uses: any other starts over at its first event) into the walk's arrays
        (ints, ring, ring codes, hashes, answers)."""
        h = self.history
        ints, ring, ring_codes, hashes, answers = arrays
        by_size: dict[int, list[tuple[int, bytearray]]] = {}
        for c, owner in known:
            buf = owner._buf
            if buf is not None and len(buf) in layouts:
                by_size.setdefault(len(buf), []).append((c, buf))
        for size, found in by_size.items():
            k, g = layouts[size]
            ids = [c for c, _ in found]
            raw = np.frombuffer(b"".join([buf for _, buf in found]),
                                dtype=np.uint8).reshape(-1, size)
            ints[ids, query_walk.SIZE] = size
            hashes[ids] = raw[:, :4 * h].copy().view(np.uint32)
            if g:
                ring_codes[ids, :, :g] = raw[:, 4 * h:4 * h + h * g].reshape(-1, h, g)
            answers[ids] = raw[:, 4 * h + h * g:4 * h + h * (g + 1)]
            ring[ids, :, :k] = raw[:, size - 2 * h * k:].copy().view(np.float16).reshape(-1, h, k)

    # -- one event ----------------------------------------------------------------------
    def _walked(self, event: Event) -> tuple[_Walk, int] | None:
        """This event's result from the walked batch, if it still applies to this
        detector; else the event walked alone (the same arithmetic). None: the event
        has no numeric query."""
        if _WALKS[0] is not None:
            i = _WALKS[1].get(id(event))
            if i is not None and _WALKS[0][i] is event:
                for walked in _WALKS[2]:
                    if walked.where[i] is None:
                        return None
                    client = walked.clients[i]
                    state = walked.ints[i]
                    if client is None or state[query_walk.BEFORE_QUERIES] != self._queries \
                            or state[query_walk.BEFORE_FILLED] != self._filled:
                        continue
                    if client.owner is self:
                        return walked, i
                    if client.owner is None and client.config == self._config():
                        # a new key's first update claims its results; the keyings update
                        # each event in the order they prepared, so an earlier keying's new
                        # key has claimed its own before a later keying looks
                        client.owner = self
                        return walked, i
        alone = self._walk([event], [_ALONE], {_ALONE: self}, queries.QueryBatch([event]))
        return None if alone.where[0] is None else (alone, 0)

    def update(self, event: Event) -> None:
        self.tick(event.ts)
        walked = self._walked(event)
        if walked is None:  # nothing numeric
            return
        out, i = walked
        state = out.ints[i]
        # query_walk.INT_ATTRS, in its order (spelt out: one tuple store, on the hot path)
        (self._filled, self._queries, self._repeats, self._halvings, self._max_halvings,
         self._sparse, self._max_sparse, self._anchor, self._star, self._max_star,
         self._max_near, self._star_mixed) = state[:query_walk.N_ATTRS]
        self._norm_mean, self._step, self._last_query_ts = out.floats[i]
        size = out.sizes[i]
        if self._buf is None or len(self._buf) != size:
            self._buf = bytearray(size)
        pos = state[query_walk.POS]
        if pos >= 0:
            self._write(out, i, pos)
        if state[query_walk.HIT]:
            self._hit(event, state[query_walk.HIT])

    def _write(self, out: _Walk, i: int, pos: int) -> None:
        """Store event ``i``'s query at ring position ``pos``: its hash, group codes
        and float16 sketch."""
        h, buf = self.history, self._buf
        assert buf is not None
        j, row, digest = out.where[i]  # type: ignore[misc]
        buf[4 * pos:4 * pos + 4] = digest.to_bytes(4, sys.byteorder)
        codes = out.codes[j]
        g = 0
        if codes is not None:
            g = self.groups
            buf[4 * h + pos * g:4 * h + (pos + 1) * g] = codes[row * g:(row + 1) * g]
        buf[4 * h + h * g + pos] = out.answers[i]
        width = out.widths[j]
        at = len(buf) - (h - pos) * width
        buf[at:at + width] = out.sketches[j][row * width:(row + 1) * width]

    def _hit(self, event: Event, patterns: int) -> None:
        ts = event.ts
        if ts - self._last_hit > self.window_s:
            self._window_hits = 0
            self._window_patterns = 0
        self._window_hits += 1
        self._window_patterns |= patterns
        self._hits += 1
        self._last_hit = ts
        if self._first_hit is None and self._window_hits >= self.min_hits:
            self._first_hit = self._queries
        if event.request_id is not None and len(self._request_ids) < 5:
            self._request_ids += (event.request_id,)

    def tick(self, now: float) -> None:
        if self._window_hits and now - self._last_hit > self.window_s:
            self._window_hits = 0
            self._window_patterns = 0
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
        if not self.detected:  # the incident's resolution
            return (f"{subject_name(subject)} sent no query to {model} that looked like the "
                    f"step of a black-box search for {self.window_s:g}s ({self._hits} such "
                    f"{_queries(self._hits)} in all).")
        return (
            f"{subject_name(subject)} sent {self._window_hits} {_queries(self._window_hits)} "
            f"to {model} that looked like the steps of a black-box search: "
            f"{'; '.join(self._patterns())}. Small-step probing (black-box evasion or "
            f"extraction): review and rate-limit it."
        )

    def _patterns(self) -> list[str]:
        """The search patterns of this window's hits, in words (with the longest runs
        the client has shown)."""
        seen = self._window_patterns
        at_boundary = ", in a burst or at the decision boundary" if self.boundary_only else ""
        found = []
        if seen & query_walk.HIT_NEAR:
            found.append(f"queries with {self.min_neighbours}+ distinct near copies among "
                         f"its last {self.history}{at_boundary}")
        if seen & query_walk.HIT_BISECTION:
            found.append(f"{self._max_halvings} binary-search steps in a row, each half the "
                         "one before")
        if seen & query_walk.HIT_SPARSE:
            found.append(f"{self._max_sparse} queries in a row each changing 1 to "
                         f"{self.sparse_groups} feature groups of the one before (a "
                         "coordinate-wise search)")
        if seen & query_walk.HIT_STAR:
            found.append(f"{self._max_star} queries in a row around one earlier input "
                         f"(a noise search{at_boundary})")
        return found or ["queries next to its recent ones"]


def _queries(n: int) -> str:
    return "query" if n == 1 else "queries"


def compile_walk() -> None:
    """Compile the query walk now rather than when the first batch arrives (about
    0.7 s of numba's time): one event walked alone, as ``update`` walks an event
    outside a batch, so the arrays have the types every walk passes."""
    event = Event(ts=0.0, model="", model_version="",
                  features={f"x{i}": float(i) for i in range(8)})
    QueryNeighbours()._walk([event], [_ALONE], {}, queries.QueryBatch([event]))
