"""The raw rows an automatic drift reference takes its layout from, held compactly.

A model version keeps its first ``LAYOUT_ROWS`` events raw until it has seen them
all (``detectors.drift``), which for a quiet version can take days. As one dict per
row that is ~0.9 KB per 25-feature event, ~4.3 MiB per version; a daemon watching
hundreds of models or versions holds gigabytes. Here rows whose feature maps all
have the same names in the same order and only ``float`` values are kept as one array
of doubles (8 bytes a value) with the names once; any other batch as the dicts it gives.
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
from array import array
from typing import Any, cast

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


class _Floats:
    """Consecutive rows whose features are ``names`` in that order, all floats: their
    values in one growing array of doubles."""

    __slots__ = ("confidences", "names", "predictions", "x")

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.x = array("d")
        self.predictions: list[Any] = []
        self.confidences: list[float | None] = []

    def __len__(self) -> int:
        return len(self.predictions)

    def since(self, start: int) -> _Floats:
        """A copy of its rows from ``start`` on."""
        tail = _Floats(self.names)
        tail.x = self.x[start * len(self.names):]
        tail.predictions = self.predictions[start:]
        tail.confidences = self.confidences[start:]
        return tail

    def add(self, values: list[float], rows: list[Row]) -> None:
        self.x.extend(values)
        self.predictions += [r[1] for r in rows]
        self.confidences += [r[2] for r in rows]

    def values(self) -> list[dict[str, Any]]:
        flat, k = self.x.tolist(), len(self.names)
        feats = (dict(zip(self.names, flat[i:i + k], strict=True))
                 for i in range(0, len(flat), k))
        return [row_values(row)
                for row in zip(feats, self.predictions, self.confidences, strict=True)]

    def __getstate__(self) -> tuple[Any, ...]:
        return self.names, self.x, self.predictions, self.confidences

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.names, self.x, self.predictions, self.confidences = state


def _floats(rows: list[Row]) -> tuple[tuple[str, ...], list[float]] | None:
    """The names and the values, row after row, when every row's features are the
    first row's names in its order and all floats; else None."""
    if {type(r[0]) for r in rows} != {dict}:
        return None
    feats = cast("list[dict[str, Any]]", [r[0] for r in rows])
    names = tuple(feats[0])
    if not names or list(map(tuple, feats)).count(names) != len(feats):
        return None
    values = list(itertools.chain.from_iterable(map(dict.values, feats)))
    if set(map(type, values)) != {float}:  # ints, bools, strings: kept as they came
        return None
    return names, values


class RawRows:
    """Rows in arrival order, as arrays of doubles where they allow it (see the
    module). Consecutive batches of the same names share one array, so a quiet
    version that brings one event a bucket is held as compactly as a busy one."""

    __slots__ = ("__weakref__", "_n", "parts")  # weakly referenced: monitor.row_chunks

    def __init__(self, rows: list[dict[str, Any]] | None = None) -> None:
        self.parts: list[_Floats | list[dict[str, Any]]] = [rows] if rows else []
        self._n = len(rows) if rows else 0

    def __len__(self) -> int:
        return self._n

    def since(self, start: int) -> RawRows:
        """A copy of the rows from ``start`` on (what came after ``start`` rows)."""
        tail = RawRows()
        for part in self.parts:
            if start >= len(part):
                start -= len(part)
                continue
            tail.parts.append(part.since(start) if isinstance(part, _Floats) else part[start:])
            tail._n += len(tail.parts[-1])
            start = 0
        return tail

    @classmethod
    def joined(cls, pieces: list[RawRows]) -> RawRows:
        """The rows of ``pieces``, one after the other."""
        whole = cls()
        for piece in pieces:
            whole.parts += piece.parts
            whole._n += len(piece)
        return whole

    def extend(self, rows: list[Row]) -> None:
        if not rows:
            return
        self._n += len(rows)
        last = self.parts[-1] if self.parts else None
        floats = _floats(rows)
        if floats is None:
            if isinstance(last, list):
                last += map(row_values, rows)
            else:
                self.parts.append(list(map(row_values, rows)))
            return
        names, values = floats
        if not (isinstance(last, _Floats) and last.names == names):
            last = _Floats(names)
            self.parts.append(last)
        last.add(values, rows)

    def values(self) -> list[dict[str, Any]]:
        """Every row as name → value, in the order they came."""
        return list(itertools.chain.from_iterable(
            p.values() if isinstance(p, _Floats) else p for p in self.parts))

    def __getstate__(self) -> tuple[list[_Floats | list[dict[str, Any]]]]:
        return (self.parts,)  # a tuple: pickle skips __setstate__ for a false state

    def __setstate__(self, state: tuple[list[_Floats | list[dict[str, Any]]]]) -> None:
        (self.parts,) = state
        self._n = sum(map(len, self.parts))
