"""The alert record (see DESIGN.md, "Alert record — contract")."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

KINDS = ("flooding", "extraction", "evasion", "confidence", "drift", "version_regression")
_json = msgspec.json.Encoder(order="sorted")


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON (sorted keys): same record, same bytes."""
    return _json.encode(value)


def fingerprint(detector: str, model: str, subject: dict[str, str]) -> str:
    """Stable identity of an alert: a SHA-256 of its labels only (never ``hash()``)."""
    labels = {"detector": detector, "model": model, "subject": subject}
    return hashlib.sha256(canonical_json(labels)).hexdigest()[:16]


def delivery_key(scope: str, record: dict[str, Any]) -> str:
    """Identity of one record: its episode (``id``), the change it reports
    (``status``, ``count``) and who raised it (``scope``, the consumer group).
    The outbox keeps one row per key, so a record raised again after a restart
    (replaying events its state was not checkpointed with) is not sent twice."""
    raw = f"{scope}\n{record['id']}\n{record['status']}\n{record['count']}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


@dataclass(slots=True)
class Alert:
    """One alert; repeats of its fingerprint update it, resolution closes it.

    ``first_seen`` and ``last_seen`` are event times (Unix seconds), so a replay
    produces the same records as the live run.
    """

    fingerprint: str
    detector: str
    kind: str
    severity: str
    status: str
    model: str
    model_version: str
    subject: dict[str, str]
    summary: str
    first_seen: float
    last_seen: float
    count: int = 1
    evidence: dict[str, Any] = field(default_factory=dict)
    atlas: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """One id per episode: the fingerprint and when the episode started."""
        raw = f"{self.fingerprint}:{self.first_seen!r}".encode()
        return hashlib.sha256(raw).hexdigest()[:24]

    def record(self) -> dict[str, Any]:
        """The contract record every sink receives."""
        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "detector": self.detector,
            "kind": self.kind,
            "severity": self.severity,
            "status": self.status,
            "model": self.model,
            "model_version": self.model_version,
            "subject": dict(self.subject),
            "summary": self.summary,
            "evidence": self.evidence,
            "atlas": list(self.atlas),
            "first_seen": rfc3339(self.first_seen),
            "last_seen": rfc3339(self.last_seen),
            "count": self.count,
        }
