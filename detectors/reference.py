"""A model's drift reference: what its inputs, predictions and confidence looked
like when it was built (or in a pinned production period, or in its first
stretch of traffic), kept as additive counts.

A :class:`Layout` fixes the cells once: per numeric feature equal-frequency bin
edges from the reference's quantiles plus a below-min, an above-max and a
missing cell; per categorical feature the top categories plus ``other`` (seen in
the reference, not in its top), ``unseen`` and ``missing``. The prediction is
the pseudo-feature ``@prediction`` and the confidence ``@confidence`` (fixed
edges on [0, 1]). The prediction is categorical when its values are labels or
whole numbers (class ids: ``1`` and ``1.0`` are the same class), and binned like
a numeric feature only when it has fractional values (a regression). An
optional segment column splits the counts into slices: slice 0 is all traffic,
slice ``i`` the ``i``-th top segment value.

:class:`Counts` on a layout are integers only (cell counts, and per numeric
feature the sum and sum of squares of the value quantised to 2^-16 reference
standard deviations), so windows and replicas merge by addition and the result
never depends on the order events arrived in.

>>> rows = [{"x": float(i % 10), "colour": "red" if i % 3 else "blue"} for i in range(100)]
>>> ref = build_reference(rows, bins=5, model="m")
>>> ref.layout.numeric, ref.layout.categorical, ref.layout.categories
(('x',), ('colour',), (('red', 'blue'),))
>>> a, b = ref.layout.count(rows[:40]), ref.layout.count(rows[40:])
>>> (a + b) == ref.counts
True
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers as numbers_abc
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PREDICTION = "@prediction"
CONFIDENCE = "@confidence"
CONFIDENCE_EDGES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
SCALE = 1 << 16  # moments are sums of round(z * SCALE), z in reference SDs
_QMAX = 1 << 24  # clip at 256 SDs: q^2 * _CHUNK stays inside int64
_CHUNK = 16_384
_NUMERIC_EXTRA = 3  # below-min, above-max, missing
_CATEGORICAL_EXTRA = 3  # other, unseen, missing


def label(value: object) -> str:
    """A categorical value as the string it is counted under; a whole float is
    written as the integer it equals (JSON decoders turn class id 1 into 1.0)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _is_class_ids(col: Sequence[Any]) -> bool:
    """Whether a column's numbers are all whole (class ids), None aside."""
    return all(isinstance(v, bool | int) or (isinstance(v, float) and v.is_integer())
               for v in col if v is not None)


def as_number(value: object) -> float:
    """A numeric feature value as float (any real number: int, bool, numpy's); None,
    strings and the like are missing (NaN)."""
    if isinstance(value, float):
        return value
    if isinstance(value, bool | int | numbers_abc.Real):
        return float(value)
    return math.nan


