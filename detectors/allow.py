"""Allow-lists for per-client detectors: known internal clients (batch scorers,
explainers, load tests) that security on-call has decided never to hear about."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from detectors.base import Detector, Finding
from detectors.event import Event
from detectors.keyed import Keyed, KeyKind


@functools.lru_cache(maxsize=256)
def split_names(entries: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Name patterns as (exact names, prefixes): an entry ending in ``*`` is a prefix."""
    return (frozenset(e for e in entries if not e.endswith("*")),
            tuple(e[:-1] for e in entries if e.endswith("*")))


def named(value: str | None, entries: tuple[str, ...]) -> bool:
    """Whether ``value`` is one of ``entries`` (exact names or ``prefix*``)."""
    if value is None:
        return False
    exact, prefixes = split_names(entries)
    return value in exact or (bool(prefixes) and value.startswith(prefixes))


class AllowListed(Keyed):
    """``Keyed`` that ignores the events of allow-listed clients: they get no
    state (no memory, no cost) and so never alert. An entry is an exact client
    id, or a prefix followed by ``*`` (``batch-*``).

    >>> from detectors.flooding import RequestRate
    >>> k = AllowListed(RequestRate(window_s=10, max_events=3), key="client",
    ...                 allow=["batch-*", "etl"])
    >>> ev = lambda c, t: Event(ts=t, model="m", model_version="1", client_id=c)
    >>> [f.subject["client_id"] for c in ("batch-7", "etl", "x")
    ...  for t in range(5) for f in k.update(ev(c, t))]
    ['x']
    """

    def __init__(
        self,
        prototype: Detector,
        *,
        key: KeyKind,
        allow: Iterable[str] = (),
        idle_s: float = 3600.0,
        max_keys: int = 1_000_000,
        renotify_s: float = 300.0,
        pack_after_s: float | None = None,
    ) -> None:
        super().__init__(prototype, key=key, idle_s=idle_s, max_keys=max_keys,
                         renotify_s=renotify_s, pack_after_s=pack_after_s)
        self.allow_exact, self.allow_prefixes = split_names(tuple(allow))

    def take_settings(self, other: Keyed) -> None:
        super().take_settings(other)
        assert isinstance(other, AllowListed)
        self.allow_exact, self.allow_prefixes = other.allow_exact, other.allow_prefixes

    def drop_allowed(self) -> list[Finding]:
        """Drop the state of the clients allow-listed since it was made (a new
        configuration): they get none; an open alert of theirs resolves."""
        if self.key != "client":
            return []  # an address's or a cell's key holds several clients' queries
        gone = [key for key in self.slots if self.allowed(key[1])]  # type: ignore[index]
        return self.drop(gone)

    def allowed(self, client_id: str | None) -> bool:
        if client_id is None:
            return False
        return client_id in self.allow_exact or (
            bool(self.allow_prefixes) and client_id.startswith(self.allow_prefixes))

    def accepts(self, event: Event) -> bool:
        return not self.allowed(event.client_id)

    def update(self, event: Event) -> list[Finding]:
        if self.allowed(event.client_id):
            return []
        return super().update(event)
