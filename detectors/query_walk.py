"""The per-event walk of ``QueryNeighbours`` through a batch, compiled with numba.

Every event of the batch, in order, is compared with the recent distinct queries
of its client (its ring, which the batch's earlier events of that client extend)
and moves that client's search-pattern counters; see ``detectors.neighbours`` for
what the comparisons and patterns mean. The arithmetic is that of a single event
computed alone (distances summed term by term in index order, as
``detectors.queries.row_sums``), so any cut of a stream into batches gives the same
bits. The detector objects keep their state; the caller copies the clients' state
into the arrays below and each event's result back (``QueryNeighbours.update``).
"""

from __future__ import annotations

import math

import numba
import numpy as np

# Per-client integer state, the columns of ``ints``; the first ``N_ATTRS`` are the
# detector's attributes of the same names, in this order (``INT_ATTRS``).
(FILLED, QUERIES, REPEATS, HALVINGS, MAX_HALVINGS, SPARSE, MAX_SPARSE, ANCHOR, STAR,
 MAX_STAR, MAX_NEAR, STAR_MIXED, SIZE) = range(13)
INT_ATTRS = ("_filled", "_queries", "_repeats", "_halvings", "_max_halvings", "_sparse",
             "_max_sparse", "_anchor", "_star", "_max_star", "_max_near", "_star_mixed")
N_ATTRS = len(INT_ATTRS)
N_INTS = 13
# Per-client float state, the columns of ``floats``.
FLOAT_ATTRS = ("_norm_mean", "_step", "_last_query_ts")
N_FLOATS = len(FLOAT_ATTRS)
# What each event adds to its client's state after it, in ``out_ints``: the ring
# position it was written to (-1: a retry, not written), its near copies, whether
# it is a hit (the patterns that made it one, HIT_* bits; 0: none), and the client's
# query and ring counts before it (to check, when the event is applied, that the client
# is still where the walk found it).
POS, NEAR, HIT, BEFORE_QUERIES, BEFORE_FILLED = range(N_INTS, N_INTS + 5)
N_OUT_INTS = N_INTS + 5
HIT_NEAR, HIT_BISECTION, HIT_SPARSE, HIT_STAR = 1, 2, 4, 8