@dataclass(frozen=True, eq=True)
class Layout:
    """The cells counts are kept in; frozen once the reference is built."""

    numeric: tuple[str, ...] = ()
    edges: tuple[tuple[float, ...], ...] = ()  # per numeric feature: min, inner edges, max
    center: tuple[float, ...] = ()  # reference mean per numeric feature
    scale: tuple[float, ...] = ()  # reference standard deviation (1 when constant)
    categorical: tuple[str, ...] = ()
    categories: tuple[tuple[str, ...], ...] = ()  # top categories per categorical feature
    known: tuple[frozenset[str], ...] = ()  # every category the reference saw (capped)
    segment_by: str | None = None
    segments: tuple[str, ...] = ()
    _derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        sizes = [len(e) - 1 + _NUMERIC_EXTRA for e in self.edges]
        sizes += [len(c) + _CATEGORICAL_EXTRA for c in self.categories]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        d = self._derived
        d["sizes"] = np.asarray(sizes, dtype=np.int64)
        d["offsets"] = offsets
        d["inner"] = [np.asarray(e[1:-1], dtype=float) for e in self.edges]
        d["lookup"] = [{c: i for i, c in enumerate(cats)} for cats in self.categories]
        d["segment_lookup"] = {s: i + 1 for i, s in enumerate(self.segments)}
        d["center"] = np.asarray(self.center, dtype=float)
        d["scale"] = np.asarray(self.scale, dtype=float)

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "_derived"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)
        object.__setattr__(self, "_derived", {})
        self.__post_init__()

    # -- shape ----------------------------------------------------------------------
    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    @property
    def n_cells(self) -> int:
        return int(self._derived["offsets"][-1])

    @property
    def offsets(self) -> np.ndarray:
        return self._derived["offsets"]

    @property
    def n_slices(self) -> int:
        return 1 + len(self.segments)

    def widened_range(self, margin: float) -> tuple[np.ndarray, np.ndarray]:
        """Each numeric feature's reference minimum and maximum (its outer edges),
        widened on each side by ``margin`` times its range, or for a feature constant
        in the reference, times the median range of the others (so the noise of an
        augmented copy on an image's blank border stays inside, random pixels there
        do not). Computed once per margin."""
        key = f"widened_range:{margin!r}"
        found = self._derived.get(key)
        if found is None:
            lo = np.asarray([e[0] for e in self.edges], dtype=float)
            hi = np.asarray([e[-1] for e in self.edges], dtype=float)
            span = hi - lo
            varying = span[span > 0]
            typical = float(np.median(varying)) if varying.size else 0.0
            pad = margin * np.where(span > 0, span, typical)
            found = self._derived[key] = (lo - pad, hi + pad)
        return found

    # -- encoding -------------------------------------------------------------------
    @property
    def columns(self) -> tuple[str, ...]:
        """The columns :meth:`encode_columns` reads: categorical features, the segment."""
        seg = () if self.segment_by is None else (self.segment_by,)
        return self.categorical + seg

    def encode_columns(self, x: np.ndarray, cols: Mapping[str, Sequence[Any]], n: int,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The arguments of :meth:`fold` for ``n`` rows: ``x`` holds their numeric values
        (rows x ``numeric``, see :func:`numbers`), ``cols`` the :attr:`columns` by name
        (an absent column is missing everywhere)."""
        none = [None] * n
        c = np.empty((n, len(self.categorical)), dtype=np.int64)
        for j, name in enumerate(self.categorical):
            c[:, j] = _codes(cols.get(name, none), self._derived["lookup"][j],
                             functools.partial(self._category, j))
        if self.segment_by is None:
            return x, c, np.zeros(n, np.int64)
        s = _codes(cols.get(self.segment_by, none), self._derived["segment_lookup"], self._segment)
        return x, c, s

    def _category(self, j: int, v: Any) -> int:
        """Cell of value ``v`` of categorical feature ``j``: its category, else ``other``
        (the reference saw it) or ``unseen``; ``missing`` for None and NaN."""
        top = len(self.categories[j])
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return top + 2
        s = label(v)
        i = self._derived["lookup"][j].get(s)
        if i is None:
            i = top + (0 if s in self.known[j] else 1)
        return i

    def _segment(self, v: Any) -> int:
        """Slice of segment value ``v`` (0: not a top segment, or None)."""
        if v is None:
            return 0
        return self._derived["segment_lookup"].get(label(v), 0)

    def count(self, rows: Sequence[Mapping[str, Any]]) -> Counts:
        """Counts of plain rows (name → value mappings)."""
        counts = Counts.zeros(self)
        if rows:
            x = feature_matrix(rows, self.numeric)
            cols = {name: [r.get(name) for r in rows] for name in self.columns}
            self.fold(counts, *self.encode_columns(x, cols, len(rows)))
        return counts

    def fold(self, counts: Counts, nums: Sequence[Sequence[float]] | np.ndarray,
             cats: Sequence[Sequence[int]] | np.ndarray, segs: Sequence[int] | np.ndarray) -> None:
        """Add encoded rows to ``counts`` (vectorised, in chunks so moments stay in int64)."""
        for lo in range(0, len(segs), _CHUNK):
            hi = lo + _CHUNK
            s = np.asarray(segs[lo:hi], dtype=np.int64)
            x = np.asarray(nums[lo:hi], dtype=float).reshape(len(s), len(self.numeric))
            c = np.asarray(cats[lo:hi], dtype=np.int64).reshape(len(s), len(self.categorical))
            self._fold_arrays(counts, x, c, s)

    def _fold_arrays(self, counts: Counts, x: np.ndarray, c: np.ndarray, s: np.ndarray) -> None:
        r = len(s)
        fn = len(self.numeric)
        off = self.offsets
        cell = np.empty((r, fn + len(self.categorical)), dtype=np.int64)
        miss = np.isnan(x)
        for j in range(fn):
            col = x[:, j]
            e = self.edges[j]
            nb = len(e) - 1
            idx = np.searchsorted(self._derived["inner"][j], col, side="right") + 1
            idx[col < e[0]] = 0
            idx[col > e[-1]] = nb + 1
            idx[miss[:, j]] = nb + 2
            cell[:, j] = idx + off[j]
        if self.categorical:
            cell[:, fn:] = c + off[fn:-1]
        n_cells = self.n_cells
        keys = [cell.ravel()]
        seg_rows = s > 0
        if seg_rows.any():
            keys.append((cell[seg_rows] + (s[seg_rows, None] * n_cells)).ravel())
        binned = np.bincount(np.concatenate(keys), minlength=self.n_slices * n_cells)
        counts.cells += binned.reshape(self.n_slices, n_cells)
        counts.n += np.bincount(np.concatenate([np.zeros(r, np.int64), s[seg_rows]]),
                                minlength=self.n_slices)
        if fn:
            z = (x - self._derived["center"]) / self._derived["scale"]
            q = np.clip(np.rint(np.where(miss, 0.0, z) * SCALE), -_QMAX, _QMAX).astype(np.int64)
            q2 = q * q
            for sl in [0, *np.unique(s[seg_rows]).tolist()]:
                rows = slice(None) if sl == 0 else (s == sl)
                counts.m1[sl] += _ints(q[rows].sum(axis=0))
                counts.m2[sl] += _ints(q2[rows].sum(axis=0))


_PLAIN_NUMBERS = frozenset({float, int, bool, type(None)})


def only_numbers(values: Iterable[Any]) -> bool:
    """Whether every value is a JSON number, a bool or None (missing): what a numeric
    feature holds. A string, even ``"3.5"``, is a category (``build_layout``)."""
    return _PLAIN_NUMBERS.issuperset(map(type, values))


def pick(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[tuple[Any, ...]]:
    """The values of ``names`` in every row, None where absent (one C-level getter a row)."""
    if not names:
        return [()] * len(rows)
    if len(names) == 1:
        return [(r.get(names[0]),) for r in rows]
    get = operator.itemgetter(*names)
    try:
        return list(map(get, rows))
    except KeyError:  # some row lacks a name
        return [tuple(map(r.get, names)) for r in rows]


def numbers(rows: Sequence[Sequence[Any]], width: int) -> np.ndarray:
    """``as_number`` of every value of a table (rows x ``width``) as a float matrix;
    numbers and None (NaN) in C-level passes, anything else value by value."""
    values = list(itertools.chain.from_iterable(rows))
    flat = all_numbers(values)
    if flat is None and only_numbers(values):  # None among them
        flat = np.fromiter(values, float, len(values))
    if flat is not None:
        return flat.reshape(len(rows), width)
    return np.array([[as_number(v) for v in r] for r in rows], dtype=float).reshape(len(rows), width)


def all_numbers(values: list[Any]) -> np.ndarray | None:
    """``values`` as floats when every one is a real number (what ``as_number`` reads
    as a number), else None. The check is one C-level sum (a str or None raises
    TypeError), cheaper than looking at each value's type."""
    try:
        with np.errstate(all="ignore"):  # a numpy float32 sum may overflow: no matter
            sum(values, 0.0)
        return np.fromiter(values, np.float64, len(values))
    except (TypeError, ValueError, OverflowError):  # not all numbers (or a complex one)
        return None


def feature_matrix(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> np.ndarray:
    """``numbers(pick(rows, names), len(names))``: each row's value of each name as a
    float (NaN where absent or not a number). When the rows are dicts holding the same
    keys in the same order (one model's feature maps) and every value is a number,
    all their values are read in one C-level pass and the columns of ``names`` taken
    from it: no per-row getter and no per-value type check."""
    uniform = uniform_columns(rows, names)
    if uniform is None:
        return numbers(pick(rows, names), len(names))
    flat, columns = uniform
    return flat if columns is None else flat[:, columns]


def uniform_columns(rows: Sequence[Any], names: Sequence[str],
                     ) -> tuple[np.ndarray, list[int] | None] | None:
    """All values of ``rows`` as a (rows x keys) float matrix and the column of each of
    ``names`` in it (None: the keys are ``names`` in order), when every row is a plain
    dict with the first row's keys in its order, holding ``names`` and only real numbers;
    else None."""
    if len(rows) < 2 or set(map(type, rows)) != {dict}:
        return None
    keys = tuple(rows[0])
    if list(map(tuple, rows)).count(keys) != len(rows):
        return None
    position = {k: i for i, k in enumerate(keys)}
    try:
        columns = [position[name] for name in names]
    except KeyError:
        return None
    values = list(itertools.chain.from_iterable(map(dict.values, rows)))
    flat = all_numbers(values)
    if flat is None:
        return None
    flat = flat.reshape(len(rows), len(keys))
    return flat, None if columns == list(range(len(keys))) else columns


def _codes(col: Sequence[Any], lookup: Mapping[str, int], code: Callable[[Any], int]) -> np.ndarray:
    """``code`` of every value; when all are strings found in ``lookup``, one C-level pass."""
    if set(map(type, col)) <= {str}:
        codes = list(map(lookup.get, col))
        if None not in codes:
            return np.array(codes, dtype=np.int64)
    return np.fromiter(map(code, col), np.int64, len(col))


def _ints(a: np.ndarray) -> np.ndarray:
    return np.array([int(v) for v in a], dtype=object)


class Counts:
    """Additive counts on a layout: ``cells`` (slices x cells), ``n`` events per
    slice, ``m1``/``m2`` exact integer moments per slice and numeric feature."""

    __slots__ = ("cells", "m1", "m2", "n")

    def __init__(self, cells: np.ndarray, n: np.ndarray, m1: np.ndarray, m2: np.ndarray) -> None:
        self.cells = cells
        self.n = n
        self.m1 = m1
        self.m2 = m2

    @classmethod
    def zeros(cls, layout: Layout) -> Counts:
        s, fn = layout.n_slices, len(layout.numeric)
        m1 = np.empty((s, fn), dtype=object)
        m1.fill(0)
        m2 = np.empty((s, fn), dtype=object)
        m2.fill(0)
        return cls(np.zeros((s, layout.n_cells), np.int64), np.zeros(s, np.int64), m1, m2)

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.cells + other.cells, self.n + other.n, self.m1 + other.m1,
                      self.m2 + other.m2)

    def __iadd__(self, other: Counts) -> Counts:
        self.cells += other.cells
        self.n += other.n
        self.m1 = self.m1 + other.m1
        self.m2 = self.m2 + other.m2
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Counts) and bool(
            np.array_equal(self.cells, other.cells) and np.array_equal(self.n, other.n)
            and (self.m1 == other.m1).all() and (self.m2 == other.m2).all())

    __hash__ = None  # type: ignore[assignment]

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.cells, self.n, self.m1, self.m2)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.cells, self.n, self.m1, self.m2 = state

    def to_dict(self) -> dict[str, Any]:
        return {"cells": self.cells.tolist(), "n": self.n.tolist(),
                "m1": self.m1.tolist(), "m2": self.m2.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], layout: Layout) -> Counts:
        z = cls.zeros(layout)
        z.cells[:] = np.asarray(d["cells"], dtype=np.int64)
        z.n[:] = np.asarray(d["n"], dtype=np.int64)
        for dst, src in ((z.m1, d["m1"]), (z.m2, d["m2"])):
            for i, row in enumerate(src):
                for j, v in enumerate(row):
                    dst[i, j] = int(v)
        return z


