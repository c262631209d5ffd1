"""kafka-python runs rebalance listeners on its IO thread, which also sends the group
heartbeats: the state of newly assigned partitions is restored on the daemon's own
thread, so a long restore (a large state, a store outage) does not get the member
evicted and its partitions restored again and again."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from tests.integration.proxy import ProxiedBroker, TcpProxy, join_while_the_store_is_away
from tests.integration.scenario import good_events
from tests.kafka_helpers import daemon_config, encode_events, produce, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_store_outage_while_restoring_keeps_the_heartbeats_going(
        tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    events = good_events()
    pb = ProxiedBroker(tmp_path)
    try:
        pb.create_topic("heartbeats", 2)
        ends = produce(pb.bootstrap, "heartbeats", encode_events(events))
        with TcpProxy(("127.0.0.1", 5432)) as store:
            cfg = daemon_config(pb.bootstrap, "heartbeats", store.route(pg_url),
                                tmp_path / "alerts.jsonl", group="heartbeats",
                                kafka={"session_timeout_ms": 3000,
                                       "max_poll_interval_ms": 12000},
                                checkpoint={"interval_s": 0.5, "retry_max_s": 1.0})
            d = join_while_the_store_is_away(pb, store, cfg, lambda: caplog.text)
            try:
                connected = []
                for _ in range(35):  # 7 s: more than two session timeouts
                    connected.append(d.daemon.source.connected())
                    time.sleep(0.2)
                store.restore()
                wait_until(lambda: {pid[1]: s.offset for pid, s in
                                    list(d.daemon.pipeline.partitions.items())}
                           == ends,
                           60, "every event consumed once the store is back")
                assert all(connected), "the group session expired while the state was restored"
                assert "Heartbeat session expired" not in caplog.text
                assert caplog.text.count("partitions assigned") == 1  # not evicted, not again
            finally:
                d.stop()
    finally:
        pb.close()
