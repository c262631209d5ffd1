"""Sliding windows of event time kept as rings of sub-window counts.

A window of ``buckets`` sub-windows is an ``array`` of counts indexed by the
sub-window number modulo ``buckets`` (``stride`` counts per sub-window), plus
the number of the newest sub-window (``head``). The state is a few bytes per
sub-window whatever the rate, and the window's count is exact to one
sub-window. Shared by the per-client windowed detectors (flooding, boundary
probing, count rules).
"""

from __future__ import annotations

import math
from array import array

_WIDTHS: dict[tuple[float, int], float] = {}
_ZEROS: dict[int, array] = {}  # a zeroed ring per length, copied over a ring in one call


def width(window_s: float, buckets: int) -> float:
    """The sub-window length, one float object shared by every client's detector
    (a million clients would otherwise hold a million equal floats)."""
    return _WIDTHS.setdefault((window_s, buckets), window_s / buckets)


def counts(buckets: int, stride: int = 1) -> array:
    """A zeroed ring (4-byte unsigned counts)."""
    return array("I", bytes(4 * buckets * stride))


def sub_window(ts: float, width: float) -> int:
    return math.floor(ts / width)


def advance(ring: array, head: int, idx: int, buckets: int, stride: int = 1) -> int:
    """Move the newest sub-window to ``idx`` (if later), zeroing the ones it passes;
    return the new head. ``head < 0`` means nothing seen yet.

    >>> r = counts(3); r[0] = 5; r[1] = 7
    >>> advance(r, 1, 3, 3), list(r)
    (3, [0, 7, 0])
    >>> advance(r, 3, 9, 3), list(r)
    (9, [0, 0, 0])
    """
    if head < 0:
        return idx
    if idx <= head:
        return head
    if idx - head >= buckets:  # the whole window passed (a quiet client's next event)
        n = buckets * stride
        zeros = _ZEROS.get(n)
        if zeros is None:
            zeros = _ZEROS[n] = counts(buckets, stride)
        ring[:] = zeros
        return idx
    for i in range(head + 1, min(idx, head + buckets) + 1):
        j = (i % buckets) * stride
        for k in range(j, j + stride):
            ring[k] = 0
    return idx
