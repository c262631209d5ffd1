"""The foundation's promises, end to end over a real Kafka-protocol broker."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from monitor.broker import EmbeddedBroker
from monitor.config import build_config
from monitor.pipeline import Pipeline
from tests.integration.scenario import (
    ALLOWED_MODELS,
    MAX_MESSAGE_BYTES,
    SMALL,
    good_events,
    with_malformed,
)
from tests.kafka_helpers import (
    DaemonThread,
    canonical,
    daemon_config,
    encode_events,
    produce,
    read_alerts,
    replayed_alerts,
    small_detectors,
    start_daemon,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _config(broker: EmbeddedBroker, topic: str, store_url: str, jsonl: Path, **kw: object) -> dict:
    return daemon_config(
        broker.bootstrap, topic, store_url, jsonl,
        detectors=small_detectors(),
        events={"allowed_models": ALLOWED_MODELS, "max_message_bytes": MAX_MESSAGE_BYTES},
        **kw,
    )


def _consumed_all(daemon: object, ends: dict[int, int]) -> bool:
    parts = daemon.daemon.pipeline.partitions  # type: ignore[attr-defined]
    return all(
        (pid[1] in ends and state.offset is not None and state.offset >= ends[pid[1]])
        for pid, state in parts.items()
    ) and len(parts) == len(ends)


def test_malformed_records_are_counted_and_skipped_and_alerts_match_replay(
    broker: EmbeddedBroker, topic: str, tmp_path: Path, store_url: str, kafka_client: str
) -> None:
    good = good_events()
    values, expected_bad = with_malformed(good)
    ends = produce(broker.bootstrap, topic, values)
    jsonl = tmp_path / "alerts.jsonl"
    group = f"g-{topic}"  # one group per test: see DEVELOPERS.md on Tansu's groups
    cfg = _config(broker, topic, store_url, jsonl, group=group,
                  kafka={"dead_letter_topic": f"{topic}-dlq", "client": kafka_client})
    broker.create_topic(f"{topic}-dlq", 1)

    d = start_daemon(cfg)
    try:
        wait_until(lambda: _consumed_all(d, ends), 90, "the daemon to consume the topic")
    finally:
        d.stop()
    assert type(d.daemon.source).__name__ == {"kafka-python": "KafkaSource",
                                              "confluent-kafka": "ConfluentSource"}[kafka_client]

    metrics = d.daemon.metrics.registry
    for reason, n in expected_bad.items():
        assert metrics.get_sample_value("inferwatch_bad_records_total", {"reason": reason}) == n
    ok = sum(metrics.get_sample_value("inferwatch_events_total", {"model": m, "result": "ok"})
             or 0 for m in ALLOWED_MODELS)
    assert ok == len(good)
    # every alert record delivered to the file: nothing left for the chart's alert rule
    assert metrics.get_sample_value("inferwatch_outbox_depth",
                                    {"sink": f"jsonl:{jsonl.resolve()}"}) == 0

    kafka_alerts = read_alerts(jsonl)
    kinds = {(r["kind"], r["subject"].get("client_id")) for r in kafka_alerts}
    assert ("flooding", SMALL.flooder) in kinds
    assert ("extraction", SMALL.attacker) in kinds
    assert any(r["kind"] == "drift" and r["model"] == SMALL.drift_model for r in kafka_alerts)
    assert canonical(kafka_alerts) == canonical(replayed_alerts(tmp_path, cfg, good))

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    committed = admin.list_group_offsets(group)[group]
    admin.close()
    assert {tp.partition: om.offset for tp, om in committed.items() if tp.topic == topic} == ends

    dlq = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                        consumer_timeout_ms=3000)
    dlq.assign([TopicPartition(f"{topic}-dlq", 0)])
    reasons = [dict(m.headers)["inferwatch-reason"].decode() for m in dlq]
    dlq.close()
    assert sorted(reasons) == sorted(r for r, n in expected_bad.items() for _ in range(n))


def test_two_daemons_in_one_group_raise_the_per_client_alerts_of_one(
    broker: EmbeddedBroker, topic: str, tmp_path: Path, pg_url: str, kafka_client: str
) -> None:
    good = good_events()
    ends = produce(broker.bootstrap, topic, encode_events(good))
    files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    daemons = [start_daemon(_config(broker, topic, pg_url, f, instance=f.stem, group=f"pair-{kafka_client}",
                                    kafka={"client": kafka_client}))
               for f in files]
    try:
        wait_until(lambda: all(d.daemon.pipeline.partitions for d in daemons), 60,
                   "both daemons to own partitions")
        owned = [set(d.daemon.pipeline.partitions) for d in daemons]
        assert not owned[0] & owned[1] and len(owned[0] | owned[1]) == 3
        wait_until(
            lambda: sum((s.offset or 0) for d in daemons
                        for s in d.daemon.pipeline.partitions.values()) >= sum(ends.values()),
            90, "the pair to consume the topic")
    finally:
        for d in daemons:
            d.stop()

    def per_client(records: list[dict]) -> list[bytes]:
        return canonical([r for r in records if "client_id" in r["subject"]])

    together = [r for f in files for r in read_alerts(f)]
    single = replayed_alerts(tmp_path, _config(broker, topic, pg_url, tmp_path / "x.jsonl"), good)
    assert per_client(single), "the scenario must raise per-client alerts"
    assert per_client(together) == per_client(single)


def test_alerts_reach_the_sinks_without_waiting_for_a_checkpoint(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    """Alert records go to the outbox as they are raised: with checkpoints an hour
    apart, the flooder's alert is in the sink while no state has been stored, and
    the checkpoint at shutdown adds no second copy."""
    good = good_events()
    ends = produce(broker.bootstrap, topic, encode_events(good))
    jsonl = tmp_path / "alerts.jsonl"
    db = tmp_path / "store.db"
    cfg = _config(broker, topic, f"sqlite:///{db}", jsonl,
                  checkpoint={"interval_s": 3600, "max_events": 10**9})

    def stored_partitions() -> int:
        with closing(sqlite3.connect(db)) as conn:
            return conn.execute(
                "SELECT count(*) FROM checkpoints WHERE scope LIKE 'partition:%'").fetchone()[0]

    d = start_daemon(cfg)
    try:
        wait_until(lambda: any(r["kind"] == "flooding" for r in read_alerts(jsonl)), 60,
                   "the flooding alert in the sink")
        assert stored_partitions() == 0
        wait_until(lambda: _consumed_all(d, ends), 90, "the daemon to consume the topic")
    finally:
        d.stop()
    assert stored_partitions() == 3
    alerts = read_alerts(jsonl)
    assert canonical(alerts) == canonical(replayed_alerts(tmp_path, cfg, good))


class _UncoveredAtDelivery:
    """A sink noting, for each record it is sent, how many consumed events the stored
    state does not cover yet (0: a checkpoint ran between the raise and the delivery)."""

    local = True
    name = "uncovered-at-delivery"

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.seen: list[tuple[str, int]] = []

    def send(self, records: Sequence[str]) -> None:
        self.seen += [(json.loads(r)["kind"], self.pipeline.events_since_checkpoint)
                      for r in records]

    def delivered_prefix(self, records: Sequence[str]) -> int:
        return 0


def test_an_alert_is_delivered_before_the_checkpoint_of_the_batch_that_raised_it(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    """With a checkpoint due on every pass of the loop, the flooder's alert still
    reaches the sinks ahead of the checkpoint that stores the batch which raised it:
    delivery never waits for a checkpoint's write."""
    produce(broker.bootstrap, topic, encode_events(good_events()))
    cfg = _config(broker, topic, f"sqlite:///{tmp_path / 'store.db'}",
                  tmp_path / "alerts.jsonl", checkpoint={"interval_s": 0.001})
    d = DaemonThread(build_config(cfg, env={}))
    probe = _UncoveredAtDelivery(d.daemon.pipeline)
    d.daemon.dispatcher.sinks.append(probe)
    d.start()
    try:
        wait_until(lambda: any(kind == "flooding" for kind, _ in probe.seen), 60,
                   "the flooding alert at the probe")
    finally:
        d.stop()
    # per-client alerts are raised while a batch is processed (model-wide ones may be
    # raised by the watermark alone, in a pass that consumed nothing)
    flooding = [uncovered for kind, uncovered in probe.seen if kind == "flooding"]
    assert flooding and all(n > 0 for n in flooding), probe.seen
