"""The detector contract, after river's ``base.DriftDetector``.

A detector is a small state machine: ``update(event)`` feeds it one event,
``tick(now)`` tells it that event time has reached ``now`` (for windows that
close on time), ``detected`` says whether its condition holds, ``evidence()``
says why. Constructor parameters are keyword-only and stored under the same
names, so ``repr()`` and ``clone()`` show and reproduce the configuration.
"""

from __future__ import annotations

import inspect
import operator
from array import array
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self, TypeVar

from detectors.event import Event

Status = Literal["firing", "resolved"]


@dataclass(frozen=True, slots=True)
class Finding:
    """What a detector reports: a condition that started, continues or ended."""

    detector: str
    kind: str
    severity: str
    status: Status
    model: str
    model_version: str
    subject: dict[str, str]
    summary: str
    ts: float
    evidence: dict[str, Any] = field(default_factory=dict)
    atlas: tuple[str, ...] = ()


def subject_name(subject: Mapping[str, str]) -> str:
    """How a per-key summary names its subject.

    >>> subject_name({"client_id": "key-17"}), subject_name({"source_ip": "10.0.0.9"})
    ('Client key-17', 'Source address 10.0.0.9')
    >>> subject_name({"query_fingerprint": "9f2c"})
    'Clients querying near fingerprint 9f2c'
    """
    if "source_ip" in subject:
        return f"Source address {subject['source_ip']}"
    if "query_fingerprint" in subject:
        return f"Clients querying near fingerprint {subject['query_fingerprint']}"
    return f"Client {subject.get('client_id')}"


