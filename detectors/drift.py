"""Feature drift: numeric input features whose distribution moved away from the
model version's own reference, on tumbling event-time windows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import chi2

from detectors.base import Detector
from detectors.event import Event
from detectors.windows import TumblingWindows

_FOLD_ROWS = 1024


class _Window:
    """Rows of one window, folded into per-feature bin counts in numpy batches."""

    __slots__ = ("counts", "n", "rows")

    def __init__(self) -> None:
        self.rows: list[list[float]] = []
        self.counts: np.ndarray | None = None
        self.n = 0


def _as_float(value: object) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return math.nan


class FeatureDrift(Detector):
    """Per numeric feature, a chi-square test of a window's bin counts against the
    reference's equal-frequency bins, Bonferroni-corrected across features, with
    the population stability index (PSI) as the effect size.

    The reference is built automatically from the first ``reference_events``
    events (whole closed windows) of the model version: per feature ``bins``
    equal-frequency bins from its quantiles, plus a bin for missing values. A
    window with at least ``min_events`` fires when some feature has
    ``p < alpha / n_features`` and ``PSI >= min_psi``; it clears after a window
    with no such feature.

    >>> rng = np.random.default_rng(0)
    >>> d = FeatureDrift(window_s=10, reference_events=500, min_events=50)
    >>> for t in range(3000):
    ...     shift = 1.0 if t >= 2000 else 0.0
    ...     f = {"a": float(rng.normal(shift)), "b": float(rng.normal())}
    ...     d.update(Event(ts=t / 10, model="m", model_version="1", features=f))
    ...     d.tick(t / 10)
    >>> d.detected, [f["feature"] for f in d.evidence()["drifted_features"]]
    (True, ['a'])
    """

    name = "drift.feature_chi2"
    kind = "drift"

    def __init__(
        self,
        *,
        window_s: float = 60.0,
        lateness_s: float = 5.0,
        reference_events: int = 2000,
        min_events: int = 200,
        bins: int = 10,
        alpha: float = 1e-4,
        min_psi: float = 0.1,
    ) -> None:
        self.window_s = window_s
        self.lateness_s = lateness_s
        self.reference_events = reference_events
        self.min_events = min_events
        self.bins = bins
        self.alpha = alpha
        self.min_psi = min_psi
        self._windows: TumblingWindows[_Window] = TumblingWindows(window_s, lateness_s, _Window)
        self._names: list[str] = []
        self._ref_rows: list[list[float]] = []
        self._ref_columns: list[str] = []
        self._edges: np.ndarray | None = None  # (features, bins - 1)
        self._ref_props: np.ndarray | None = None  # (features, bins + 1); last = missing
        self._ref_n = 0
        self._detected = False
        self._last: dict[str, Any] = {}

    # -- collection ---------------------------------------------------------------
    def update(self, event: Event) -> None:
        feats = event.features
        if not feats:
            return
        win = self._windows.add(event.ts)
        if win is None:
            return
        if self._edges is None:
            for name in feats:
                if name not in self._ref_columns and not isinstance(feats[name], str):
                    self._ref_columns.append(name)
            win.rows.append([_as_float(feats.get(n)) for n in self._ref_columns])
            return
        win.rows.append([_as_float(feats.get(n)) for n in self._names])
        if len(win.rows) >= _FOLD_ROWS:
            self._fold(win)

    def _fold(self, win: _Window) -> None:
        if not win.rows:
            return
        assert self._edges is not None
        x = np.asarray(win.rows, dtype=float)
        counts = np.zeros((len(self._names), self.bins + 1))
        for j in range(len(self._names)):
            col = x[:, j]
            missing = np.isnan(col)
            idx = np.searchsorted(self._edges[j], col[~missing], side="right")
            counts[j, : self.bins] += np.bincount(idx, minlength=self.bins)
            counts[j, self.bins] += missing.sum()
        win.counts = counts if win.counts is None else win.counts + counts
        win.n += len(win.rows)
        win.rows = []

    # -- windows ------------------------------------------------------------------
    def tick(self, now: float) -> None:
        for start, win in self._windows.close_until(now):
            if self._edges is None:
                self._grow_reference(win)
            else:
                self._fold(win)
                self._test(start, win)

    def _grow_reference(self, win: _Window) -> None:
        width = len(self._ref_columns)
        self._ref_rows.extend(r + [math.nan] * (width - len(r)) for r in win.rows)
        if len(self._ref_rows) < self.reference_events or width == 0:
            return
        x = np.asarray(self._ref_rows, dtype=float)
        self._names = list(self._ref_columns)
        qs = np.linspace(0, 1, self.bins + 1)[1:-1]
        edges = []
        for j in range(width):
            col = x[:, j]
            col = col[~np.isnan(col)]
            edges.append(np.quantile(col, qs) if col.size else np.zeros(self.bins - 1))
        self._edges = np.asarray(edges)
        self._ref_n = len(self._ref_rows)
        ref = _Window()
        ref.rows = self._ref_rows
        self._ref_rows = []
        self._fold(ref)
        assert ref.counts is not None
        self._ref_props = (ref.counts + 0.5) / (ref.counts + 0.5).sum(axis=1, keepdims=True)
        # rows of still-open windows were built before the column set was final
        for w in self._windows.open.values():
            w.rows = [r + [math.nan] * (width - len(r)) for r in w.rows]

    def _test(self, start: float, win: _Window) -> None:
        if win.n < self.min_events or win.counts is None or self._ref_props is None:
            return
        obs = win.counts
        n = obs.sum(axis=1, keepdims=True)
        expected = self._ref_props * n
        # finite-reference correction: both samples carry sampling noise
        stat = (((obs - expected) ** 2) / expected).sum(axis=1) / (1 + n[:, 0] / self._ref_n)
        p = chi2.sf(stat, df=self.bins)
        props = (obs + 0.5) / (obs + 0.5).sum(axis=1, keepdims=True)
        psi = ((props - self._ref_props) * np.log(props / self._ref_props)).sum(axis=1)
        cut = self.alpha / len(self._names)
        drifted = [
            {"feature": self._names[j], "p_value": float(p[j]), "psi": round(float(psi[j]), 4),
             "chi2": round(float(stat[j]), 2)}
            for j in np.argsort(-psi)
            if p[j] < cut and psi[j] >= self.min_psi
        ]
        self._detected = bool(drifted)
        self._last = {
            "window_start": start,
            "window_end": start + self.window_s,
            "window_events": int(win.n),
            "reference_events": self._ref_n,
            "features_tested": len(self._names),
            "p_value_threshold": cut,
            "min_psi": self.min_psi,
            "drifted_features": drifted[:10],
        }

    @property
    def detected(self) -> bool:
        return self._detected

    def next_decision(self) -> float | None:
        return self._windows.next_close()

    @property
    def decided_at(self) -> float | None:
        return self._last.get("window_end")

    def evidence(self) -> dict[str, Any]:
        return dict(self._last)

    def summary(self, subject: dict[str, str], model: str) -> str:
        feats = [f["feature"] for f in self._last.get("drifted_features", [])]
        if not feats:
            return f"Input features of {model} are back to their reference distribution."
        top = ", ".join(feats[:3])
        return (
            f"{len(feats)} input feature(s) of {model} drifted from the reference "
            f"(top: {top}): check the upstream data before trusting predictions."
        )
