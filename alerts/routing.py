"""The routing tree (after Alertmanager's ``route``): an alert walks from the root
into the first child whose matchers it satisfies (further siblings too while
``continue`` is set); the deepest matching nodes decide its receiver and its
grouping. ``group_wait``, ``group_interval`` and ``repeat_interval`` are inherited.

>>> from alerts.config import NotifyConfig
>>> tree = RouteTree(NotifyConfig().route)
>>> [r.receiver for r in tree.match({"kind": "extraction", "model": "m"})]
['security']
>>> [r.receiver for r in tree.match({"kind": "drift", "model": "m"})]
['ml']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from alerts.config import RouteConfig
from alerts.matchers import Matcher, match_all, parse_all
from alerts.model import canonical_json

ROOT_DEFAULTS = {"group_by": ("kind", "model"), "group_wait_s": 30.0,
                 "group_interval_s": 300.0, "repeat_interval_s": 4 * 3600.0}


@dataclass(frozen=True)
class Route:
    id: str  # position in the tree: "0", "0.1", …
    receiver: str
    matchers: tuple[Matcher, ...]
    group_by: tuple[str, ...]
    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float
    continue_: bool
    children: tuple[Route, ...] = field(default=())

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        if not match_all(self.matchers, labels):
            return []
        found: list[Route] = []
        for child in self.children:
            hit = child.match(labels)
            if hit:
                found.extend(hit)
                if not child.continue_:
                    break
        return found or [self]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        return {name: labels.get(name, "") for name in self.group_by}

    def group_key(self, labels: Mapping[str, str]) -> str:
        """Stable key of the alert's group under this route."""
        return f"{self.id}:{canonical_json(self.group_labels(labels)).decode()}"


def _build(cfg: RouteConfig, parent: dict[str, object], rid: str, receiver: str | None) -> Route:
    inherited = dict(parent)
    for key in ROOT_DEFAULTS:
        value = getattr(cfg, key)
        if value is not None:
            inherited[key] = tuple(value) if key == "group_by" else value
    receiver = cfg.receiver or receiver
    assert receiver is not None, "the root route needs a receiver (checked by the config)"
    children = tuple(_build(c, inherited, f"{rid}.{i}", receiver) for i, c in enumerate(cfg.routes))
    return Route(id=rid, receiver=receiver, matchers=parse_all(cfg.matchers),
                 group_by=inherited["group_by"],  # type: ignore[arg-type]
                 group_wait_s=inherited["group_wait_s"],  # type: ignore[arg-type]
                 group_interval_s=inherited["group_interval_s"],  # type: ignore[arg-type]
                 repeat_interval_s=inherited["repeat_interval_s"],  # type: ignore[arg-type]
                 continue_=cfg.continue_, children=children)


class RouteTree:
    def __init__(self, config: RouteConfig) -> None:
        self.root = _build(config, dict(ROOT_DEFAULTS), "0", config.receiver)
        self.by_id: dict[str, Route] = {}
        stack = [self.root]
        while stack:
            node = stack.pop()
            self.by_id[node.id] = node
            stack.extend(node.children)

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        # the root matches every alert, whatever its own matchers say
        found: list[Route] = []
        for child in self.root.children:
            hit = child.match(labels)
            if hit:
                found.extend(hit)
                if not child.continue_:
                    break
        return found or [self.root]

    def route(self, route_id: str) -> Route:
        return self.by_id.get(route_id, self.root)