class Detector:
    """Base class. Subclasses set ``name``, ``kind``, ``atlas`` and implement
    ``update``, ``detected`` and ``evidence``; ``tick`` and ``summary`` are optional.
    """

    __slots__ = ()  # so that slotted per-client detectors carry no instance dict

    name: ClassVar[str] = "detector"
    kind: ClassVar[str] = "drift"
    atlas: ClassVar[tuple[str, ...]] = ()
    severity: str = "warning"
    # constructor parameters that hand a detector shared data (stored references),
    # not settings: left out of ``settings_text``
    shared_params: ClassVar[tuple[str, ...]] = ()

    def update(self, event: Event) -> None:
        raise NotImplementedError

    def update_many(self, events: list[Event]) -> None:
        """``update`` each event in turn; detectors whose updates only accumulate
        (decisions wait for ``tick``) override it with one vectorised pass."""
        for event in events:
            self.update(event)

    def prepare(self, events: Sequence[Event], keys: Sequence[Hashable],
                current: Mapping[Hashable, Detector | None]) -> None:
        """Called on the prototype before a batch of per-client ``update`` calls:
        ``events`` in order, ``keys[i]`` the key of ``events[i]`` (None: no clone
        takes it), ``current`` the clone of each key as the batch starts (None: not
        created yet). Several keyings (by client, by source address) announce the
        same ``events`` object in turn. A detector may do the batch's numeric work
        here at once; its ``update`` must give exactly what it would without it."""

    def tick(self, now: float) -> None:
        """Event time has reached ``now``; close whatever windows ended before it."""

    @property
    def detected(self) -> bool:
        raise NotImplementedError

    def evidence(self) -> dict[str, Any]:
        """The figures behind the current state (JSON-serialisable)."""
        return {}

    def next_decision(self) -> float | None:
        """The event time at which ``tick`` would close the next window (None: no
        window pending). ``Keyed`` ticks through each such time in turn, so every
        window's verdict is seen however far one watermark step jumps."""
        return None

    def next_incident(self) -> bool:
        """Called when this detector's incident has just resolved: whether another
        condition it watches still holds and opens its own incident now (a verdict
        over several signals); then ``detected`` is true again."""
        return False

    @property
    def decided_at(self) -> float | None:
        """Event time of the latest decision, for detectors that decide when a
        window closes (its end); None means "the time of the triggering call"."""
        return None

    def export_state(self) -> Any:
        """The state as plain data (no class references): the compact form of a
        per-client checkpoint row; ``import_state`` on a clone restores it."""
        return self.__getstate__()

    def import_state(self, state: Any) -> None:
        setstate = getattr(self, "__setstate__", None)
        if setstate is None:  # a plain instance dict
            self.__dict__.update(state)
        else:
            setstate(state)

    def summary(self, subject: dict[str, str], model: str) -> str:
        """One sentence a person can act on."""
        who = ", ".join(f"{k} {v}" for k, v in sorted(subject.items())) or "the model"
        return f"{self.name} fired for {who} on {model}"

    # -- parameters, river style -------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _param_names(type(self))}

    def clone(self) -> Self:
        """A fresh detector with the same parameters and no state."""
        return type(self)(**self._params())

    def restored(self, state: Any) -> Self:
        """A clone holding ``state`` (exported by a clone of this detector; the call
        keeps it, so give each call its own, as unpickling does)."""
        det = self.clone()
        det.import_state(state)
        return det

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"

    def settings(self) -> dict[str, str]:
        """The constructor parameters but the ``shared_params``, each as text."""
        return {k: _settings_value(v) for k, v in self._params().items()
                if k not in self.shared_params}

    def settings_text(self) -> str:
        """``repr`` without the ``shared_params``: two detectors with the same text
        are configured alike, so one's state means the same in the other."""
        args = ", ".join(f"{k}={v}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"

    def carry_state(self, state: Any, old: Detector) -> Any | None:
        """``state``, exported by a clone of ``old`` (the configuration a checkpoint
        was written with), as a state for a clone of this detector; None when it
        means nothing here (the settings differ: the clone starts afresh)."""
        return state if old.settings_text() == self.settings_text() else None


def _settings_value(value: Any) -> str:
    if isinstance(value, Detector):
        return value.settings_text()
    if isinstance(value, tuple):
        return f"({''.join(_settings_value(v) + ', ' for v in value)})"
    return repr(value)


class SlotState:
    """Mixin for detectors kept once per client (a million of them): every field in
    ``__slots__`` (no instance dict) and pickled as one flat tuple, the smallest
    and fastest form for checkpoints. A client's stored state (``export_state``)
    leaves out the constructor parameters: it is always read back into a clone of
    the prototype, which has them."""

    __slots__ = ()

    # fields holding ``array`` counts: a checkpoint row stores them as bytes (pickling
    # an array costs a Python-level reduce, eight times the bytes' cost)
    counters: ClassVar[tuple[str, ...]] = ()
    # slots added after a release stored objects of the class, with the value such an
    # object gets: its pickled tuple lacks them (``__setstate__``)
    added_slots: ClassVar[dict[str, Any]] = {}

    def __getstate__(self) -> tuple[Any, ...]:
        return _GETTERS["slots"](type(self))(self)

    def export_state(self) -> tuple[Any, ...]:
        state = _GETTERS["state"](type(self))(self)
        where = _counter_positions(type(self))
        if not where:
            return state
        out = list(state)
        for i in where:
            if out[i] is not None:
                out[i] = out[i].tobytes()
        return tuple(out)

    def import_state(self, state: tuple[Any, ...]) -> None:
        cls = type(self)
        state = _with_added(cls, _state_names(cls), state)
        where = _counter_positions(cls)
        if where:
            state = list(state)  # type: ignore[assignment]
            for i in where:
                if state[i] is not None:
                    state[i] = array("I", state[i])  # type: ignore[index]
        _SETTERS["state"](cls)(self, state)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        cls = type(self)
        _SETTERS["slots"](cls)(self, _with_added(cls, _slot_names(cls), state))

    def blank(self) -> Self:
        """A detector with these parameters and no state yet (``import_state`` fills
        it in), made without running the constructor: a restart restores a million
        clients, and the fresh state a constructor builds was two fifths of it."""
        cls = type(self)
        det = object.__new__(cls)
        _SETTERS["params"](cls)(det, _GETTERS["params"](cls)(self))
        return det

    def restored(self, state: tuple[Any, ...]) -> Self:
        det = self.blank()
        det.import_state(state)
        return det


def _with_added(cls: type, names: tuple[str, ...], state: tuple[Any, ...]) -> tuple[Any, ...]:
    """``state`` (values of ``names``) as stored before the class's ``added_slots``
    existed: with their values for such objects filled in."""
    added = cls.added_slots  # type: ignore[attr-defined]
    if added and len(state) == len(names) - sum(n in added for n in names):
        values = iter(state)
        return tuple(added[n] if n in added else next(values) for n in names)
    return state


_T = TypeVar("_T")


def _per_class(build: Callable[[type], _T]) -> Callable[[type], _T]:
    """``build(cls)`` computed once per class: the hot paths (a checkpoint reads every
    changed client, a restore writes every client) look these facts up."""
    built: dict[type, _T] = {}

    def get(cls: type) -> _T:
        value = built.get(cls)
        if value is None:
            value = built[cls] = build(cls)
        return value

    return get


@_per_class
def _slot_names(cls: type) -> tuple[str, ...]:
    """Every slot of ``cls``, its bases' first: a subclass of a slotted detector
    stores its parent's fields too, in the parent's order."""
    return tuple(name for c in reversed(cls.__mro__) for name in c.__dict__.get("__slots__", ()))


@_per_class
def _state_names(cls: type) -> tuple[str, ...]:
    """The slots of ``cls`` that are not constructor parameters: what changes."""
    params = set(_param_names(cls))
    return tuple(n for n in _slot_names(cls) if n not in params)


@_per_class
def _counter_positions(cls: type) -> tuple[int, ...]:
    """Where the ``counters`` sit in the exported state."""
    names = _state_names(cls)
    return tuple(names.index(n) for n in cls.counters)  # type: ignore[attr-defined]


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """A function reading ``names`` of an object as one tuple, in one C call: a
    checkpoint reads every changed client's state, and the Python loop it replaces
    was a fifth of a checkpoint's time."""
    if not names:
        return lambda obj: ()
    read = operator.attrgetter(*names)
    return read if len(names) > 1 else (lambda obj: (read(obj),))


def _setter(names: tuple[str, ...]) -> Callable[[Any, Sequence[Any]], None]:
    """A function storing a sequence into ``names`` of an object in one tuple store
    (``obj.a, obj.b = values``), compiled once per class: a restart restores every
    client, and a loop of ``setattr`` calls was a fifth of it. ``names`` are slot
    names, identifiers by construction."""
    if not names:
        return lambda obj, values: None
    assert all(name.isidentifier() for name in names)
    namespace: dict[str, Any] = {}
    targets = "".join(f"obj.{name}, " for name in names)
    exec(f"def store(obj, values):\n    {targets}= values\n", namespace)  # noqa: S102
    store: Callable[[Any, Sequence[Any]], None] = namespace["store"]
    return store


@_per_class
def _param_names(cls: type) -> tuple[str, ...]:
    """Keyword-only constructor parameters of ``cls``, read once per class:
    ``clone()`` runs for every new client, and ``inspect.signature`` took 40% of
    the hot path (see BENCHMARKS.md, "Where the time goes")."""
    sig = inspect.signature(cls.__init__)  # type: ignore[misc]
    return tuple(name for name, p in sig.parameters.items()
                 if name != "self" and p.kind is inspect.Parameter.KEYWORD_ONLY)


_NAMES = {"params": _param_names, "state": _state_names, "slots": _slot_names}


def _per_fields(make: Callable[[tuple[str, ...]], _T]) -> dict[str, Callable[[type], _T]]:
    """Per "params", "state" or "slots": ``make`` of a class's names, once per class."""
    def of(names: Callable[[type], tuple[str, ...]]) -> Callable[[type], _T]:
        return _per_class(lambda cls: make(names(cls)))
    return {fields: of(names) for fields, names in _NAMES.items()}


_SETTERS = _per_fields(_setter)  # functions storing a class's fields from a sequence
_GETTERS = _per_fields(_getter)  # functions reading them as a tuple
