"""Distribution drift of a model's inputs and predictions, on the stream, with a
stated false-alarm budget.

Per window, every feature (numeric, categorical, and the prediction as the
pseudo-feature ``@prediction``), in every slice (all traffic and the top
segments), is tested against the reference with a two-sample chi-square test
on the reference's cells. Cells the reference expects to hold fewer than 5
events a window (Cochran's rule), never-seen, below-min, above-max and missing
among them, are pooled into one rare pool per feature, tested apart exactly (the
conditional binomial test of two Poisson rates) and added to the chi-square as
its 1-degree-of-freedom component (Lancaster's partition): a feature with one
populated cell is still tested, and a stray value the reference never saw does
not look like a break (a pool the reference never filled counts from 5 events
a window). Each p-value becomes a z-score, and a one-sided CUSUM per (slice,
feature) accumulates them across windows (Page 1954). The CUSUM threshold comes
from the false-alarm budget: with ``W`` windows per ``budget_days`` and ``M``
CUSUMs, each CUSUM needs an in-control run length of ``M * W / false_alarms``
windows, and Siegmund's approximation of the CUSUM run length gives the
threshold ``h``. A fast path fires on one window for sudden breaks (a feature
gone null, a unit change): a p-value below the budget's share for one window
*and* a large PSI. Every alert needs significance and an effect above a floor
(PSI or mean shift in reference SDs, on the counts pooled over the CUSUM's run).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy.special import bdtr, bdtrc, ndtri_exp
from scipy.stats import chi2

from detectors.base import Detector
from detectors.event import Event
from detectors.raw_rows import RawRows, Row
from detectors.reference import (
    CONFIDENCE,
    PREDICTION,
    SCALE,
    Counts,
    Layout,
    Reference,
    build_reference,
    feature_matrix,
    numbers,
)
from detectors.windows import TumblingWindows

_FOLD_ROWS = 2048
_FAST_SHARE = 0.01  # share of the false-alarm budget spent on the one-window fast path
_Z_MIN, _Z_MAX = -5.0, 40.0
LAYOUT_ROWS = 5000  # events an automatic reference takes its bin edges and categories from
_MIN_EXPECTED = 5.0  # merge reference cells expected to hold fewer events per window
# the evidence of an open incident that a quiet window (none fired) keeps from the last
# window where some feature fired
_INCIDENT_KEYS = ("drifted", "drifted_count", "prediction_drift", "drifted_window_end")


def cusum_arl(h: float, k: float) -> float:
    """In-control average run length (in windows) of a one-sided CUSUM on N(0, 1)
    scores with reference value ``k`` and threshold ``h`` (Siegmund 1985).

    >>> round(cusum_arl(4.0, 0.5))
    338
    """
    b = 2.0 * k * (h + 1.166)
    return (math.exp(b) - b - 1.0) / (2.0 * k * k)


def cusum_threshold(arl: float, k: float) -> float:
    """The threshold ``h`` whose in-control run length is ``arl`` windows.

    >>> round(cusum_threshold(338.0, 0.5), 2)
    4.0
    """
    lo, hi = 0.0, 500.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if cusum_arl(mid, k) < arl:
            lo = mid
        else:
            hi = mid
    return hi


class ReferenceSet:
    """Configured references by (model, version); version "" serves every version.
    Short ``repr`` (it appears in alert evidence as part of the detector config).
    Detectors need a reference's layout and counts, not its sample (the reports
    read that from the store), so the set keeps none: it is pickled with them."""

    def __init__(self, references: list[Reference] | None = None) -> None:
        self.by_key = {(r.model, r.model_version): dataclasses.replace(r, sample=[])
                       for r in references or []}

    def get(self, model: str, version: str) -> Reference | None:
        return self.by_key.get((model, version)) or self.by_key.get((model, ""))

    def __len__(self) -> int:
        return len(self.by_key)

    def __repr__(self) -> str:
        keys = ", ".join(f"{m}@{v or '*'}" for m, v in sorted(self.by_key))
        return f"ReferenceSet([{keys}])"


class _Bucket:
    """One bucket's rows: pending ones as they came, the rest folded into ``counts``."""

    __slots__ = ("counts", "rows")

    def __init__(self) -> None:
        self.rows: list[Row] = []  # all of them until the layout exists
        self.counts: Counts | None = None


