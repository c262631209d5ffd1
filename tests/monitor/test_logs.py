"""The daemon's log while Kafka is down: the clients' repeated lines are held back,
the daemon's own lines are not."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from monitor.logs import RepeatFilter


def _record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_client_line_repeated_with_new_numbers_is_let_through_once_a_minute() -> None:
    now = [0.0]
    f = RepeatFilter(every_s=60.0, clock=lambda: now[0])
    passed = []
    for i in range(200):  # a retry every 0.5 s, each with its own backoff and node
        now[0] = i * 0.5
        rec = _record("kafka.net.manager", "Bootstrap connection to bootstrap-%d failed "
                      "(backoff %.2f secs)", i % 3, 0.1 * i, level=logging.WARNING)
        if f.filter(rec):
            passed.append((now[0], rec.getMessage()))
    assert [t for t, _ in passed] == [0.0, 60.0]
    assert passed[1][1] == ("Bootstrap connection to bootstrap-0 failed (backoff 12.00 secs) "
                            "(119 more like it held back in the last 60s)")


def test_other_shapes_levels_and_the_daemons_own_lines_are_never_held() -> None:
    f = RepeatFilter(every_s=60.0, clock=lambda: 0.0)
    kept = [f.filter(r) for r in (
        _record("librdkafka", "FAIL broker down"),
        _record("librdkafka", "FAIL broker down"),  # held
        _record("librdkafka", "FAIL broker down", level=logging.WARNING),
        _record("librdkafka", "SASL authentication failed"),
        _record("kafka.conn", "FAIL broker down"),
        _record("kafkaesque", "FAIL broker down"),  # not a client's logger
        _record("kafkaesque", "FAIL broker down"),
        *(_record("monitor.daemon", "cannot reach Kafka (%s); retrying", "x") for _ in range(3)),
    )]
    assert kept == [True, False, True, True, True, True, True, True, True, True]


def test_a_malformed_client_line_is_left_to_the_handler_not_raised_in_the_client() -> None:
    now = [0.0]
    f = RepeatFilter(every_s=60.0, clock=lambda: now[0])
    assert f.filter(_record("kafka.conn", "sent %s to %s", "x"))  # one argument short
    assert not f.filter(_record("kafka.conn", "sent %s to %s", "x"))
    now[0] = 61.0
    late = _record("kafka.conn", "sent %s to %s", "x")
    assert f.filter(late)  # let through unchanged: logging reports the bad call itself
    assert late.msg == "sent %s to %s"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_the_daemon_log_stays_readable_while_kafka_is_unreachable(
        tmp_path: Path, client: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": [f"127.0.0.1:{_closed_port()}"], "topics": ["t"],
                  "client": client},
        "store": {"url": f"sqlite:///{tmp_path / 'iw.db'}"},
        "http": {"enabled": False},
        "jobs": {"enabled": False},
    }))
    proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "run", "--config", str(config)],
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(15)  # kafka-python gives up a bootstrap after 5 s: two attempts and more
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    lines = err.splitlines()
    client_lines = [line for line in lines if " kafka." in line or " librdkafka:" in line]
    own = [line for line in lines if "monitor." in line and "cannot" in line]
    assert own, err[-2000:]
    # one line per shape: a handful, where the clients wrote 30 (kafka-python) and 300
    # (librdkafka) lines in 15 s without the filter
    assert 1 <= len(client_lines) <= 6, "\n".join(client_lines)
