"""Alert records made the way the pipeline makes them, a fake clock, a notifier
wired to the fake Slack."""

from __future__ import annotations

from typing import Any

from alerts.manager import AlertManager
from alerts.notify import Notifier, build_receivers
from alerts.sinks import record_json
from detectors.base import Finding
from monitor.config import AlertsConfig
from monitor.metrics import Metrics
from monitor.store import Store
from tests.alerts.fake_slack import FakeSlack

T0 = 1_700_000_000.0
DETECTOR = {"flooding": "flooding.rate", "extraction": "probing.boundary",
            "drift": "drift.psi", "evasion": "evasion.neighbours"}


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


class Alerts:
    """Findings through the real AlertManager → contract records (JSON strings)."""

    def __init__(self) -> None:
        self.manager = AlertManager()

    def fire(self, client: str | None, *, kind: str = "flooding", ts: float = T0,
             severity: str = "warning", model: str = "fraud-scorer",
             status: str = "firing", evidence: dict[str, Any] | None = None,
             summary: str | None = None, source_ip: str | None = None) -> str:
        subject = ({"client_id": client} if client is not None
                   else {"source_ip": source_ip} if source_ip is not None else {})
        finding = Finding(
            detector=DETECTOR[kind], kind=kind, severity=severity, status=status,  # type: ignore[arg-type]
            model=model, model_version="3.2.0", subject=subject,
            summary=summary or f"Client {client} flooded {model}: throttle the key.", ts=ts,
            evidence=evidence or {"requests_in_window": 900, "threshold": 600,
                                  "sample_request_ids": ["r-1", "r-2"]},
            atlas=("AML.T0029", "AML.T0034") if kind == "flooding" else ("AML.T0024.002",))
        record = self.manager.process(finding)
        assert record is not None
        return record_json(record)

    def resolve(self, client: str | None, **kw: Any) -> str:
        return self.fire(client, status="resolved", **kw)


def notify_config(slack: FakeSlack, *, token: bool = True, **alerts: Any) -> AlertsConfig:
    base: dict[str, Any] = {"slack": {"token": "xoxb-test-token", "base_url": slack.base_url}
                            if token else {}, "console": {"enabled": False}}
    return AlertsConfig.model_validate({**base, **alerts})


def make_notifier(url: str, slack: FakeSlack, clock: Clock, *, instance: str = "test",
                  metrics: Metrics | None = None, token: bool = True, **alerts: Any) -> Notifier:
    store = Store(url)
    store.migrate()
    config = notify_config(slack, token=token, **alerts)
    return Notifier(store, config, build_receivers(config), instance=instance,
                    metrics=metrics or Metrics(), clock=clock)


def run(notifier: Notifier, clock: Clock, seconds: float, step: float = 1.0) -> None:
    """Let ``seconds`` of fake time pass, ticking every ``step``."""
    end = clock.t + seconds
    while clock.t < end:
        clock.advance(min(step, end - clock.t))
        notifier.tick()
