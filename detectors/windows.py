"""Tumbling event-time windows closed by a watermark.

Model-wide detectors see events from several partitions interleaved in an
order that differs from run to run. Accumulating per window of event time and
closing a window only when the watermark (the slowest partition's event time)
has passed its end makes the result independent of that interleaving, so a
restarted or replayed run closes the same windows with the same contents.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np

A = TypeVar("A")


class TumblingWindows(Generic[A]):
    """Windows of ``width_s`` seconds; events later than ``lateness_s`` past a
    closed window are counted in ``late`` and dropped.

    >>> w = TumblingWindows(60.0, 0.0, list)
    >>> w.add(5.0).append("a"); w.add(65.0).append("b")
    >>> [(start, acc) for start, acc in w.close_until(61.0)]
    [(0.0, ['a'])]
    """

    def __init__(self, width_s: float, lateness_s: float, new: Callable[[], A]) -> None:
        self.width_s = width_s
        self.lateness_s = lateness_s
        self.new = new
        self.open: dict[float, A] = {}
        self.closed_until = float("-inf")
        self.late = 0

    def add(self, ts: float) -> A | None:
        """The accumulator of the window holding ``ts``; None when it already closed."""
        start = math.floor(ts / self.width_s) * self.width_s
        if start + self.width_s <= self.closed_until:
            self.late += 1
            return None
        acc = self.open.get(start)
        if acc is None:
            acc = self.open[start] = self.new()
        return acc

    def add_many(self, ts: list[float]) -> list[tuple[A, list[int]]]:
        """``add`` for many times at once: each open window's accumulator with the
        (ascending) indices of ``ts`` it holds; late times are counted and dropped.

        >>> w = TumblingWindows(60.0, 0.0, list)
        >>> w.add_many([70.0, 5.0, 61.0])
        [([], [1]), ([], [0, 2])]
        """
        if len(ts) == 1:  # the per-event path
            acc = self.add(ts[0])
            return [] if acc is None else [(acc, [0])]
        times = np.asarray(ts, dtype=float)
        starts = np.floor(times / self.width_s) * self.width_s  # = math.floor(t / w) * w
        live = starts + self.width_s > self.closed_until
        self.late += int(live.size - np.count_nonzero(live))
        out = []
        for start in np.unique(starts[live]).tolist():
            acc = self.open.get(start)
            if acc is None:
                acc = self.open[start] = self.new()
            out.append((acc, np.flatnonzero(live & (starts == start)).tolist()))
        return out

    def next_close(self) -> float | None:
        """The watermark that closes the oldest open window."""
        if not self.open:
            return None
        return min(self.open) + self.width_s + self.lateness_s

    def close_until(self, watermark: float) -> list[tuple[float, A]]:
        """Close, oldest first, every window whose end + lateness <= ``watermark``."""
        limit = watermark - self.lateness_s
        done = sorted(s for s in self.open if s + self.width_s <= limit)
        if limit > self.closed_until:
            self.closed_until = math.floor(limit / self.width_s) * self.width_s
        return [(s, self.open.pop(s)) for s in done]