@dataclass
class Reference:
    """A layout, the reference's counts on it, and where they came from."""

    layout: Layout
    counts: Counts
    model: str = ""
    model_version: str = ""  # "" = any version of the model
    source: str = "auto"  # "auto", "file:<name>", "pinned:<from>..<to>"
    start: float | None = None  # event time span it covers, when known
    end: float | None = None
    sample: list[dict[str, Any]] = field(default_factory=list)  # bounded, for reports

    @property
    def n(self) -> int:
        return int(self.counts.n[0])

    def __repr__(self) -> str:
        return (f"Reference(model={self.model!r}, model_version={self.model_version!r}, "
                f"source={self.source!r}, n={self.n})")

    def describe(self) -> dict[str, Any]:
        """Short JSON-able identification for alert evidence."""
        return {"source": self.source, "events": self.n, "model_version": self.model_version,
                "start": self.start, "end": self.end}

    def to_dict(self) -> dict[str, Any]:
        lay = self.layout
        return {
            "layout": {"numeric": list(lay.numeric), "edges": [list(e) for e in lay.edges],
                       "center": list(lay.center), "scale": list(lay.scale),
                       "categorical": list(lay.categorical),
                       "categories": [list(c) for c in lay.categories],
                       "known": [sorted(k) for k in lay.known], "segment_by": lay.segment_by,
                       "segments": list(lay.segments)},
            "counts": self.counts.to_dict(), "model": self.model,
            "model_version": self.model_version, "source": self.source, "start": self.start,
            "end": self.end, "sample": self.sample,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reference:
        ly = d["layout"]
        layout = Layout(
            numeric=tuple(ly["numeric"]), edges=tuple(tuple(e) for e in ly["edges"]),
            center=tuple(ly["center"]), scale=tuple(ly["scale"]),
            categorical=tuple(ly["categorical"]),
            categories=tuple(tuple(c) for c in ly["categories"]),
            known=tuple(frozenset(k) for k in ly["known"]), segment_by=ly["segment_by"],
            segments=tuple(ly["segments"]))
        return cls(layout, Counts.from_dict(d["counts"], layout), model=d.get("model", ""),
                   model_version=d.get("model_version", ""), source=d.get("source", "auto"),
                   start=d.get("start"), end=d.get("end"), sample=list(d.get("sample", [])))


def build_layout(
    rows: Sequence[Mapping[str, Any]],
    *,
    bins: int = 10,
    top_k: int = 20,
    segment_by: str | None = None,
    top_segments: int = 5,
    fixed_edges: Mapping[str, Sequence[float]] | None = None,
    max_known: int = 1000,
    max_columns: int = 1000,
) -> Layout:
    """Cells for ``rows``: a column is categorical when any of its values is a
    string (``@prediction`` also when all its values are whole numbers); numeric
    columns get ``bins`` equal-frequency bins (fewer when values repeat), or one
    bin per value when they hold at most ``bins`` distinct values; columns
    in ``fixed_edges`` get those edges (``@confidence``: the fixed confidence
    histogram ``CONFIDENCE_EDGES``). At most ``max_columns`` columns: the names
    present in the most rows (feature maps keyed by an open vocabulary, such as
    token counts, would otherwise make one column per name ever seen).
    Deterministic: column order is sorted, ties in category counts and in name
    frequencies break by name."""
    fixed = {CONFIDENCE: CONFIDENCE_EDGES, **(fixed_edges or {})}
    present = Counter(itertools.chain.from_iterable(rows))
    if len(present) > max_columns:
        ranked = sorted(present.items(), key=lambda kv: (-kv[1], kv[0]))[:max_columns]
        names = sorted(name for name, _ in ranked)
    else:
        names = sorted(present)
    cols = dict(zip(names, zip(*pick(rows, names), strict=True), strict=True)) if rows else {}
    kinds = {n: any(map(isinstance, cols[n], itertools.repeat(str))) for n in names}  # categorical?
    if PREDICTION in kinds:
        kinds[PREDICTION] = kinds[PREDICTION] or _is_class_ids(cols[PREDICTION])
    numeric = tuple(n for n in names if not kinds[n])
    categorical = tuple(n for n in names if kinds[n])
    edges, center, scale = [], [], []
    qs = np.linspace(0.0, 1.0, bins + 1)
    for name in numeric:
        col = numbers([cols[name]], len(rows))[0]
        col = col[~np.isnan(col)]
        if name in fixed:
            e = np.asarray(fixed[name], dtype=float)
        elif col.size:
            by_value = _value_edges(col, bins)
            e = np.unique(np.quantile(col, qs)) if by_value is None else by_value
        else:
            e = np.zeros(2)
        edges.append(tuple(float(v) for v in e))
        mu, sd = _moments(col)
        center.append(mu)
        scale.append(sd if sd > 0 and math.isfinite(sd) else 1.0)
    categories, known = [], []
    for name in categorical:
        seen = Counter(label(v) for v in cols[name] if v is not None)
        ranked = sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))
        categories.append(tuple(k for k, _ in ranked[:top_k]))
        known.append(frozenset(k for k, _ in ranked[:max_known]))
    segments: tuple[str, ...] = ()
    if segment_by is not None:
        seen = Counter(label(v) for r in rows if (v := r.get(segment_by)) is not None)
        segments = tuple(k for k, _ in sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))
                         [:top_segments])
    return Layout(numeric=numeric, edges=tuple(edges), center=tuple(center), scale=tuple(scale),
                  categorical=categorical, categories=tuple(categories), known=tuple(known),
                  segment_by=segment_by, segments=segments)


