"""The raw rows an automatic drift reference takes its layout from, held compactly.

A model version keeps its first ``LAYOUT_ROWS`` events raw until it has seen them
all (``detectors.drift``), which for a quiet version can take days. As one dict per
row that is ~1.4 KB per 25-feature event, ~6.6 MiB per version; a daemon watching
hundreds of models or versions holds gigabytes. Here a batch whose feature maps all
have the same names in the same order and only ``float`` values is kept as one float
matrix (8 bytes a value) with the names once; any other batch as the dicts it gives.
``values()`` gives back exactly the rows (same names, order and values) either way.

>>> raw = RawRows()
>>> raw.extend([({"x": 1.0, "y": 2.5}, 3, 0.9), ({"x": 0.5, "y": -1.0}, 1, None)])
>>> raw.extend([({"colour": "red"}, None, 0.4)])
>>> len(raw)
3
>>> raw.values()  # doctest: +NORMALIZE_WHITESPACE
[{'x': 1.0, 'y': 2.5, '@prediction': 3, '@confidence': 0.9},
 {'x': 0.5, 'y': -1.0, '@prediction': 1},
 {'colour': 'red', '@confidence': 0.4}]
"""

from __future__ import annotations

import itertools
from typing import Any, cast

import numpy as np

from detectors.reference import CONFIDENCE, PREDICTION

Row = tuple[dict[str, Any] | None, Any, float | None]  # features, prediction, confidence


def row_values(row: Row) -> dict[str, Any]:
    """A row as name → value, with ``@prediction`` and ``@confidence`` when known."""
    feats, prediction, confidence = row
    values = dict(feats) if feats else {}
    if prediction is not None:
        values[PREDICTION] = prediction
    if confidence is not None:
        values[CONFIDENCE] = confidence
    return values


class _Matrix:
    """Rows whose features are ``names`` in that order, all floats."""

    __slots__ = ("confidences", "names", "predictions", "x")

    def __init__(self, names: tuple[str, ...], x: np.ndarray, predictions: list[Any],
                 confidences: list[float | None]) -> None:
        self.names = names
        self.x = x
        self.predictions = predictions
        self.confidences = confidences

    def __len__(self) -> int:
        return len(self.predictions)

    def values(self) -> list[dict[str, Any]]:
        rows = map(dict, map(zip, itertools.repeat(self.names), self.x.tolist()))
        return [row_values((r, p, c))
                for r, p, c in zip(rows, self.predictions, self.confidences, strict=True)]

    def __getstate__(self) -> tuple[Any, ...]:
        return self.names, self.x, self.predictions, self.confidences

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.names, self.x, self.predictions, self.confidences = state


def _matrix(rows: list[Row]) -> _Matrix | None:
    """``rows`` as a :class:`_Matrix` when their features allow it, else None."""
    if not rows or {type(r[0]) for r in rows} != {dict}:
        return None
    feats = cast("list[dict[str, Any]]", [r[0] for r in rows])
    names = tuple(feats[0])
    if not names or list(map(tuple, feats)).count(names) != len(feats):
        return None
    values = list(itertools.chain.from_iterable(map(dict.values, feats)))
    if set(map(type, values)) != {float}:  # ints, bools, strings: kept as they came
        return None
    x = np.array(values, dtype=np.float64).reshape(len(rows), len(names))
    return _Matrix(names, x, [r[1] for r in rows], [r[2] for r in rows])


class RawRows:
    """Rows in arrival order, as matrices where they allow it (see the module)."""

    __slots__ = ("_n", "parts")

    def __init__(self, rows: list[dict[str, Any]] | None = None) -> None:
        self.parts: list[_Matrix | list[dict[str, Any]]] = [rows] if rows else []
        self._n = len(rows) if rows else 0

    def __len__(self) -> int:
        return self._n

    def extend(self, rows: list[Row]) -> None:
        if not rows:
            return
        part = _matrix(rows)
        self.parts.append(part if part is not None else list(map(row_values, rows)))
        self._n += len(rows)

    def values(self) -> list[dict[str, Any]]:
        """Every row as name → value, in the order they came."""
        return list(itertools.chain.from_iterable(
            p.values() if isinstance(p, _Matrix) else p for p in self.parts))

    def __getstate__(self) -> tuple[list[_Matrix | list[dict[str, Any]]]]:
        return (self.parts,)  # a tuple: pickle skips __setstate__ for a false state

    def __setstate__(self, state: tuple[list[_Matrix | list[dict[str, Any]]]]) -> None:
        (self.parts,) = state
        self._n = sum(map(len, self.parts))
