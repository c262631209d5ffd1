"""Label matchers, Alertmanager style: ``name=value``, ``name!=value``,
``name=~regex``, ``name!~regex`` (regexes are anchored). One parser serves the
routing tree, inhibition rules, silences and the command line.

An alert's labels are its identity and classification (``kind``, ``severity``,
``status``, ``model``, ``model_version``, ``detector``, ``fingerprint``, ``id``)
plus its subject (``client_id``, …).

>>> m = Matcher.parse("kind=~flooding|extraction")
>>> m.matches({"kind": "flooding"}), m.matches({"kind": "drift"})
(True, False)
>>> Matcher.parse("client_id!=key-1").matches({})
True
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

_OPS = ("=~", "!~", "!=", "=")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
CORE_LABELS = ("kind", "severity", "status", "model", "model_version", "detector",
               "fingerprint", "id")


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse ``name<op>value``; raise ValueError saying what is wrong."""
        text = text.strip()
        found = [(text.find(op), -len(op), op) for op in _OPS if text.find(op) > 0]
        if found:
            idx, _, op = min(found)  # the first operator wins, the longer one at a tie
            name, value = text[:idx].strip(), text[idx + len(op):].strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            if not _NAME.match(name):
                raise ValueError(f"{text!r}: label name {name!r} is not a name")
            regex = None
            if op in ("=~", "!~"):
                try:
                    regex = re.compile(f"(?:{value})\\Z")
                except re.error as exc:
                    raise ValueError(f"{text!r}: bad regular expression ({exc})") from None
            return cls(name, op, value, regex)
        raise ValueError(f"{text!r} is not a matcher (name=value, name!=value, name=~regex, "
                         "name!~regex)")

    def matches(self, labels: Mapping[str, str]) -> bool:
        have = labels.get(self.name, "")
        if self.op == "=":
            return have == self.value
        if self.op == "!=":
            return have != self.value
        assert self._regex is not None
        hit = self._regex.match(have) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


def parse_all(texts: Iterable[str]) -> tuple[Matcher, ...]:
    return tuple(Matcher.parse(t) for t in texts)


def match_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def labels_of(record: Mapping[str, Any]) -> dict[str, str]:
    """The labels of a contract alert record (subject keys never shadow core labels)."""
    labels = {str(k): str(v) for k, v in (record.get("subject") or {}).items()}
    for name in CORE_LABELS:
        if name in record:
            labels[name] = str(record[name])
    return labels
