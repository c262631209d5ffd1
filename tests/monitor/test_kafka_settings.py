"""The SASL settings inferwatch derives from its config are accepted by each Kafka
client as it would use them, and so is any fetch size the config allows. (No SASL
broker test: the bundled broker cannot host one, see DEVELOPERS.md.) The clients are
built without connecting: kafka-python with an ``api_version``, librdkafka always."""

from __future__ import annotations

import typing

import pytest
from confluent_kafka import Consumer, KafkaException
from kafka import KafkaConsumer

from monitor import confluent_source, kafka_source
from monitor.broker import free_port
from monitor.config import ConfigError, KafkaConfig, build_config

MECHANISMS = typing.get_args(typing.get_args(KafkaConfig.model_fields["sasl_mechanism"].annotation)[0])


def _kafka(mechanism: str) -> KafkaConfig:
    return build_config({"kafka": {"bootstrap_servers": [f"127.0.0.1:{free_port()}"],
                                   "security_protocol": "SASL_PLAINTEXT",
                                   "sasl_mechanism": mechanism, "sasl_username": "inferwatch"}},
                        env={"INFERWATCH_KAFKA__SASL_PASSWORD": "pw-from-env"}).kafka


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_each_sasl_mechanism_reaches_kafka_python_with_the_user_and_password(
        mechanism: str) -> None:
    consumer = KafkaConsumer(group_id="g", api_version=(2, 8),
                             **kafka_source.connection_settings(_kafka(mechanism)))
    try:
        assert {k: consumer.config[k] for k in ("security_protocol", "sasl_mechanism",
                                                "sasl_plain_username", "sasl_plain_password")} == {
            "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism,
            "sasl_plain_username": "inferwatch", "sasl_plain_password": "pw-from-env"}
    finally:
        consumer.close()


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_each_sasl_mechanism_is_accepted_by_librdkafka(mechanism: str) -> None:
    settings = confluent_source.connection_settings(_kafka(mechanism))
    assert (settings["sasl.mechanism"], settings["sasl.username"], settings["sasl.password"]) == (
        mechanism, "inferwatch", "pw-from-env")
    Consumer({**settings, "group.id": "g"}).close()  # refuses unknown keys and missing values
    without_password = {k: v for k, v in settings.items() if k != "sasl.password"}
    with pytest.raises(KafkaException, match=r"sasl\.password must be set"):
        Consumer({**without_password, "group.id": "g"})


@pytest.mark.parametrize("bound", ["ge", "le"])
def test_librdkafka_takes_every_fetch_size_and_timeout_the_config_allows(bound: str) -> None:
    # the config's bounds are librdkafka's: a consumer refused at start killed the daemon
    # (a fetch_max_bytes below 1,000,000 did, before message.max.bytes followed it)
    fields = ("fetch_max_bytes", "max_partition_fetch_bytes", "max_poll_interval_ms",
              "session_timeout_ms")
    limits = {f: next(getattr(m, bound) for m in KafkaConfig.model_fields[f].metadata
                      if getattr(m, bound, None) is not None) for f in fields}
    cfg = build_config({"kafka": {"bootstrap_servers": [f"127.0.0.1:{free_port()}"],
                                  "client": "confluent-kafka", **limits}}, env={}).kafka
    source = confluent_source.ConfluentSource(cfg, on_assign=lambda pids: {},
                                              on_revoke=lambda pids: None)
    source.close()
    beyond = {f: v + (1 if bound == "le" else -1) for f, v in limits.items()}
    with pytest.raises(ConfigError) as err:
        build_config({"kafka": beyond}, env={})
    assert sorted(p.split(":")[0] for p in err.value.problems) == [f"kafka.{f}" for f in
                                                                    sorted(fields)]
