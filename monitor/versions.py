"""The (model, model_version) pairs a partition tracks, at most
``events.max_model_versions`` of them.

Every pair has model-wide detector state and window summaries of its own. A
producer that writes a request id or a timestamp into ``model_version`` (or into
the model name) would grow them by one pair per event until the daemon runs out
of memory; the events of pairs over the limit are bad input instead
(``too_many_versions``) until a tracked pair has been idle long enough to make
room.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from operator import attrgetter

from detectors.event import Event

MODEL_IDLE_S = 30 * 86_400.0  # a pair (and its model-wide state) is dropped this idle
DEFAULT_LIMIT = 1000
_PAIR, _TS = attrgetter("model", "model_version"), attrgetter("ts")


class ModelVersions:
    """The pairs seen, least recently seen first, with the event time of their last
    event. A new pair at the limit first drops the pairs idle for ``idle_s`` of the
    partition's event time; if none is, it does not fit.

    >>> v = ModelVersions(limit=2, idle_s=60)
    >>> ev = lambda t, version: Event(ts=t, model="m", model_version=version)
    >>> v.over_limit([ev(0, "1"), ev(1, "2"), ev(2, "3"), ev(3, "1")])
    [2]
    >>> v.over_limit([ev(70, "3")])  # "2" has been idle for 69 s: "3" takes its place
    []
    """

    __slots__ = ("idle_s", "last", "limit", "now")

    def __init__(self, limit: int = DEFAULT_LIMIT, idle_s: float = MODEL_IDLE_S) -> None:
        self.limit = limit
        self.idle_s = idle_s
        self.last: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.now = float("-inf")  # the partition's event time (the latest event's ts)

    def __getstate__(self) -> tuple[int, float, OrderedDict[tuple[str, str], float], float]:
        return self.limit, self.idle_s, self.last, self.now

    def __setstate__(self, state: tuple[int, float, OrderedDict[tuple[str, str], float],
                                        float]) -> None:
        self.limit, self.idle_s, self.last, self.now = state

    def over_limit(self, events: Sequence[Event]) -> list[int]:
        """Take ``events`` in stream order; the indices of those whose pair does not fit
        (the same for any cut of the stream into batches)."""
        last = self.last
        pairs = list(map(_PAIR, events))
        if last.keys() >= set(pairs):  # the common case: known pairs, in C-level passes
            stamps = list(map(_TS, events))
            latest = dict(zip(pairs, stamps, strict=True))  # each pair's last event's ts
            for pair in reversed(dict.fromkeys(reversed(pairs))):  # by their last event
                last.move_to_end(pair)
                last[pair] = latest[pair]
            if stamps:
                self.now = max(self.now, *stamps)
            return []
        now = self.now
        rejected: list[int] = []
        for i, event in enumerate(events):
            pair = (event.model, event.model_version)
            ts = event.ts
            now = max(now, ts)
            if pair in last:
                last.move_to_end(pair)
            elif len(last) >= self.limit and not self._make_room(now):
                rejected.append(i)
                continue
            last[pair] = ts
        self.now = now
        return rejected

    def _make_room(self, now: float) -> bool:
        """Drop the pairs idle since ``now - idle_s``; whether one more fits."""
        horizon = now - self.idle_s
        last = self.last
        while last and next(iter(last.values())) < horizon:
            last.popitem(last=False)
        return len(last) < self.limit
