"""kill -9 mid-stream and restart: exactly the alerts of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
import yaml

from alerts.sinks import JsonlSink
from monitor.broker import EmbeddedBroker
from monitor.config import build_config
from monitor.replay import replay
from tests.integration.scenario import good_events
from tests.kafka_helpers import (
    canonical,
    daemon_config,
    encode_events,
    produce,
    read_alerts,
    small_detectors,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _stored_offsets(db: Path, group: str) -> dict[int, int]:
    """Offsets the daemon has durably checkpointed, per partition."""
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute(
                "SELECT scope, next_offset FROM checkpoints WHERE scope LIKE ?",
                (f"partition:{group}:%",),
            ).fetchall()
    except sqlite3.OperationalError:
        return {}
    return {int(scope.rsplit(":", 1)[1]): off for scope, off in rows if off is not None}


def _start(config_file: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "run", "--config", str(config_file)],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_sigkill_mid_stream_then_restart_raises_exactly_the_uninterrupted_alerts(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    events = good_events()
    ends = produce(broker.bootstrap, topic, encode_events(events))
    total = sum(ends.values())
    db = tmp_path / "state.db"
    jsonl = tmp_path / "alerts.jsonl"
    cfg = daemon_config(broker.bootstrap, topic, f"sqlite:///{db}", jsonl, group="crash",
                        detectors=small_detectors(),
                        kafka={"max_poll_records": 40}, checkpoint={"interval_s": 0.05})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    log = tmp_path / "daemon.log"

    # two kills at different points of the stream, then a run to the end
    for fraction in (0.25, 0.6):
        proc = _start(config_file, log)
        try:
            wait_until(lambda f=fraction: sum(_stored_offsets(db, "crash").values()) >= f * total,
                       120, f"{fraction:.0%} of the stream checkpointed")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert sum(_stored_offsets(db, "crash").values()) < total, "killed too late to matter"

    proc = _start(config_file, log)
    try:
        wait_until(lambda: _stored_offsets(db, "crash") == ends, 120, "the end of the topic")
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]

    archive = tmp_path / "archive.jsonl"
    archive.write_bytes(b"".join(msgspec.json.encode(e) + b"\n" for e in events))
    uninterrupted = tmp_path / "uninterrupted.jsonl"
    replay(archive, build_config(cfg, env={}), [JsonlSink(uninterrupted)])

    expected = read_alerts(uninterrupted)
    assert len(expected) >= 4, "the stream must raise alerts for the comparison to mean much"
    assert canonical(read_alerts(jsonl)) == canonical(expected)
