"""``inferwatch check-config --connect`` against real parts: the test broker through
each Kafka client, this machine's PostgreSQL, and a local Slack Web API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from monitor.broker import EmbeddedBroker, free_port
from monitor.cli import main
from tests.alerts.fake_slack import Failure, FakeSlack


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    yield fake
    fake.close()


def _config(tmp_path: Path, **sections: object) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(sections))
    return str(path)


def test_every_part_reached_says_what_it_found(
        tmp_path: Path, broker: EmbeddedBroker, pg_url: str, slack: FakeSlack,
        kafka_client: str, capsys: pytest.CaptureFixture[str]) -> None:
    topic = f"preflight-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, 3)
    cfg = _config(tmp_path, kafka={"bootstrap_servers": [broker.bootstrap], "topics": [topic],
                                   "client": kafka_client},
                  store={"url": pg_url},
                  alerts={"slack": {"token": "xoxb-preflight-secret", "base_url": slack.base_url}})
    assert main(["check-config", "--config", cfg, "--connect"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == (f"kafka: OK — {broker.bootstrap} (PLAINTEXT, {kafka_client}): "
                      f"{topic} 3 partitions")
    assert out[2].startswith("store: OK — postgresql") and "answered in" in out[2]
    assert sorted(out[3:]) == [f"receiver {name}: OK — authenticated as inferwatch in Test, "
                               f"posting to {channel}"
                               for name, channel in (("ml", "ml-alerts"),
                                                     ("security", "security-oncall"))]
    assert [r.method for r in slack.requests] == ["auth.test", "auth.test"]  # nothing posted
    assert "xoxb-preflight-secret" not in "\n".join(out)


def test_a_webhook_receiver_is_not_called_and_says_so(
        tmp_path: Path, broker: EmbeddedBroker, slack: FakeSlack,
        capsys: pytest.CaptureFixture[str]) -> None:
    topic = f"preflight-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, 1)
    cfg = _config(tmp_path, kafka={"bootstrap_servers": [broker.bootstrap], "topics": [topic]},
                  store={"url": f"sqlite:///{tmp_path / 's.db'}"},
                  alerts={"receivers": {"oncall": {"webhook_url": slack.webhook_url}},
                          "route": {"receiver": "oncall"}})
    assert main(["check-config", "--config", cfg, "--connect"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith(f"{topic} 1 partition")
    assert lines[3:] == ["receiver oncall: NOT CHECKED — a webhook: not called (no request "
                         "to it is harmless)"]
    assert slack.requests == []


def test_a_missing_topic_an_unreachable_store_and_a_bad_token_fail_by_name(
        tmp_path: Path, broker: EmbeddedBroker, slack: FakeSlack, kafka_client: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    topic, missing = f"preflight-{uuid.uuid4().hex[:8]}", f"missing-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, 2)
    slack.method_failures["auth.test"] = [Failure(200, "invalid_auth")] * 2
    cfg = _config(tmp_path, kafka={"bootstrap_servers": [broker.bootstrap],
                                   "topics": [topic, missing], "client": kafka_client},
                  store={"url": f"postgresql://inferwatch:db-secret@127.0.0.1:{free_port()}/x"},
                  alerts={"slack": {"token": "xoxb-bad", "base_url": slack.base_url}})
    assert main(["check-config", "--config", cfg, "--connect"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1] == (f"kafka: FAILED — {broker.bootstrap} (PLAINTEXT, {kafka_client}): "
                        f"no topic {missing} (inferwatch creates none); found {topic} "
                        "2 partitions")
    assert lines[2].startswith("store: FAILED — OperationalError") and "refused" in lines[2]
    assert all("invalid_auth" in line and "FAILED" in line for line in lines[3:]), out
    assert "db-secret" not in out and "xoxb-bad" not in out


def test_a_routed_receiver_without_a_transport_fails_and_the_daemon_warns(
        tmp_path: Path, broker: EmbeddedBroker, slack: FakeSlack,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """Only the ML receiver given a webhook (no bot token): the default route still
    sends flooding, extraction and evasion alerts to the security receiver, which has
    no way to post them."""
    import logging

    from alerts.notify import build_notifiers
    from monitor.config import load_config
    from monitor.store import Store

    topic = f"preflight-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, 1)
    cfg = _config(tmp_path, kafka={"bootstrap_servers": [broker.bootstrap], "topics": [topic]},
                  store={"url": f"sqlite:///{tmp_path / 's.db'}"},
                  alerts={"receivers": {"ml": {"webhook_url": slack.webhook_url}}})
    assert main(["check-config", "--config", cfg, "--connect"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "receiver security: FAILED — no transport (no alerts.slack.token, no webhook_url): " \
           "the alerts routed to it (kind=~flooding|extraction|evasion) would not be sent" \
           in lines

    config = load_config(cfg)
    store = Store(config.store.url.get_secret_value())
    store.migrate()
    with caplog.at_level(logging.WARNING, logger="alerts.notify"):
        assert len(build_notifiers(config, store)) == 1  # the ML receiver still posts
    store.close()
    assert [r.getMessage() for r in caplog.records if r.name == "alerts.notify"] == [
        "alert receiver security has no transport (no alerts.slack.token, no webhook_url): "
        "the alerts routed to it (kind=~flooding|extraction|evasion) reach the console/JSONL "
        "sinks only"]
