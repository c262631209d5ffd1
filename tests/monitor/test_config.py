"""Config: every problem named by key and reason; env overrides; secrets from files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.config import ConfigError, build_config, load_config


def test_every_problem_is_reported_with_its_dotted_key() -> None:
    with pytest.raises(ConfigError) as err:
        build_config({
            "kafka": {"bootstrap_servers": "broker-without-port", "topics": []},
            "detectors": {"flooding": {"max_events": 0, "windw_s": 5}},
        }, env={})
    problems = err.value.problems
    assert any(p.startswith("kafka.bootstrap_servers:") and "host:port" in p for p in problems)
    assert any(p.startswith("kafka.topics:") for p in problems)
    assert any(p.startswith("detectors.flooding.max_events:") for p in problems)
    assert "detectors.flooding.windw_s: unknown key (did you mean window_s?)" in problems


def test_an_unknown_key_names_the_key_it_is_close_to_at_any_depth() -> None:
    with pytest.raises(ConfigError) as err:
        build_config({
            "kafka": {"topic": ["x"]},
            "store": {"url_flie": "/run/secrets/db"},
            "detectors": {"neighbors": {}, "rules": [{"name": "r", "max_event": 5}]},
            "alerts": {"receivers": {"sec": {"type": "slack", "chanel": "#sec"}}},
            "colour": "blue",
        }, env={"INFERWATCH_CHECKPOINT__INTERVALS": "5"})
    assert sorted(err.value.problems) == [
        "alerts.receivers.sec.chanel: unknown key (did you mean channel?)",
        "alerts.receivers.sec.type: unknown key (misspelt, or not valid here)",
        "checkpoint.intervals: unknown key (did you mean interval_s?)",
        "colour: unknown key (misspelt, or not valid here)",
        "detectors.neighbors: unknown key (did you mean neighbours?)",
        "detectors.rules.0.max_event: unknown key (did you mean max_events?)",
        "kafka.topic: unknown key (did you mean topics?)",
        "store.url_flie: unknown key (did you mean url_file?)",
    ]


def test_the_kafka_client_is_one_of_two_and_librdkafka_limits_are_named() -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"kafka": {"client": "librdkafka"}}, env={})
    assert err.value.problems == ["kafka.client: Input should be 'kafka-python' or 'confluent-kafka'"]
    timeouts = {"session_timeout_ms": 60_000, "max_poll_interval_ms": 30_000}
    with pytest.raises(ConfigError) as err:
        build_config({"kafka": {"client": "confluent-kafka", **timeouts}}, env={})
    assert err.value.problems == ["kafka.session_timeout_ms: Value error, 60000 is above "
                                  "max_poll_interval_ms (30000), which librdkafka refuses"]
    assert build_config({"kafka": timeouts}, env={}).kafka.client == "kafka-python"


def test_topic_names_are_kafkas_and_bad_input_does_not_go_back_to_the_topic_read() -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"kafka": {"topics": ["logs", "bad topic"], "dead_letter_topic": "x" * 250}},
                     env={})
    assert err.value.problems == [
        "kafka.topics: Value error, 'bad topic' is not a Kafka topic name "
        "(1 to 249 of A-Z a-z 0-9 . _ -)",
        f"kafka.dead_letter_topic: Value error, {'x' * 250!r} is not a Kafka topic name "
        "(1 to 249 of A-Z a-z 0-9 . _ -)"]
    with pytest.raises(ConfigError) as err:
        build_config({"kafka": {"topics": ["logs"], "dead_letter_topic": "logs"}}, env={})
    assert err.value.problems == ["kafka.dead_letter_topic: Value error, 'logs' is also in "
                                  "kafka.topics: its records would come back as bad input, "
                                  "over and over"]
    kafka = build_config({"kafka": {"topics": ["inference.logs-v2"],
                                    "dead_letter_topic": "inference.logs-v2_dlq"}}, env={}).kafka
    assert kafka.dead_letter_topic == "inference.logs-v2_dlq"


def test_environment_overrides_the_file_with_nested_keys() -> None:
    config = build_config({"kafka": {"group_id": "from-file"}}, env={
        "INFERWATCH_KAFKA__GROUP_ID": "from-env",
        "INFERWATCH_KAFKA__BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
        "INFERWATCH_CHECKPOINT__INTERVAL_S": "2.5",
    })
    assert config.kafka.group_id == "from-env"
    assert config.kafka.bootstrap_servers == ["k1:9092", "k2:9092"]
    assert config.checkpoint.interval_s == 2.5


def test_secrets_come_from_mounted_files_and_never_show_in_the_redacted_config(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "database-url"
    secret.write_text("postgresql://inferwatch:s3cr3t-pw@db:5432/inferwatch\n")
    config = build_config({"kafka": {"sasl_password_file": str(secret)}},
                          env={"INFERWATCH_STORE__URL_FILE": str(secret)})
    assert config.store.url.get_secret_value().endswith("@db:5432/inferwatch")
    assert "s3cr3t-pw" not in repr(config.redacted())
    assert "s3cr3t-pw" not in repr(config)


def test_an_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"store": {"url_file": str(tmp_path / "missing")}}, env={})
    assert err.value.problems[0].startswith("store.url_file: cannot read secret file")


def test_bad_yaml_says_where(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("kafka:\n  topics: [a, b\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "line" in err.value.problems[0] and "not valid YAML" in err.value.problems[0]


def test_check_config_cli_exits_2_and_lists_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("kafka:\n  bootstrap_servers: []\nstore:\n  pool_size: 0\n")
    with pytest.raises(SystemExit) as exit_:
        main(["check-config", "--config", str(path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "kafka.bootstrap_servers:" in err and "store.pool_size:" in err


def test_check_config_cli_accepts_a_good_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("kafka:\n  bootstrap_servers: [kafka-0:9092]\n  topics: [logs]\n"
                    "store:\n  url: postgresql://u:hunter2@db/x\n")
    caplog.set_level(logging.INFO)
    assert main(["check-config", "--config", str(path), "--show"]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "hunter2" not in out


def test_environment_strings_yaml_would_mangle_stay_strings() -> None:
    config = build_config({}, env={"INFERWATCH_KAFKA__CLIENT_ID": "#inferwatch",
                                   "INFERWATCH_KAFKA__GROUP_ID": "team: fraud"})
    assert config.kafka.client_id == "#inferwatch"
    assert config.kafka.group_id == "team: fraud"


def test_sasl_needs_a_mechanism_a_user_and_a_password_and_oauthbearer_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"kafka": {"security_protocol": "SASL_SSL"}}, env={})
    assert err.value.problems == [
        "kafka.sasl_mechanism: Value error, required with security_protocol SASL_SSL",
        "kafka.sasl_username: Value error, required with security_protocol SASL_SSL",
        "kafka.sasl_password: Value error, required with security_protocol SASL_SSL "
        "(or sasl_password_file)"]
    # inferwatch has no settings for an OAUTHBEARER token: it could never authenticate
    with pytest.raises(ConfigError) as err:
        build_config({"kafka": {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "OAUTHBEARER",
                                "sasl_username": "inferwatch", "sasl_password": "pw"}}, env={})
    assert err.value.problems == ["kafka.sasl_mechanism: Input should be 'PLAIN', "
                                  "'SCRAM-SHA-256' or 'SCRAM-SHA-512'"]
    kafka = build_config({"kafka": {"security_protocol": "SASL_PLAINTEXT",
                                    "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "inferwatch"}},
                         env={"INFERWATCH_KAFKA__SASL_PASSWORD": "pw"}).kafka
    assert kafka.sasl_password is not None and kafka.sasl_password.get_secret_value() == "pw"


def test_tls_files_must_be_readable(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    kafka = {"security_protocol": "SSL", "ssl_cafile": str(ca),
             "ssl_certfile": str(tmp_path / "missing.pem"), "ssl_keyfile": str(tmp_path)}
    with pytest.raises(ConfigError) as err:
        build_config({"kafka": kafka}, env={})
    assert err.value.problems == [
        f"kafka.ssl_certfile: Value error, cannot read '{tmp_path / 'missing.pem'}' "
        "(No such file or directory)",
        f"kafka.ssl_keyfile: Value error, cannot read '{tmp_path}' (Is a directory)"]
    ca_only = {"security_protocol": "SSL", "ssl_cafile": str(ca)}
    assert build_config({"kafka": ca_only}, env={}).kafka.ssl_cafile == str(ca)


@pytest.mark.parametrize(("url", "reason"), [
    ("mysql://inferwatch:hunter2@db/x", "the URL's scheme 'mysql' is not sqlite:// or postgresql://"),
    ("hunter2", "the URL's scheme is not sqlite:// or postgresql://"),
    ("postgresql://inferwatch:hunter2@db:port/x", "not a database URL (sqlite:///PATH, "
     "postgresql://USER:PASSWORD@HOST:PORT/DATABASE)"),
])
def test_a_store_url_the_daemon_cannot_use_is_named_without_its_password(
        url: str, reason: str) -> None:
    # the daemon used to die at start with SQLAlchemy's traceback
    with pytest.raises(ConfigError) as err:
        build_config({"store": {"url": url}}, env={})
    assert err.value.problems == [f"store.url: Value error, {reason}"]
    for good in ("sqlite:///x.db", "postgres://u:p@db/x", "postgresql+psycopg://u@db:5432/x"):
        assert build_config({"store": {"url": good}}, env={}).store.url.get_secret_value() == good


def test_slack_and_webhook_urls_must_be_http_and_secret_ones_are_not_shown() -> None:
    alerts = {"slack": {"base_url": "slack.com/api"},
              "receivers": {"ml": {"channel": None, "webhook_url": "hooks.slack.com/T0/B0/s3cr3t"},
                            "pager": {"url": "ftp://pager.example/s3cr3t"}}}
    with pytest.raises(ConfigError) as err:
        build_config({"alerts": alerts}, env={})
    assert sorted(err.value.problems) == [
        "alerts.receivers.ml.webhook_url: Value error, not an http(s):// URL",
        "alerts.receivers.pager.url: Value error, not an http(s):// URL",
        "alerts.slack.base_url: Value error, 'slack.com/api' is not an http(s):// URL"]
