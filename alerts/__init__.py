"""Alerts: the alert record, the manager that turns findings into alerts, the sinks."""

from alerts.model import Alert, fingerprint

__all__ = ["Alert", "fingerprint"]