def _moments(col: np.ndarray) -> tuple[float, float]:
    """Mean and (population) standard deviation of ``col``, exactly rounded sums
    (``math.fsum``, Shewchuk 1997): numpy's pairwise sums depend on the order of the
    values, so a Kafka run and a replay, whose rows come in another order, would
    store references a few ulps apart. (0, 0) when empty; numpy's (inf or NaN) when
    a sum overflows.

    >>> _moments(np.array([1e16, 1.0, -1e16, 1.0])) == _moments(np.array([1.0, 1.0, 1e16, -1e16]))
    True
    """
    if not col.size:
        return 0.0, 0.0
    with np.errstate(all="ignore"):
        try:
            mu = math.fsum(col.tolist()) / col.size
            return mu, math.sqrt(math.fsum(((col - mu) ** 2).tolist()) / col.size)
        except (OverflowError, ValueError):  # infinite values, or sums beyond 1.8e308
            return float(col.mean()), float(col.std())


def _value_edges(col: np.ndarray, bins: int) -> np.ndarray | None:
    """Edges giving each value its own bin when ``col`` (no NaN) holds at most
    ``bins`` distinct values (a 0/1 flag, a bool, a small count): the minimum, the
    midpoints between consecutive values, the maximum; None for more values.
    Quantile edges would put the largest value in the bin of the one below it
    (bins are closed on the right at the top edge only), so a flag got one bin
    and was never tested. A constant gets ``(v, v)``: one bin.

    >>> _value_edges(np.array([0.0, 1.0, 1.0, 2.0]), 10).tolist()
    [0.0, 0.5, 1.5, 2.0]
    """
    values = np.unique(col)
    if values.size > bins:
        return None
    if values.size == 1:
        return np.asarray([values[0], values[0]])
    mid = values[:-1] + (values[1:] - values[:-1]) / 2.0
    return np.concatenate([values[:1], mid, values[-1:]])


def build_reference(
    rows: Sequence[Mapping[str, Any]],
    *,
    model: str = "",
    model_version: str = "",
    source: str = "auto",
    start: float | None = None,
    end: float | None = None,
    sample_size: int = 500,
    **layout_options: Any,
) -> Reference:
    """A reference from plain rows (name → value, with ``@prediction`` and
    ``@confidence`` when known). See :func:`build_layout` for the options."""
    layout = build_layout(rows, **layout_options)
    step = max(1, len(rows) // sample_size) if sample_size else 0
    sample = [dict(r) for r in rows[::step]][:sample_size] if step else []
    return Reference(layout, layout.count(rows), model=model, model_version=model_version,
                     source=source, start=start, end=end, sample=sample)
