"""What the daemon asks of a Kafka client (``Source``), the client ``kafka.client``
names, and the dead-letter record both clients send.

Two clients stand behind it: kafka-python (``monitor.kafka_source``, the default)
and librdkafka through confluent-kafka (``monitor.confluent_source``, the
``confluent`` extra), which fetches in C threads of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from pydantic import SecretStr

from monitor.config import KafkaConfig
from monitor.pipeline import Record
from monitor.state import PartitionId

DLQ_REASON_HEADER = "inferwatch-reason"
DLQ_DETAIL_HEADER = "inferwatch-detail"
DLQ_SOURCE_HEADER = "inferwatch-source"

OnAssign = Callable[[list[PartitionId]], dict[PartitionId, int | None]]
OnRevoke = Callable[[list[PartitionId]], None]


class StoppedWhileRestoring(Exception):  # noqa: N818 (a stop, not an error)
    """What ``on_assign`` raises when the daemon is told to stop while the assigned
    partitions' state still waits for the store; ``poll`` lets it through."""


class Source(Protocol):
    """A consumer-group member. ``poll()`` returns records per partition;
    ``commit(offsets)`` commits them.

    ``on_assign(pids) -> {pid: offset or None}`` restores state and says where to
    resume (None: the group's committed offset or ``auto_offset_reset``), or raises
    ``StoppedWhileRestoring``, which ``poll`` raises in turn;
    ``on_revoke(pids)`` must checkpoint before the partitions go. The client calls
    both while ``poll`` (or ``close``) runs: librdkafka on the polling thread,
    kafka-python 3 on its IO thread (so no blocking consumer call in them there).
    """

    def poll(self) -> dict[PartitionId, list[Record]]: ...
    def connected(self) -> bool: ...
    def assignment(self) -> set[PartitionId]: ...
    def commit(self, offsets: dict[PartitionId, int], *, blocking: bool = True) -> None:
        """Commit ``offsets`` of owned partitions to the group; ``blocking=False``
        does not wait for the broker's answer (a failure is logged, not raised). The
        daemon commits only while ``connected()``."""
    def dead_letter(self, pid: PartitionId, record: Record, reason: str, detail: str) -> None: ...
    def flush_dead_letters(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for the dead-letter records sent so far (sending
        the failed ones again); how many Kafka has not acknowledged."""
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def highwater(self, pid: PartitionId) -> int | None: ...
    def close(self) -> None: ...


def open_source(cfg: KafkaConfig, *, on_assign: OnAssign, on_revoke: OnRevoke) -> Source:
    """A member of ``cfg.group_id`` through the client ``cfg.client`` names."""
    if cfg.client == "confluent-kafka":
        from monitor.confluent_source import ConfluentSource

        return ConfluentSource(cfg, on_assign=on_assign, on_revoke=on_revoke)
    from monitor.kafka_source import KafkaSource

    return KafkaSource(cfg, on_assign=on_assign, on_revoke=on_revoke)


def security_settings(cfg: KafkaConfig, names: Mapping[str, str]) -> dict[str, Any]:
    """The TLS and SASL settings that are set (SASL's only with a mechanism), under
    the client's own ``names`` for ours (``ssl_cafile``, ``ssl_certfile``,
    ``ssl_keyfile``, ``ssl_password``, ``sasl_mechanism``, ``sasl_username``,
    ``sasl_password``); the passwords revealed, for the client alone."""
    values: dict[str, Any] = {"ssl_cafile": cfg.ssl_cafile, "ssl_certfile": cfg.ssl_certfile,
                              "ssl_keyfile": cfg.ssl_keyfile,
                              "ssl_password": _reveal(cfg.ssl_password)}
    if cfg.sasl_mechanism:
        values.update(sasl_mechanism=cfg.sasl_mechanism, sasl_username=cfg.sasl_username,
                      sasl_password=_reveal(cfg.sasl_password))
    return {names[key]: value for key, value in values.items() if value}


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


def dead_letter_record(pid: PartitionId, record: Record, reason: str, detail: str,
                       max_bytes: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The value and headers of ``record``'s copy on the dead-letter topic: the
    reason, a short detail and where it came from; an oversized value is cut to
    what a producer can send (``min(max_bytes, 900,000)``)."""
    headers = [
        (DLQ_REASON_HEADER, reason.encode()),
        (DLQ_DETAIL_HEADER, detail.encode("utf-8", "replace")[:500]),
        (DLQ_SOURCE_HEADER, f"{pid[0]}/{pid[1]}/{record.offset}".encode()),
    ]
    value = record.value if record.value is not None else b""
    return value[:min(max_bytes, 900_000)], headers


def fmt_partitions(pids: Iterable[PartitionId]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(pids)) or "none"
