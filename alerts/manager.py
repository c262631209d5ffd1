"""Turns detector findings into alert records: one alert per fingerprint and
episode, updated by repeats, closed by resolution (Alertmanager's model)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from alerts.model import Alert, fingerprint
from detectors.base import Finding


class AlertManager:
    """Keeps the firing alerts and emits the record of every change.

    >>> from dataclasses import replace
    >>> from detectors.base import Finding
    >>> m = AlertManager()
    >>> f = Finding(detector="d", kind="flooding", severity="warning", status="firing",
    ...             model="m", model_version="1", subject={"client_id": "c"},
    ...             summary="s", ts=10.0)
    >>> [m.process(f)["count"], m.process(f)["count"]]
    [1, 2]
    >>> m.process(replace(f, status="resolved", ts=20.0))["status"]
    'resolved'
    """

    def __init__(self) -> None:
        self.firing: dict[str, Alert] = {}
        self.changed: dict[str, Alert] = {}

    def load(self, alerts: Iterable[Alert]) -> None:
        """Replace the firing alerts with the stored ones (after a restart or a
        rebalance: another replica may have resolved some meanwhile)."""
        self.firing = {a.fingerprint: a for a in alerts if a.status == "firing"}
        self.firing.update((fp, a) for fp, a in self.changed.items() if a.status == "firing")

    def process(self, finding: Finding) -> dict[str, Any] | None:
        """Apply one finding; the record to send, or None when nothing changed."""
        fp = fingerprint(finding.detector, finding.model, finding.subject)
        alert = self.firing.get(fp)
        if finding.status == "resolved":
            if alert is None:
                return None
            del self.firing[fp]
            alert.status = "resolved"
        elif alert is None:
            alert = Alert(
                fingerprint=fp,
                detector=finding.detector,
                kind=finding.kind,
                severity=finding.severity,
                status="firing",
                model=finding.model,
                model_version=finding.model_version,
                subject=dict(finding.subject),
                summary=finding.summary,
                first_seen=finding.ts,
                last_seen=finding.ts,
                atlas=finding.atlas,
            )
            self.firing[fp] = alert
        else:
            alert.count += 1
        alert.last_seen = max(alert.last_seen, finding.ts)
        alert.severity = finding.severity
        alert.model_version = finding.model_version
        alert.summary = finding.summary
        alert.evidence = finding.evidence
        self.changed[fp] = alert
        return alert.record()