@numba.njit(nogil=True)
def _one_group_throughout(ring_codes: np.ndarray, code: np.ndarray, f: int, steps: int,
                          changes: np.ndarray) -> bool:  # pragma: no cover - compiled
    """Whether one feature group changed at (nearly) every one of the last ``steps``
    steps: from the query before (ring entry ``f - 1``) to this one (``code``), and
    between the ring entries before that. Past the first four steps, one in two of
    the further steps may miss it: a group's code is one byte, so now and then a change
    goes unseen (about 1% of the steps of one varying field, in bursts), while a
    coordinate-wise search changes the same group at most three steps in a row.
    ``changes``: scratch space, one count per group."""
    h, g = ring_codes.shape
    changes[:] = 0
    for k in range(steps):
        newer = code if k == 0 else ring_codes[(f - k) % h]
        older = ring_codes[(f - k - 1) % h]
        for t in range(g):
            if newer[t] != older[t]:
                changes[t] += 1
    return changes.max() >= steps - max(0, (steps - 4) // 2)


@numba.njit(nogil=True)
def walk(events: tuple[np.ndarray, ...], clients: tuple[np.ndarray, ...],
         params: tuple[np.ndarray, np.ndarray],
         out: tuple[np.ndarray, np.ndarray]) -> None:  # pragma: no cover - compiled
    """Walk the events ``i`` with ``client[i] >= 0`` in order.

    ``events`` = (client, ts, size, digest, norm, query, stored, code, has_code, answer,
    unsure): per event, its client, its time, its ring layout's ``size``, input ``digest``,
    query ``norm``, the ``query`` sketch (float64) and the same as the ring
    ``stored`` it (float16 values), its group ``code``s (when ``has_code``), padded
    with zeros to the widest layout, the code of the model's ``answer`` (0: unknown)
    and whether that answer is ``unsure`` (low confidence, or unknown).
    ``clients`` = (ints, floats, ring, codes, hashes, answers): per client
    (``client[i]`` indexes them; updated in place) its state as above, its ``ring``
    of stored sketches, their ``codes``, input ``hashes`` and ``answers``.
    ``params`` = (radius, star_radius, burst_s), (sparse_groups, min_neighbours,
    halvings, sparse_steps, star_steps, boundary_only). ``out`` = (ints, floats): each
    event's client state after it.

    With ``boundary_only``, a cluster of near copies or a star is a hit only in a
    burst (this query within ``burst_s`` of the client's distinct query before it) or
    at the decision boundary (a near copy, the star's centre or a query of its run
    got another answer than this query, or this answer is unsure). A query-based
    search is a loop that sends its next query as soon as it has an answer, and it
    needs the boundary; a device whose readings drift slowly, sent on its schedule
    and answered the same each time, is neither."""
    client, ts, size, digest, norm, query, stored, code, has_code, answer, unsure = events
    ints, floats, ring, codes, hashes, answers = clients
    params_f, params_i = params
    out_ints, out_floats = out
    h = ring.shape[1]
    dims = ring.shape[2]
    g = codes.shape[2]
    radius, star_radius, burst_s = params_f[0], params_f[1], params_f[2]
    sparse_groups, min_neighbours, halvings = params_i[0], params_i[1], params_i[2]
    sparse_steps, star_steps = params_i[3], params_i[4]
    boundary_only = params_i[5] != 0
    d2 = np.empty(h)
    group_changes = np.empty(g, dtype=np.int64)  # _one_group_throughout's counts
    for i in range(client.shape[0]):
        c = client[i]
        if c < 0:
            continue
        st = ints[c]
        out_ints[i, BEFORE_QUERIES] = st[QUERIES]
        out_ints[i, BEFORE_FILLED] = st[FILLED]
        st[QUERIES] += 1
        if st[SIZE] != size[i]:  # another ring layout: the ring starts over
            st[SIZE] = size[i]
            st[FILLED] = 0
        f = st[FILLED]
        n = min(f, h)
        repeat = False
        for j in range(n):
            if hashes[c, j] == digest[i]:
                repeat = True
                break
        near = 0
        other_answer = False  # a near copy answered otherwise
        hit = 0
        pos = -1
        if repeat:  # a retry: neither evidence nor history, and a resent input ends a star
            st[REPEATS] += 1
            st[STAR] = 0
        else:
            floats[c, 0] += (norm[i] - floats[c, 0]) / min(st[QUERIES] - st[REPEATS], 64)
            norm_mean = floats[c, 0]
            # a query-based search or not: in a burst, or at the decision boundary
            searching = not boundary_only or unsure[i] or ts[i] - floats[c, 2] <= burst_s
            floats[c, 2] = ts[i]
            if n:
                limit = radius * max(norm_mean, 1e-12)
                limit2 = limit * limit
                prev = (f - 1) % h
                sparse_prev = False
                for j in range(h):
                    if j >= n:
                        d2[j] = math.inf
                        continue
                    total = 0.0
                    for t in range(dims):
                        diff = ring[c, j, t] - query[i, t]
                        total += diff * diff
                    d2[j] = total
                    if total <= limit2:
                        near += 1
                        if answers[c, j] != answer[i]:
                            other_answer = True
                if has_code[i]:  # a sparse step: the query before, but for a group or two
                    changed = 0
                    for t in range(g):
                        if codes[c, prev, t] != code[i, t]:
                            changed += 1
                    sparse_prev = 1 <= changed <= sparse_groups
                nearest = 0  # the first smallest, as numpy's argmin (a NaN first of all)
                best = math.inf
                for j in range(h):
                    if d2[j] != d2[j]:
                        nearest = j
                        break
                    if d2[j] < best:
                        best = d2[j]
                        nearest = j
                # bisection: each step half the one before, from the previous query
                step = math.sqrt(d2[nearest])
                recent = d2[prev] <= 1.21 * step * step
                last = floats[c, 1]
                halved = recent and last > 0 and 0.45 <= step / last <= 0.55
                floats[c, 1] = step
                st[HALVINGS] = st[HALVINGS] + 1 if halved else 0
                st[MAX_HALVINGS] = max(st[MAX_HALVINGS], st[HALVINGS])
                if 0 < halvings <= st[HALVINGS]:
                    hit |= HIT_BISECTION
                # coordinate-wise: each query a sparse copy of the one before
                st[SPARSE] = st[SPARSE] + 1 if sparse_prev else 0
                st[MAX_SPARSE] = max(st[MAX_SPARSE], st[SPARSE])
                # ... that moves through the groups: one group changed at every step (of
                # the run and the queries before it in the ring) is a client varying
                # one field (an amount, a reading), not a search
                if 0 < sparse_steps <= st[SPARSE] and not _one_group_throughout(
                        codes[c], code[i], f, min(h - 1, f), group_changes):
                    hit |= HIT_SPARSE
                # a star: each query near one centre (if that is still in the ring), in
                # inputs wide enough for group codes: in a few dimensions ordinary
                # queries crowd, and one of a client's first is the nearest of the
                # next five by chance (about one client in a thousand)
                if has_code[i]:
                    a = st[ANCHOR]
                    scale = star_radius * norm_mean
                    d2a = d2[a % h] if a >= 0 and 0 < f - a <= min(f, h) else math.inf
                    if d2a <= 2.25 * d2[nearest] and d2a <= scale * scale:
                        st[STAR] += 1
                    else:
                        st[ANCHOR] = a = f - 1 - (f - 1 - nearest) % h
                        st[STAR] = 1
                        st[STAR_MIXED] = 0
                    if answers[c, a % h] != answer[i]:
                        st[STAR_MIXED] = 1
                    st[MAX_STAR] = max(st[MAX_STAR], st[STAR])
                    if 0 < star_steps <= st[STAR] and (searching or st[STAR_MIXED] != 0):
                        hit |= HIT_STAR
            pos = f % h
            for t in range(dims):
                ring[c, pos, t] = stored[i, t]
            for t in range(g):
                codes[c, pos, t] = code[i, t]
            hashes[c, pos] = digest[i]
            answers[c, pos] = answer[i]
            st[FILLED] = f + 1
            st[MAX_NEAR] = max(st[MAX_NEAR], near)
            if near >= min_neighbours and (searching or other_answer):
                hit |= HIT_NEAR
        for col in range(N_INTS):
            out_ints[i, col] = st[col]
        out_ints[i, POS] = pos
        out_ints[i, NEAR] = near
        out_ints[i, HIT] = hit
        for col in range(N_FLOATS):
            out_floats[i, col] = floats[c, col]