def _encode(layout: Layout, rows: list[Row]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rows`` encoded on ``layout`` as their ``row_values`` (the arguments of
    ``Layout.fold``)."""
    empty: dict[str, Any] = {}
    feats = [r[0] or empty for r in rows]
    special = {PREDICTION: 1, CONFIDENCE: 2}

    def column(name: str) -> list[Any]:
        k = special.get(name)
        if k is None:
            return [f.get(name) for f in feats]
        col = [r[k] for r in rows]
        if None in col:
            col = [f.get(name) if v is None else v for v, f in zip(col, feats, strict=True)]
        return col

    plain = [j for j, name in enumerate(layout.numeric) if name not in special]
    names = [layout.numeric[j] for j in plain]
    x = np.empty((len(rows), len(layout.numeric)))
    if names:
        x[:, plain] = feature_matrix(feats, names)
    for j, name in enumerate(layout.numeric):
        if name in special:
            x[:, j] = numbers([column(name)], len(rows))[0]
    return layout.encode_columns(x, {name: column(name) for name in layout.columns}, len(rows))


def _r(x: float, digits: int = 4) -> float | None:
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def _pool(layout: Layout, cells: np.ndarray, merge: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``cells`` (slices x cells) summed into their test cells (``merge_map``): the
    regular cells (slices x cells; a merged-away cell holds 0) and each feature's
    rare pool (slices x features)."""
    n_s, n_c = cells.shape
    n_f = len(layout.features)
    out = np.zeros((n_s, n_c + n_f))
    for s in range(n_s):
        out[s] = np.bincount(merge[s], weights=cells[s], minlength=n_c + n_f)
    return out[:, :n_c], out[:, n_c:]


_Pooled = tuple[np.ndarray, np.ndarray, np.ndarray]  # test cells, rare pools, events


def _effects(layout: Layout, win: _Pooled, ref: _Pooled, rare: np.ndarray,
             ) -> tuple[np.ndarray, np.ndarray]:
    """PSI and Jensen-Shannon distance per (slice, feature) over its test cells and,
    where ``rare`` (where the test counts it), its rare pool, from the window's and
    the reference's ``_pool`` and their events per (slice, feature) (or per slice,
    as a column). PSI adds half an event to every
    live cell (both samples' counts), so a cell empty on one side stays finite: a
    single stray event in a rare pool the reference never filled weighs ~0.006 at
    1,000 events against 20,000 (where counted), under the 0.02 floor."""
    (w, w_rare, n), (r, r_rare, big_n) = win, ref
    starts = layout.offsets[:-1]
    sizes = np.diff(layout.offsets)
    shape = w_rare.shape
    n = np.broadcast_to(n, shape)
    big_n = np.broadcast_to(big_n, shape)
    live = (w + r) > 0
    live_rare = rare & ((w_rare + r_rare) > 0)
    k = np.add.reduceat(live.astype(float), starts, axis=1) + live_rare
    nc, bc, kc = (np.repeat(a, sizes, axis=1) for a in (n, big_n, k))
    with np.errstate(divide="ignore", invalid="ignore"):
        pw = np.where(live, (w + 0.5) / (nc + 0.5 * kc), 1.0)
        pr = np.where(live, (r + 0.5) / (bc + 0.5 * kc), 1.0)
        pw_rare = np.where(live_rare, (w_rare + 0.5) / (n + 0.5 * k), 1.0)
        pr_rare = np.where(live_rare, (r_rare + 0.5) / (big_n + 0.5 * k), 1.0)
        psi = (np.add.reduceat((pw - pr) * np.log(pw / pr), starts, axis=1)
               + (pw_rare - pr_rare) * np.log(pw_rare / pr_rare))

        def js_terms(qw: np.ndarray, qr: np.ndarray) -> np.ndarray:
            m = (qw + qr) / 2
            return (np.where(qw > 0, qw * np.log(qw / m), 0.0)
                    + np.where(qr > 0, qr * np.log(qr / m), 0.0))

        jt = (np.add.reduceat(js_terms(w / nc, r / bc), starts, axis=1)
              + np.where(live_rare, js_terms(w_rare / n, r_rare / big_n), 0.0))
        js = np.sqrt(np.maximum(jt / (2 * math.log(2)), 0.0))
    return psi, js


def _rare_pool_z(w_rare: np.ndarray, r_rare: np.ndarray, n: np.ndarray,
                 big_n: np.ndarray) -> np.ndarray:
    """|z| of the exact two-sided test that the rare pool is as frequent in the
    window (``w_rare`` of ``n`` events) as in the reference (``r_rare`` of
    ``big_n``): given the ``k = w_rare + r_rare`` pooled events, the window's share
    is Binomial(k, n / (n + N)) (the conditional test of two Poisson rates,
    Przyborowski & Wilenski 1940; Lehmann & Romano, *Testing Statistical
    Hypotheses*, 4.6), two-sided by doubling the smaller tail. Exact whatever the
    expected count, and conservative (discrete): a reference count of 1 and one
    window event give p = 0.19 at 1,000 events against 20,000, where the chi-square
    term the cell would add (9.0) gives p = 0.003."""
    wi = w_rare.astype(np.int64)
    k = wi + r_rare.astype(np.int64)
    f = np.broadcast_to(n / np.maximum(n + big_n, 1.0), wi.shape)
    upper = np.where(wi > 0, bdtrc(np.maximum(wi - 1, 0), k, f), 1.0)
    lower = bdtr(wi, k, f)
    p = np.clip(2.0 * np.minimum(upper, lower), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        z = -ndtri_exp(np.log(p) - math.log(2.0))
    return np.clip(np.nan_to_num(z, nan=0.0, posinf=_Z_MAX), 0.0, _Z_MAX)


def window_tests(layout: Layout, ref: Counts, win: Counts, merge: np.ndarray) -> dict[str, np.ndarray]:
    """Per (slice, feature): a two-sample chi-square of the window against the
    reference, its p-value and z-score, and effect sizes (PSI, Jensen-Shannon
    distance, mean shift in reference SDs, missing rates). Arrays of shape
    (slices, features).

    The chi-square is partitioned (Lancaster 1949): the events of the feature's
    rare pool (``merge_map``) against the rest, 1 degree of freedom, tested exactly
    (``_rare_pool_z``; its z squared is the chi-square component), plus the
    two-sample chi-square (Pearson) of the test cells outside the pool, each
    expected to hold at least 5 window events. So a feature with a single populated
    reference cell is still tested (one degree of freedom: the rare pool), and moves
    into or out of its largest cell count. A pool the reference never filled counts
    only once the window holds 5 of its events (Cochran's minimum): fewer are
    strays, not tested."""
    off = layout.offsets
    starts = off[:-1]
    sizes = np.diff(off)
    w, w_rare = _pool(layout, win.cells, merge)
    r, r_rare = _pool(layout, ref.cells, merge)
    n = win.n.astype(float)[:, None]
    big_n = ref.n.astype(float)[:, None]
    n_reg = np.add.reduceat(w, starts, axis=1)  # events outside the rare pool
    big_reg = np.add.reduceat(r, starts, axis=1)
    nc, bc = np.repeat(n_reg, sizes, axis=1), np.repeat(big_reg, sizes, axis=1)
    tot = w + r
    live = tot > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(live & (nc > 0) & (bc > 0),
                        (bc * w - nc * r) ** 2 / (nc * bc * tot), 0.0)
        stat = np.add.reduceat(term, starts, axis=1)
        cells = np.add.reduceat(live.astype(float), starts, axis=1)
        df = np.where((n_reg > 0) & (big_reg > 0), np.maximum(cells - 1.0, 0.0), 0.0)
        # the pool counts when the reference filled it (whatever the window holds), or
        # else from _MIN_EXPECTED window events: were it tested whenever the window
        # brings one, a window would choose its own degrees of freedom and strays
        # (beyond a continuous feature's reference range: 1 in N/2 events) bias it up
        rare = (((r_rare > 0) | (w_rare >= _MIN_EXPECTED)) & ((n_reg + big_reg) > 0))
        stat = stat + np.where(rare, _rare_pool_z(w_rare, r_rare, n, big_n) ** 2, 0.0)
        df = df + rare
        ok = (df > 0) & (n > 0) & (big_n > 0)
        stat = np.where(ok, stat, 0.0)
        dfs = np.where(ok, df, 1.0)
        logp = np.where(ok, chi2.logsf(stat, dfs), 0.0)
        p = np.where(ok, np.exp(logp), 1.0)
        z = np.clip(-ndtri_exp(np.minimum(logp, -1e-300)), _Z_MIN, _Z_MAX)
        z = np.where(ok, z, _Z_MIN)
        miss_idx = off[1:] - 1
        miss_w = win.cells[:, miss_idx] / n
        miss_r = ref.cells[:, miss_idx] / big_n
    psi, js = _effects(layout, (w, w_rare, n), (r, r_rare, big_n), rare)
    fn = len(layout.numeric)
    shift = np.full(stat.shape, np.nan)
    if fn:
        shift[:, :fn] = mean_shift(layout, ref, win.cells, win.m1)
    return {"stat": stat, "df": df, "p": p, "z": z, "psi": np.where(ok, psi, 0.0),
            "js": np.where(ok, js, 0.0), "shift": shift, "miss_w": miss_w, "miss_r": miss_r,
            "ok": ok}


def mean_shift(layout: Layout, ref: Counts, cells: np.ndarray, m1: np.ndarray) -> np.ndarray:
    """(window mean - reference mean) / reference SD per slice and numeric feature."""
    fn = len(layout.numeric)
    miss_idx = layout.offsets[1:fn + 1] - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        nn_w = _feature_totals(layout, cells)[:, :fn] - cells[:, miss_idx]
        nn_r = _feature_totals(layout, ref.cells)[:, :fn] - ref.cells[:, miss_idx]
        mw = m1.astype(float) / SCALE / nn_w
        mr = ref.m1.astype(float) / SCALE / nn_r
        vr = ref.m2.astype(float) / (SCALE * SCALE) / nn_r - mr * mr
        return (mw - mr) / np.sqrt(np.maximum(vr, 1e-12))


def _feature_totals(layout: Layout, cells: np.ndarray) -> np.ndarray:
    return np.add.reduceat(cells.astype(float), layout.offsets[:-1], axis=1)


def merge_map(layout: Layout, ref: Counts, window_events: int) -> np.ndarray:
    """Per slice, each cell's test cell: a cell the reference expects to hold at
    least 5 events in a window of ``window_events`` is its own (Cochran's rule for
    the chi-square); the others, a cell the reference never saw (``unseen``,
    below-min, above-max, often ``missing``) among them, are pooled into the
    feature's rare pool, numbered ``n_cells + feature index``, which
    ``window_tests`` tests exactly. The pool is never merged into the largest
    cell: that made a feature with one populated cell untestable and moves into
    or out of the largest cell (its category renamed, its value sent as null)
    invisible."""
    off = layout.offsets
    n_c = layout.n_cells
    maps = np.tile(np.arange(n_c), (layout.n_slices, 1))
    for s in range(layout.n_slices):
        big_n = max(int(ref.n[s]), 1)
        expected = ref.cells[s] * (window_events / big_n)
        for j in range(len(off) - 1):
            a, b = int(off[j]), int(off[j + 1])
            sparse = np.nonzero(expected[a:b] < _MIN_EXPECTED)[0] + a
            maps[s, sparse] = n_c + j
    return maps


class DistributionDrift(Detector):
    """Input and prediction drift against a reference, windowed, with a CUSUM
    across windows whose threshold comes from a false-alarm budget.

    Events accumulate in ``bucket_s`` buckets closed by the watermark; a test
    window is the run of closed buckets reaching ``window_events`` events (or
    ``max_window_s`` of event time with at least ``min_events``). The reference
    is ``references``' entry for the model version, else the first
    ``reference_events`` (whole buckets) of the version's own traffic (bin edges
    and top categories from its first ``LAYOUT_ROWS``, so warm-up memory is bounded). An
    incident opens on the first window that triggers, stays open while windows
    trigger, and closes after ``clear_windows`` quiet windows; while it is open, the
    evidence and summary name the features of the last window that triggered (and
    ``quiet_windows``, the quiet windows since).

    >>> rng = np.random.default_rng(0)
    >>> d = DistributionDrift(bucket_s=10, window_events=500, reference_events=2000)
    >>> for t in range(12000):
    ...     f = {"a": float(rng.normal(1.0 if t >= 8000 else 0.0)), "b": float(rng.normal())}
    ...     d.update(Event(ts=t / 50, model="m", model_version="1", features=f))
    ...     d.tick(t / 50)
    >>> d.detected, [f["feature"] for f in d.evidence()["drifted"]]
    (True, ['a'])
    """

    name = "drift.distribution"
    kind = "drift"
    shared_params = ("references",)

    def __init__(
        self,
        *,
        bucket_s: float = 10.0,
        lateness_s: float = 5.0,
        window_events: int = 1000,
        max_window_s: float = 600.0,
        min_events: int = 200,
        reference_events: int = 20_000,
        bins: int = 10,
        top_k: int = 20,
        segment_by: str | None = None,
        top_segments: int = 5,
        false_alarms: float = 1.0,
        budget_days: float = 30.0,
        cusum_k: float = 0.5,
        min_psi: float = 0.02,
        min_mean_shift: float = 0.1,
        fast_min_psi: float = 0.25,
        clear_windows: int = 3,
        predictions: bool = True,
        references: ReferenceSet | None = None,
    ) -> None:
        self.bucket_s = bucket_s
        self.lateness_s = lateness_s
        self.window_events = window_events
        self.max_window_s = max_window_s
        self.min_events = min_events
        self.reference_events = reference_events
        self.bins = bins
        self.top_k = top_k
        self.segment_by = segment_by
        self.top_segments = top_segments
        self.false_alarms = false_alarms
        self.budget_days = budget_days
        self.cusum_k = cusum_k
        self.min_psi = min_psi
        self.min_mean_shift = min_mean_shift
        self.fast_min_psi = fast_min_psi
        self.clear_windows = clear_windows
        self.predictions = predictions
        self.references = references
        self._buckets: TumblingWindows[_Bucket] = TumblingWindows(bucket_s, lateness_s, _Bucket)
        self._looked_up = False
        self._model = self._version = ""
        self.reference: Reference | None = None
        self._ref_rows = RawRows()  # the layout's rows, until it is built
        self._layout: Layout | None = None
        self._ref_counts: Counts | None = None
        self._ref_sample: list[dict[str, Any]] = []
        self._ref_start = math.nan
        self.notices: list[str] = []  # for the daemon's log ("reference built ...")
        self._merge: np.ndarray | None = None
        self._acc: Counts | None = None
        self._acc_start = math.nan
        self._cusum: np.ndarray | None = None
        self._run_cells: np.ndarray | None = None
        self._run_m1: np.ndarray | None = None
        self._run_since: np.ndarray | None = None
        self._windows_tested = 0
        self._time_tested = 0.0
        self._quiet = 0
        self._detected = False
        self._decided: float | None = None
        self._last: dict[str, Any] = {}

    # -- collection -----------------------------------------------------------------
    def update(self, event: Event) -> None:
        self.update_many([event])

    def update_many(self, events: list[Event]) -> None:
        """Add events to their buckets; they are encoded on the layout in bulk, when
        ``_FOLD_ROWS`` are pending in a bucket or it closes."""
        if not events:
            return
        if not self._looked_up:
            self._looked_up = True
            first = events[0]
            self._model, self._version = first.model, first.model_version
            if self.references is not None:
                found = self.references.get(first.model, first.model_version)
                if found is not None:
                    self.set_reference(found)
        rows: list[Row] = []
        ts = []
        for e in events:
            row = (e.features, e.prediction, e.confidence) if self.predictions else (
                e.features, None, None)
            if row[0] or row[1] is not None or row[2] is not None:
                rows.append(row)
                ts.append(e.ts)
        if not rows:
            return
        for b, idx in self._buckets.add_many(ts):
            first_ts = min(map(ts.__getitem__, idx))
            if math.isnan(self._ref_start) or first_ts < self._ref_start:
                self._ref_start = first_ts
            b.rows.extend(map(rows.__getitem__, idx))
            if self._layout is not None and len(b.rows) >= _FOLD_ROWS:
                self._fold(b)

    def _fold(self, b: _Bucket) -> None:
        layout = self._layout
        assert layout is not None
        if b.counts is None:
            b.counts = Counts.zeros(layout)
        if b.rows:
            layout.fold(b.counts, *_encode(layout, b.rows))
            b.rows = []

    # -- windows --------------------------------------------------------------------
    def tick(self, now: float) -> None:
        for start, b in self._buckets.close_until(now):
            end = start + self.bucket_s
            if self.reference is None:
                self._grow_reference(b, end)
                continue
            self._fold(b)
            assert b.counts is not None
            if self._acc is None:
                self._acc = b.counts
                self._acc_start = start
            else:
                self._acc += b.counts
            n = int(self._acc.n[0])
            if n >= self.window_events or (end - self._acc_start >= self.max_window_s
                                           and n >= self.min_events):
                self.decide(self._acc_start, end, self._acc)
                self._acc = None

    def _grow_reference(self, b: _Bucket, end: float) -> None:
        """Automatic reference: the cells come from the first ``LAYOUT_ROWS`` events
        (whole buckets), then every event up to ``reference_events`` is counted in
        them; only the first stretch is ever held raw."""
        if self._layout is None:
            self._ref_rows.extend(b.rows)
            if len(self._ref_rows) < min(self.reference_events, LAYOUT_ROWS):
                return
            first = build_reference(
                self._ref_rows.values(), bins=self.bins, top_k=self.top_k,
                segment_by=self.segment_by, top_segments=self.top_segments)
            self._ref_rows = RawRows()
            self._layout = first.layout
            self._ref_counts = first.counts
            self._ref_sample = first.sample
        else:
            self._fold(b)
            assert b.counts is not None and self._ref_counts is not None
            self._ref_counts += b.counts
        assert self._layout is not None and self._ref_counts is not None
        if int(self._ref_counts.n[0]) < self.reference_events:
            return
        ref = Reference(self._layout, self._ref_counts, model=self._model,
                        model_version=self._version, source="auto", start=self._ref_start,
                        end=end, sample=self._ref_sample)
        self._ref_counts = None
        self._ref_sample = []
        self.set_reference(ref)
        self.notices.append(
            f"drift reference built from the first {ref.n} events "
            f"({len(ref.layout.features)} features) up to event time {end}")
        # buckets still open hold rows: they are encoded when they close

    def __getstate__(self) -> dict[str, Any]:
        """Checkpoints hold counts, not raw rows: once the layout exists, every open
        bucket is folded on it first (the counts it would get when it closes); and
        an automatic reference's sample, kept for the reports, is stored with the
        reference (``monitor.reference``), not in every checkpoint. That makes the
        state tens of KiB per model instead of ~700 KiB."""
        if self._layout is not None:
            for b in self._buckets.open.values():
                self._fold(b)
        ref = self.reference
        if ref is None or not ref.sample:
            return self.__dict__
        return {**self.__dict__, "reference": dataclasses.replace(ref, sample=[])}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("_ref_rows"), list):  # stored by formats 3 and 4: dicts
            state = {**state, "_ref_rows": RawRows(state["_ref_rows"])}
        self.__dict__.update(state)
        if self.reference is not None:  # formats up to 7 merged sparse cells into the top one
            self._merge = merge_map(self.reference.layout, self.reference.counts,
                                    self.window_events)

    def set_reference(self, ref: Reference) -> None:
        """Compare from now on with ``ref``. Counts are only ever added on one layout:
        when ``ref`` brings another one than the detector counted on so far (a stored
        reference given to a version still warming up an automatic one, as a restart
        does, ``monitor.reference.apply_references``), what was counted on the old
        layout (the open buckets' folded counts, a window in progress) is dropped, and
        so are the warm-up rows and counts: the open buckets' rows not yet folded
        are counted on ``ref``'s layout when they close."""
        old = self._layout
        if old is not None and old is not ref.layout and old != ref.layout:
            for b in self._buckets.open.values():
                b.counts = None
            self._acc = None
        self._ref_rows = RawRows()
        self._ref_counts = None
        self._ref_sample = []
        self.reference = ref
        self._layout = ref.layout
        lay = ref.layout
        self._merge = merge_map(lay, ref.counts, self.window_events)
        shape = (lay.n_slices, len(lay.features))
        self._cusum = np.zeros(shape)
        self._run_cells = np.zeros((lay.n_slices, lay.n_cells), np.int64)
        self._run_m1 = np.zeros((lay.n_slices, len(lay.numeric)), dtype=object)
        self._run_since = np.full(shape, np.nan)

    def budget(self) -> tuple[float, float, float]:
        """(windows per budget period, CUSUM threshold h, fast-path p threshold)."""
        mean_s = self._time_tested / self._windows_tested if self._windows_tested else 60.0
        windows = self.budget_days * 86400.0 / max(mean_s, self.bucket_s)
        m = max(self._cusum.size if self._cusum is not None else 1, 1)
        h = cusum_threshold(m * windows / ((1 - _FAST_SHARE) * self.false_alarms), self.cusum_k)
        fast_p = _FAST_SHARE * self.false_alarms / (windows * m)
        return windows, h, fast_p

    def decide(self, start: float, end: float, win: Counts) -> None:
        """Test one window's counts (on the reference's layout) and update the
        CUSUMs and the incident; ``tick`` calls it when a window closes."""
        ref = self.reference
        assert ref is not None and self._merge is not None and self._cusum is not None
        assert self._run_cells is not None and self._run_m1 is not None
        assert self._run_since is not None
        lay = ref.layout
        self._windows_tested += 1
        self._time_tested += end - start
        windows, h, fast_p = self.budget()
        t = window_tests(lay, ref.counts, win, self._merge)
        tested = t["ok"] & (win.n[:, None] >= self.min_events)
        z = np.where(tested, t["z"], 0.0)
        s_prev = self._cusum
        cusum = np.clip(s_prev + z - self.cusum_k, 0.0, 1.25 * h)
        cusum = np.where(tested, cusum, s_prev)
        self._cusum = cusum
        # pooled counts of each (slice, feature) since its CUSUM last left zero
        sizes = np.diff(lay.offsets)
        restart = np.repeat(s_prev <= 0.0, sizes, axis=1)
        grow = np.repeat(tested, sizes, axis=1)
        self._run_cells = np.where(grow, np.where(restart, 0, self._run_cells) + win.cells,
                                   self._run_cells)
        fn = len(lay.numeric)
        if fn:
            m_restart = (s_prev <= 0.0)[:, :fn]
            m_grow = tested[:, :fn]
            self._run_m1 = np.where(m_grow, np.where(m_restart, 0, self._run_m1) + win.m1,
                                    self._run_m1)
        self._run_since = np.where(tested & (s_prev <= 0.0), start, self._run_since)
        run = Counts(self._run_cells, np.zeros(lay.n_slices, np.int64), self._run_m1,
                     self._run_m1)
        run_n = _feature_totals(lay, self._run_cells)
        run_psi, run_shift = _run_effects(lay, ref.counts, run, run_n, self._merge,
                                          window_events=self.window_events)
        # the effect floor, on the counts pooled since onset or on this window alone
        # (pooling can start a little before the onset and dilute the effect)
        big_effect = ((np.maximum(run_psi, t["psi"]) >= self.min_psi)
                      | (np.maximum(np.abs(np.nan_to_num(run_shift)),
                                    np.abs(np.nan_to_num(t["shift"]))) >= self.min_mean_shift))
        sequential = tested & (cusum >= h) & big_effect
        sudden = tested & (t["p"] < fast_p) & (t["psi"] >= self.fast_min_psi)
        fired = sequential | sudden
        if fired.any():
            self._detected = True
            self._quiet = 0
        elif self._detected:
            self._quiet += 1
            if self._quiet >= self.clear_windows:
                self._detected = False
        self._decided = end
        drifted = []
        for s, j in zip(*np.nonzero(fired), strict=True):
            feat = lay.features[j]
            drifted.append({
                "feature": feat,
                "segment": None if s == 0 else f"{lay.segment_by}={lay.segments[s - 1]}",
                "rule": "sudden" if sudden[s, j] else "cusum",
                "chi2": _r(t["stat"][s, j]), "df": int(t["df"][s, j]),
                "p_value": _r(t["p"][s, j], 3), "z": _r(t["z"][s, j]),
                "cusum": _r(cusum[s, j]), "psi": _r(t["psi"][s, j]),
                "psi_since_onset": _r(run_psi[s, j]), "js": _r(t["js"][s, j]),
                "mean_shift_sd": _r(t["shift"][s, j]) if j < fn else None,
                "mean_shift_sd_since_onset": _r(run_shift[s, j]) if j < fn else None,
                "missing_rate": _r(t["miss_w"][s, j]),
                "reference_missing_rate": _r(t["miss_r"][s, j]),
                "since": _r(self._run_since[s, j], 12),
            })
            if feat == CONFIDENCE:  # low-confidence rate: answers below 0.6
                a = int(lay.offsets[j])
                drifted[-1]["low_confidence_rate"] = _r(win.cells[s, a:a + 3].sum() / win.n[s])
                drifted[-1]["reference_low_confidence_rate"] = _r(
                    ref.counts.cells[s, a:a + 3].sum() / max(int(ref.counts.n[s]), 1))
        drifted.sort(key=lambda d: (-(d["psi_since_onset"] or 0.0), d["feature"],
                                    d["segment"] or ""))
        last = self._last
        self._last = {
            "window_start": start, "window_end": end, "window_events": int(win.n[0]),
            "reference": ref.describe(),
            "features_tested": len(lay.features), "segments_tested": lay.n_slices - 1,
            "budget": f"{self.false_alarms:g} false alarm(s) per {self.budget_days:g} days",
            "windows_per_budget": _r(windows), "cusum_threshold": _r(h),
            "cusum_k": self.cusum_k, "fast_p_threshold": _r(fast_p, 3),
            "min_psi": self.min_psi, "min_mean_shift_sd": self.min_mean_shift,
            "fast_min_psi": self.fast_min_psi, "drifted_count": len(drifted),
            "prediction_drift": any(d["feature"] == PREDICTION for d in drifted),
            "drifted": drifted[:10],
            "drifted_window_end": end if drifted else None,
            "quiet_windows": self._quiet,
        }
        if not self._detected:
            self._last["drifted"] = []
        elif not drifted:
            # the incident stays open through its hysteresis although no feature fired
            # in this window: it is still the drift of the last window where some did
            # (a repeat ``firing`` record must not read as resolved), with this window's
            # figures beside it and ``quiet_windows`` of ``clear_windows`` passed
            self._last.update({k: last[k] for k in _INCIDENT_KEYS if k in last})

    # -- state ----------------------------------------------------------------------
    @property
    def detected(self) -> bool:
        return self._detected

    def next_decision(self) -> float | None:
        return self._buckets.next_close()

    @property
    def decided_at(self) -> float | None:
        return self._decided

    def evidence(self) -> dict[str, Any]:
        return dict(self._last)

    def summary(self, subject: dict[str, str], model: str) -> str:
        if not self._detected:
            return f"Inputs and predictions of {model} are back to their reference distribution."
        drifted = self._last.get("drifted", [])
        quiet = int(self._last.get("quiet_windows") or 0)
        names = []
        for d in drifted[:3]:
            name = {PREDICTION: "the prediction mix",
                    CONFIDENCE: "the confidence histogram"}.get(d["feature"], d["feature"])
            if d["segment"]:
                name += f" ({d['segment']})"
            names.append(f"{name} {self._effect(d, quiet=quiet > 0)}")
        more = int(self._last.get("drifted_count") or 0) - len(names)
        tail = f" and {more} more" if more > 0 else ""
        text = f"{model} drifted from its reference"
        if names:
            text += f": {', '.join(names)}{tail}"
        if quiet:  # open through its hysteresis: say how far it is from closing
            text += (f"; no drift in the last {'window' if quiet == 1 else f'{quiet} windows'}"
                     f", it resolves after {self.clear_windows} quiet windows")
        return f"{text}; check the upstream data before trusting predictions."

    def _effect(self, d: dict[str, Any], *, quiet: bool = False) -> str:
        """The effect that put a drifted feature over the floor, as ``decide`` judged
        it: PSI or mean shift since onset, else its window's (the last window, or
        while the incident is quiet, the last one that drifted)."""
        window = " in the last window that drifted" if quiet else " in the last window"
        for psi, shift, when in ((d["psi_since_onset"], d["mean_shift_sd_since_onset"], ""),
                                 (d["psi"], d["mean_shift_sd"], window)):
            if (psi or 0.0) >= self.min_psi:
                return f"PSI {psi:.2f}{when}"
            if shift is not None and abs(shift) >= self.min_mean_shift:
                return f"mean {shift:+.2f} SD{when}"
        return f"PSI {d['psi_since_onset'] or 0.0:.2f}"  # a sudden break (its own rule)


def _run_effects(layout: Layout, ref: Counts, run: Counts, run_n: np.ndarray,
                 merge: np.ndarray, *, window_events: int) -> tuple[np.ndarray, np.ndarray]:
    """PSI and mean shift of each (slice, feature)'s pooled counts since onset; a
    rare pool the reference never filled counts from ``_MIN_EXPECTED`` events per
    ``window_events`` (as in ``window_tests``)."""
    w, w_rare = _pool(layout, run.cells, merge)
    r, r_rare = _pool(layout, ref.cells, merge)
    rare = (r_rare > 0) | (w_rare * window_events >= _MIN_EXPECTED * run_n)
    psi, _ = _effects(layout, (w, w_rare, run_n), (r, r_rare, ref.n.astype(float)[:, None]),
                      rare)
    psi = np.where(run_n > 0, psi, 0.0)
    fn = len(layout.numeric)
    shift = np.full(psi.shape, np.nan)
    if fn:
        shift[:, :fn] = mean_shift(layout, ref, run.cells, run.m1)
    return psi, shift
