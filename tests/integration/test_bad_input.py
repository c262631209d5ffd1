"""Bad input at volume: half the topic malformed in every way we know. The good
records are all processed (same alerts as a replay of them alone), the bad ones
counted by reason, and the daemon never stops."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from monitor.broker import EmbeddedBroker
from tests.integration.scenario import good_events
from tests.kafka_helpers import (
    canonical,
    daemon_config,
    produce,
    read_alerts,
    replayed_alerts,
    small_detectors,
    start_daemon,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BASE = b'{"ts":1767225600,"model":"fraud-scorer","model_version":"3.2.0","client_id":"bad"'
# (malformed value, the reason it must be counted under)
KINDS: list[tuple[bytes, str]] = [
    (b'{"ts":1767225600,"model":"\xff\xfe","model_version":"1"}', "not_utf8"),
    (b"\xff\xfe not text at all", "not_json"),
    (BASE[:-1] + b'\xc3\x28"}', "not_utf8"),
    (b"this is not json", "not_json"),
    (BASE, "not_json"),  # truncated
    (BASE + b',"confidence":NaN}', "not_json"),
    (b"\xef\xbb\xbf" + BASE + b"}", "not_json"),  # byte-order mark
    (b"", "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (b"null", "not_object"),
    (b"[" * 50_000 + b"]" * 50_000, "not_object"),
    (b'{"x":' * 50_000 + b"1" + b"}" * 50_000, "too_deep"),
    (BASE + b',"features":{"x":' + b"[" * 50_000 + b"]" * 50_000 + b"}}", "wrong_type"),
    (BASE + b',"request_id":"' + b"r" * 5000 + b'"}', "too_large"),
    (BASE.replace(b"1767225600", b"true") + b"}", "wrong_type"),
    (BASE + b',"confidence":"NaN"}', "wrong_type"),
    (BASE + b',"probabilities":"high"}', "wrong_type"),
    (BASE + b',"features":{"x":{"nested":[1,2]}}}', "wrong_type"),
    (b'{"model":"fraud-scorer","model_version":"3.2.0"}', "missing_field"),
    (b'{"ts":1767225600,"model_version":"3.2.0"}', "missing_field"),
    (BASE + b',"features":{"x":1e999}}', "not_finite"),
    (BASE + b',"embedding":[1.0,-1e999]}', "not_finite"),
    (BASE + b',"probabilities":[0.5,1.5]}', "out_of_range"),
    (BASE + b',"latency_ms":-3}', "out_of_range"),
    (BASE.replace(b"1767225600", b'"yesterday"') + b"}", "bad_timestamp"),
]
HUGE = (BASE + b',"request_id":"' + b"x" * 10_000_000 + b'"}', "too_large")  # a 10 MB string


def test_half_malformed_topic_processes_every_good_record_and_counts_the_bad_by_reason(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    good = good_events()
    values: list[tuple[bytes | None, bytes]] = []
    expected: dict[str, int] = {}
    for i, ev in enumerate(good):
        values.append((ev["client_id"].encode(), msgspec.json.encode(ev)))
        bad, reason = HUGE if i in (100, len(good) // 2) else KINDS[i % len(KINDS)]
        values.append((f"bad-{i % 7}".encode(), bad))
        expected[reason] = expected.get(reason, 0) + 1
    ends = produce(broker.bootstrap, topic, values)
    assert sum(ends.values()) == 2 * len(good)

    jsonl = tmp_path / "alerts.jsonl"
    cfg = daemon_config(broker.bootstrap, topic, f"sqlite:///{tmp_path / 's.db'}", jsonl,
                        group="bad", detectors=small_detectors(),
                        kafka={"max_poll_records": 500})
    d = start_daemon(cfg)
    try:
        wait_until(lambda: {p[1]: s.offset for p, s in d.daemon.pipeline.partitions.items()}
                   == ends, 120, "the daemon to read the whole topic")
    finally:
        d.stop()

    sample = d.daemon.metrics.registry.get_sample_value
    counted = {r: sample("inferwatch_bad_records_total", {"reason": r}) for r in expected}
    assert counted == {r: float(n) for r, n in expected.items()}
    ok = sum(sample("inferwatch_events_total", {"model": m, "result": "ok"}) or 0
             for m in ("fraud-scorer", "churn-model"))
    assert ok == len(good)

    expected_alerts = replayed_alerts(tmp_path, cfg, good)
    assert expected_alerts, "the good records must raise alerts for the comparison to mean much"
    assert canonical(read_alerts(jsonl)) == canonical(expected_alerts)
