"""When the daemon checkpoints: on its interval, after enough events, and soon after an
alert (which is delivered once stored), except while it catches up on a backlog."""

from __future__ import annotations

from monitor.config import build_config
from monitor.daemon import checkpoint_due

CP = build_config({"checkpoint": {"interval_s": 5, "max_events": 1000, "alert_flush_s": 0.5,
                                  "catch_up_records": 10_000}}, env={}).checkpoint


def test_an_alert_is_stored_soon_after_it_is_raised_on_a_live_stream() -> None:
    assert not checkpoint_due(CP, 0.3, 10, alerts_pending=True, unread=200)
    assert checkpoint_due(CP, 0.6, 10, alerts_pending=True, unread=200)
    assert not checkpoint_due(CP, 0.6, 10, alerts_pending=False, unread=200)


def test_on_a_backlog_alerts_wait_for_the_interval() -> None:
    assert not checkpoint_due(CP, 0.6, 10, alerts_pending=True, unread=50_000)
    assert not checkpoint_due(CP, 4.9, 999, alerts_pending=True, unread=50_000)
    assert checkpoint_due(CP, 5.0, 10, alerts_pending=True, unread=50_000)
    assert checkpoint_due(CP, 0.1, 1000, alerts_pending=True, unread=50_000)
    # the backlog is read: the waiting alert goes out with the next step
    assert checkpoint_due(CP, 2.0, 10, alerts_pending=True, unread=10_000)
