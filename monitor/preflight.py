"""``inferwatch check-config --connect``: reach what the configuration names, before
a deployment finds out the hard way. Kafka (through the configured client, with
its TLS and SASL settings: are the topics there, with how many partitions), the
store (a connection and one query) and each Slack receiver (``auth.test``, which
posts nothing). Webhooks are not called: no request to them is harmless."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

from monitor.config import Config, KafkaConfig
from monitor.logs import short_error

KAFKA_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: not checked
    detail: str

    def line(self) -> str:
        verdict = "NOT CHECKED" if self.ok is None else "OK" if self.ok else "FAILED"
        return f"{self.name}: {verdict} — {self.detail}"


def preflight(config: Config) -> list[Check]:
    """One check per part the configuration names, in order: Kafka, the store, the
    Slack receivers. A check that fails says why; none raises."""
    checks = [_guarded("kafka", lambda: _kafka(config.kafka)),
              _guarded("store", lambda: _store(config.store.url.get_secret_value()))]
    from alerts.notify import build_receivers, routes_without_transport

    receivers = build_receivers(config.alerts)
    for name, receiver in sorted(receivers.items()):
        check = getattr(receiver, "check", None)
        label = f"receiver {name}"
        if check is None:
            checks.append(Check(label, None, "a webhook: not called (no request to it is "
                                             "harmless)"))
            continue
        checks.append(_guarded(label, functools.partial(_slack, receiver, check)))
    if receivers:  # with none at all, alerts go to the local sinks by design
        for name, routes in sorted(routes_without_transport(config.alerts, receivers).items()):
            checks.append(Check(f"receiver {name}", False,
                                "no transport (no alerts.slack.token, no webhook_url): the "
                                f"alerts routed to it ({'; '.join(routes)}) would not be sent"))
    return checks


def _guarded(name: str, run: Callable[[], tuple[bool, str]]) -> Check:
    try:
        ok, detail = run()
    except Exception as exc:  # every failure is the check's answer
        ok, detail = False, short_error(exc)
    return Check(name, ok, detail)


def _kafka(cfg: KafkaConfig) -> tuple[bool, str]:
    partitions = _confluent_topics(cfg) if cfg.client == "confluent-kafka" else _kp_topics(cfg)
    where = f"{', '.join(cfg.bootstrap_servers)} ({cfg.security_protocol}, {cfg.client})"
    wanted = [*cfg.topics, *([cfg.dead_letter_topic] if cfg.dead_letter_topic else [])]
    missing = [t for t in wanted if not partitions.get(t)]
    found = ", ".join(f"{t} {partitions[t]} partition{'s' if partitions[t] != 1 else ''}"
                      for t in wanted if partitions.get(t))
    if missing:
        return False, (f"{where}: no topic {', '.join(missing)} (inferwatch creates none)"
                       + (f"; found {found}" if found else ""))
    return True, f"{where}: {found}"


def _kp_topics(cfg: KafkaConfig) -> dict[str, int]:
    from kafka import KafkaConsumer

    from monitor.kafka_source import connection_settings

    consumer = KafkaConsumer(**connection_settings(cfg), allow_auto_create_topics=False,
                             request_timeout_ms=int(KAFKA_TIMEOUT_S * 1000))
    try:
        names = consumer.topics()
        return {t: len(consumer.partitions_for_topic(t) or ()) for t in names}
    finally:
        consumer.close()


def _confluent_topics(cfg: KafkaConfig) -> dict[str, int]:
    from confluent_kafka import Consumer

    from monitor.confluent_source import connection_settings

    consumer = Consumer({**connection_settings(cfg), "group.id": f"{cfg.group_id}-preflight"})
    try:
        meta = consumer.list_topics(timeout=KAFKA_TIMEOUT_S)
        return {name: len(t.partitions) for name, t in meta.topics.items() if t.error is None}
    finally:
        consumer.close()


def _store(url: str) -> tuple[bool, str]:
    import sqlalchemy as sa

    from monitor.store import Store

    store = Store(url)
    try:
        started = time.monotonic()
        with store.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        shown = sa.make_url(url).render_as_string(hide_password=True)
        return True, f"{shown} answered in {time.monotonic() - started:.2f}s"
    finally:
        store.close()


def _slack(receiver: object, check: Callable[[], None]) -> tuple[bool, str]:
    check()
    return True, (f"authenticated as {getattr(receiver, 'identity', '?')}, posting to "
                  f"{getattr(receiver, 'channel', '?')}")
