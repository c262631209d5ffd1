"""When the daemon puts raised alert records in the outbox: ``alert_flush_s`` after
the oldest was raised, without a checkpoint; while the store is away they wait."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from monitor.config import build_config
from monitor.daemon import Daemon
from tests.monitor.streams import stream_records


def _daemon(tmp_path: Path, flush_s: float) -> Daemon:
    config = build_config({"store": {"url": f"sqlite:///{tmp_path / 's.db'}"},
                           "checkpoint": {"alert_flush_s": flush_s},
                           "detectors": {"flooding": {"max_events": 300}},
                           "http": {"enabled": False}, "jobs": {"enabled": False},
                           "alerts": {"console": {"enabled": False}}}, env={})
    daemon = Daemon(config, sinks=[])
    daemon.store.migrate()
    daemon.store_ok = True
    daemon.pipeline.process(("logs", 0), stream_records())
    assert daemon.pipeline.pending, "the flooder must raise an alert"
    return daemon


def _outbox(daemon: Daemon) -> list[str]:
    return [r.record for r in daemon.store.outbox_after("x", limit=1000)]


def test_alert_records_wait_alert_flush_s_then_go_to_the_outbox(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path, flush_s=0.5)
    raised = [e.record for e in daemon.pipeline.pending]
    daemon._journal(100.0)
    daemon._journal(100.4)
    assert _outbox(daemon) == []
    daemon._journal(100.5)
    assert _outbox(daemon) == raised and daemon.pipeline.pending == []
    daemon.store.close()


def test_while_the_store_is_away_alert_records_stay_pending(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path, flush_s=0.0)
    raised = list(daemon.pipeline.pending)
    with daemon.store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alert_outbox"))
    daemon._journal(100.0)
    assert not daemon.store_ok and daemon.pipeline.pending == raised
    daemon._journal(101.0)  # not retried on every step: the checkpoint retries with backoff
    assert daemon.pipeline.pending == raised
    daemon.store.migrate()  # the store is back; a checkpoint succeeded
    daemon.store_ok = True
    daemon._journal(102.0)
    assert _outbox(daemon) == [e.record for e in raised] and daemon.pipeline.pending == []
    daemon.store.close()
