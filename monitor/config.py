"""The daemon's configuration: one YAML file, environment overrides, ``*_file`` secrets.

Validated once at start-up into frozen objects. Every problem is reported with
the dotted key and the reason. Environment variables ``INFERWATCH_<SECTION>__<KEY>``
override the file (``__`` separates levels, values are parsed as YAML scalars).
A secret key ``X`` may instead be given as ``X_file``: a path whose content
(a mounted Kubernetes secret) becomes the value.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import socket
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from alerts.config import NotifyConfig

ENV_PREFIX = "INFERWATCH_"
SECRET_KEYS = {"sasl_password", "url", "token", "webhook_url", "ssl_password"}


class ConfigError(Exception):
    """A configuration that cannot work; ``problems`` are "key: reason" lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# what Kafka accepts as a topic name
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _legal_topic(name: str) -> str:
    if not _TOPIC_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a Kafka topic name (1 to 249 of A-Z a-z 0-9 . _ -)")
    return name


class KafkaConfig(_Section):
    client: Literal["kafka-python", "confluent-kafka"] = "kafka-python"
    bootstrap_servers: list[str] = Field(default_factory=lambda: ["localhost:9092"], min_length=1)
    topics: list[str] = Field(default_factory=lambda: ["inference-logs"], min_length=1)
    group_id: str = "inferwatch"
    client_id: str = "inferwatch"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    max_poll_records: int = Field(2000, ge=1)
    poll_timeout_ms: int = Field(500, ge=1)
    # the upper bounds are librdkafka's (kafka-python takes more, no broker needs it)
    max_poll_interval_ms: int = Field(300_000, ge=1000, le=86_400_000)
    session_timeout_ms: int = Field(10_000, ge=1000, le=3_600_000)
    fetch_max_bytes: int = Field(52_428_800, ge=1024, le=2_147_483_135)
    max_partition_fetch_bytes: int = Field(10_485_760, ge=1024, le=1_000_000_000)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # SASL_PLAINTEXT and SASL_SSL need all three (OAUTHBEARER would need a token
    # provider, which inferwatch has no settings for)
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, validate_default=True)
    sasl_username: str | None = Field(None, validate_default=True)
    sasl_password: SecretStr | None = Field(None, validate_default=True)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    dead_letter_topic: str | None = None
    idle_partition_s: float = Field(10.0, gt=0)

    @field_validator("client")
    @classmethod
    def _client_installed(cls, v: str) -> str:
        if v == "confluent-kafka" and importlib.util.find_spec("confluent_kafka") is None:
            raise ValueError("needs the confluent-kafka package: pip install 'inferwatch[confluent]'")
        return v

    @field_validator("topics")
    @classmethod
    def _legal_topics(cls, v: list[str]) -> list[str]:
        return [_legal_topic(name) for name in v]

    @field_validator("dead_letter_topic")
    @classmethod
    def _apart_from_topics(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and v in (info.data.get("topics") or ()):
            raise ValueError(f"{v!r} is also in kafka.topics: its records would come back as "
                             "bad input, over and over")
        return v if v is None else _legal_topic(v)

    @field_validator("session_timeout_ms")
    @classmethod
    def _within_poll_interval(cls, v: int, info: ValidationInfo) -> int:
        poll = info.data.get("max_poll_interval_ms")
        if info.data.get("client") == "confluent-kafka" and poll is not None and v > poll:
            raise ValueError(f"{v} is above max_poll_interval_ms ({poll}), which librdkafka refuses")
        return v

    @field_validator("sasl_mechanism", "sasl_username", "sasl_password")
    @classmethod
    def _sasl_complete(cls, v: Any, info: ValidationInfo) -> Any:
        protocol = info.data.get("security_protocol")
        if v is None and protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
            also = " (or sasl_password_file)" if info.field_name == "sasl_password" else ""
            raise ValueError(f"required with security_protocol {protocol}{also}")
        return v

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _readable(cls, v: str | None) -> str | None:
        """A certificate or key the client cannot read fails at connect time, with
        librdkafka before the daemon starts: name it here instead."""
        if v is not None:
            try:
                with open(v, "rb"):
                    pass
            except OSError as exc:
                raise ValueError(f"cannot read {v!r} ({exc.strerror})") from None
        return v

    @field_validator("bootstrap_servers", "topics", mode="before")
    @classmethod
    def _split_commas(cls, v: Any) -> Any:
        return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port(cls, v: list[str]) -> list[str]:
        for server in v:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return v


class FieldMap(_Section):
    """Where each contract field lives in the producer's JSON (dotted paths)."""

    ts: str = "ts"
    model: str = "model"
    model_version: str = "model_version"
    client_id: str = "client_id"
    request_id: str = "request_id"
    source_ip: str = "source_ip"
    features: str = "features"
    embedding: str = "embedding"
    prediction: str = "prediction"
    probabilities: str = "probabilities"
    confidence: str = "confidence"
    latency_ms: str = "latency_ms"
    label: str = "label"

    def is_identity(self) -> bool:
        return all(getattr(self, name) == name for name in type(self).model_fields)


class EventsConfig(_Section):
    fields: FieldMap = FieldMap()
    max_message_bytes: int = Field(1_048_576, ge=256)
    max_features: int = Field(1000, ge=1)
    max_embedding: int = Field(4096, ge=1)
    max_string_length: int = Field(1024, ge=8)
    allowed_models: list[str] = Field(default_factory=list)
    # an event stamped further ahead of this host's clock is bad input
    # (future_timestamp): one such event would move event time forward for every
    # detector, expiring all client state and closing every window; null: no limit
    max_future_s: float | None = Field(600.0, gt=0)
    # (model, model_version) pairs a partition tracks; the events of further pairs are
    # bad input (too_many_versions) until a pair has been idle for 30 days
    max_model_versions: int = Field(1000, ge=1)


class StoreConfig(_Section):
    url: SecretStr = SecretStr("sqlite:///inferwatch.db")
    pool_size: int = Field(5, ge=1)

    @field_validator("url")
    @classmethod
    def _supported(cls, v: SecretStr) -> SecretStr:
        """A SQLite or PostgreSQL URL; a wrong one is named without being shown (it
        may hold a password)."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        from monitor.store import DIALECTS, url_dialect

        text = v.get_secret_value()
        scheme = text.split("://", 1)[0] if "://" in text else ""
        if url_dialect(text) not in DIALECTS:
            shown = f"{scheme!r} " if scheme.isascii() and scheme.replace("+", "").isalnum() else ""
            raise ValueError(f"the URL's scheme {shown}is not sqlite:// or postgresql://")
        try:
            make_url(text).port  # noqa: B018 - parses the port
        except (ArgumentError, ValueError):
            raise ValueError("not a database URL (sqlite:///PATH, "
                             "postgresql://USER:PASSWORD@HOST:PORT/DATABASE)") from None
        return v


class CheckpointConfig(_Section):
    interval_s: float = Field(5.0, gt=0)
    max_events: int = Field(100_000, ge=1)
    retry_max_s: float = Field(30.0, gt=0)
    # alert records go to the outbox (and on to the sinks) this long after they are
    # raised, ahead of the checkpoint; 0: after the batch that raised them
    alert_flush_s: float = Field(0.0, ge=0)


class HttpConfig(_Section):
    enabled: bool = True
    host: str = "0.0.0.0"  # noqa: S104 - a pod must be reachable by its probes
    port: int = Field(9108, ge=0, le=65535)


class StateConfig(_Section):
    client_idle_s: float = Field(3600.0, gt=0)
    pack_idle_after_s: float = Field(300.0, gt=0)
    max_clients: int = Field(1_000_000, ge=1)
    renotify_s: float = Field(300.0, gt=0)


class FloodingConfig(_Section):
    enabled: bool = True
    window_s: float = Field(60.0, gt=0)
    max_events: int = Field(600, ge=1)


class ProbingConfig(_Section):
    enabled: bool = True
    window_s: float = Field(600.0, gt=0)
    low_confidence: float = Field(0.6, gt=0, le=1)
    min_queries: int = Field(50, ge=1)
    max_share: float = Field(0.5, gt=0, le=1)


class OutOfRangeConfig(_Section):
    """Queries outside the model's stored reference data (detectors.out_of_range):
    active for the models with a reference built from a file or a pinned period."""

    enabled: bool = True
    window_s: float = Field(600.0, gt=0)
    min_queries: int = Field(20, ge=1)
    max_share: float = Field(0.5, gt=0, le=1)
    # how far past the reference's minimum or maximum, as a share of its range
    margin: float = Field(0.1, ge=0)


class NeighboursConfig(_Section):
    """Small-step query chains (black-box evasion, perturbation extraction)."""

    enabled: bool = True
    history: int = Field(16, ge=2, le=256)
    dims: int = Field(8, ge=2, le=256)
    radius: float = Field(0.02, gt=0, le=1)
    groups: int = Field(8, ge=1, le=64)
    sparse_groups: int = Field(2, ge=0, le=64)
    min_neighbours: int = Field(5, ge=1)
    halvings: int = Field(4, ge=0)  # bisection steps in a row that count as a hit (0: off)
    sparse_steps: int = Field(4, ge=0)  # 1-2-group steps in a row that count as a hit (0: off)
    star_steps: int = Field(6, ge=0)  # queries in a row around one earlier input: a hit (0: off)
    star_radius: float = Field(0.3, gt=0, le=10)  # how far around it, relative like radius
    min_hits: int = Field(1, ge=1)
    window_s: float = Field(600.0, gt=0)
    # near copies and noise searches count only in a burst (a distinct query within
    # burst_s of the one before) or at the decision boundary (a near copy answered
    # otherwise, or an answer under low_confidence) when answers are logged
    boundary_only: bool = True
    low_confidence: float = Field(0.6, ge=0, le=1)
    burst_s: float = Field(3.0, ge=0)


class SourceIpConfig(_Section):
    """Linkage by source address (detectors.attack.SourceAttack): query neighbours,
    boundary probing and a request budget also per address, over every client id it
    uses (Sybil splitting: one attack spread over several keys). Off by default: it
    took 28% off the per-event rate in bench.attacks, and every user behind one NAT
    shares an address."""

    enabled: bool = False
    max_events: int = Field(3000, ge=1)  # requests per address per detectors.flooding.window_s
    # an address alerts once it has used this many client ids (one key on an address
    # of its own is that client's alert already); at most 10, the ids an alert lists
    min_clients: int = Field(2, ge=1, le=10)


class FingerprintConfig(_Section):
    """Linkage by query fingerprint (detectors.fingerprint): query neighbours also
    per cell of similar inputs, over every client id and address that sends them
    (Sybil splitting over many keys and addresses), gated by the share of
    low-confidence answers in the cell. Off by default: it took up to 44% off the per-event
    rate in bench.attacks."""

    enabled: bool = False
    # a cell's size relative to a query's norm: the walk of a query-based attack stays
    # in one cell, unrelated natural inputs seldom share one
    width: float = Field(0.05, gt=0, le=1)
    # a cell alerts once the queries of this many client ids were hits in it (one
    # client alone is that client's alert)
    min_clients: int = Field(2, ge=2, le=10)
    # ... and this share of its answers in the window were below
    # detectors.probing.low_confidence: attacks walk the decision boundary, the near
    # copies of a popular input get confident answers
    boundary_share: float = Field(0.5, gt=0, le=1)
    # query-neighbour hits within detectors.neighbours.window_s a cell needs (a busy
    # cell of natural inputs shows a chance pattern now and then)
    min_hits: int = Field(3, ge=1)
    # most cells see one query and are dropped this soon, or when this many are tracked
    idle_s: float = Field(900.0, gt=0)
    max_cells: int = Field(100_000, ge=1)


class CoverageConfig(_Section):
    """Natural-data sweeps (detectors.coverage.QueryCoverage): many new inputs over
    many classes from one client within a window."""

    enabled: bool = True
    window_s: float = Field(3600.0, gt=0)
    min_queries: int = Field(400, ge=1)
    min_distinct: float = Field(0.95, gt=0, le=1)
    min_classes: float = Field(3.0, ge=1, le=16)


class CountRuleConfig(_Section):
    """A windowed count rule: more than ``max_events`` (distinct) inputs per client in
    ``window_s`` raises a ``kind`` alert named ``name``."""

    name: str = Field(min_length=1, max_length=100)
    kind: Literal["flooding", "extraction", "evasion"] = "extraction"
    severity: Literal["info", "warning", "critical"] = "warning"
    atlas: list[str] = Field(default_factory=lambda: ["AML.T0024.002"])
    window_s: float = Field(86_400.0, gt=0)
    max_events: int = Field(1000, ge=1)
    distinct: bool = True
    # only these models' and clients' events count (exact names or "prefix*"; [] = all)
    models: list[str] = Field(default_factory=list)
    clients: list[str] = Field(default_factory=list)

    @field_validator("models", "clients")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        if any(not name or name == "*" for name in v):
            raise ValueError("names must be non-empty; leave the list empty for all")
        return v


class ConfidenceConfig(_Section):
    """Confidence anomalies (detectors.confidence.ConfidenceDrift); see README "Drift"."""

    enabled: bool = True
    bucket_s: float = Field(10.0, gt=0)
    reference_events: int = Field(2000, ge=10)
    delta: float = Field(0.002, gt=0, lt=1)
    min_effect: float = Field(0.5, ge=0)
    min_bucket_events: int = Field(5, ge=1)
    reference_labels: int = Field(500, ge=10)
    min_labels: int = Field(200, ge=10)
    z_threshold: float = Field(4.0, gt=0)
    min_accuracy_drop: float = Field(0.05, ge=0, le=1)
    min_calibration_shift: float = Field(0.1, ge=0, le=1)


class DriftBudget(_Section):
    """At most ``false_alarms`` false drift alerts per model version per ``days``."""

    false_alarms: float = Field(1.0, gt=0)
    days: float = Field(30.0, gt=0)


class DriftConfig(_Section):
    """Input/prediction drift (detectors.drift.DistributionDrift); see README "Drift"."""

    enabled: bool = True
    bucket_s: float = Field(10.0, gt=0)
    window_events: int = Field(1000, ge=10)
    max_window_s: float = Field(600.0, gt=0)
    min_events: int = Field(200, ge=10)
    reference_events: int = Field(20_000, ge=50)
    bins: int = Field(10, ge=2, le=100)
    top_k: int = Field(20, ge=1, le=1000)
    segment_by: str | None = None
    top_segments: int = Field(5, ge=1, le=50)
    budget: DriftBudget = DriftBudget()
    cusum_k: float = Field(0.5, gt=0)
    min_psi: float = Field(0.02, ge=0)
    min_mean_shift: float = Field(0.1, ge=0)
    fast_min_psi: float = Field(0.25, ge=0)
    clear_windows: int = Field(3, ge=1)
    predictions: bool = True


class DetectorsConfig(_Section):
    lateness_s: float = Field(5.0, ge=0)
    flooding: FloodingConfig = FloodingConfig()
    probing: ProbingConfig = ProbingConfig()
    out_of_range: OutOfRangeConfig = OutOfRangeConfig()
    neighbours: NeighboursConfig = NeighboursConfig()
    coverage: CoverageConfig = CoverageConfig()
    source_ip: SourceIpConfig = SourceIpConfig()
    fingerprint: FingerprintConfig = FingerprintConfig()
    # Client ids (or prefixes ending in "*") the per-client attack detectors ignore.
    allow_clients: list[str] = Field(default_factory=list)
    # Windowed count rules (detectors/rules.py), e.g. a daily distinct-input budget.
    rules: list[CountRuleConfig] = Field(default_factory=list)
    confidence: ConfidenceConfig = ConfidenceConfig()
    drift: DriftConfig = DriftConfig()


class ConsoleSinkConfig(_Section):
    enabled: bool = True


class JsonlSinkConfig(_Section):
    path: str | None = None


class AlertsConfig(NotifyConfig):
    """Sinks, plus receivers, routing and inhibition (``alerts.config.NotifyConfig``)."""

    console: ConsoleSinkConfig = ConsoleSinkConfig()
    jsonl: JsonlSinkConfig = JsonlSinkConfig()


_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _crontab_days(field: str) -> str:
    """Crontab day-of-week numbers (0 or 7 = Sunday) as names: APScheduler 3 counts
    0 as Monday, so "1" would otherwise mean Tuesday.

    >>> _crontab_days("1"), _crontab_days("1-5"), _crontab_days("*/2"), _crontab_days("sat,0")
    ('mon', 'mon,tue,wed,thu,fri', 'sun,tue,thu,sat', 'sat,sun')
    """
    if not any(ch.isdigit() for ch in field):
        return field
    out: list[str] = []
    for token in field.split(","):
        part, _, step = token.partition("/")
        if part == "*":
            lo, hi = 0, 6
        elif "-" in part:
            a, b = part.split("-", 1)
            lo, hi = int(a), int(b)
        elif part.isdigit():
            lo = hi = int(part)
            if step:
                hi = 6
        else:
            out.append(token)
            continue
        if not (0 <= lo <= 7 and 0 <= hi <= 7):
            raise ValueError(f"day of week {token!r} is not within 0-7")
        for d in range(lo, hi + 1, int(step) if step else 1):
            name = _DAYS[d % 7]
            if name not in out:
                out.append(name)
    return ",".join(out)


def crontab_fields(expr: str) -> dict[str, str]:
    """A crontab expression, 5 fields (minute first) or 6 (seconds first), as
    APScheduler 3 ``CronTrigger`` arguments with standard crontab weekdays."""
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise ValueError(f"{expr!r} is not a cron expression (5 fields, or 6 with seconds first)")
    names = (["second"] if len(fields) == 6 else []) + [
        "minute", "hour", "day", "month", "day_of_week"]
    out = dict(zip(names, fields, strict=True))
    out["day_of_week"] = _crontab_days(out["day_of_week"])
    return out


def _check_cron(v: str) -> str:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger(**crontab_fields(v), timezone="UTC")
    except ValueError as exc:
        raise ValueError(f"{v!r}: {exc}") from None
    return v


class SummariesConfig(_Section):
    """Window summaries the scheduled jobs read (``monitor.summaries``)."""

    enabled: bool = True
    bucket_s: float = Field(3600.0, gt=0)  # time bucket width (event time)
    sample_size: int = Field(256, ge=0, le=100_000)  # sampled events per bucket and partition
    max_categories: int = Field(50, ge=1)  # distinct values kept per categorical feature
    retention_days: float = Field(90.0, gt=0)
    compact_after_s: float = Field(86_400.0, ge=0)  # merge partition rows of older buckets


class CompareJobConfig(_Section):
    """Model-version comparison (``monitor.compare``)."""

    enabled: bool = True
    cron: str = "0 7 * * *"
    window_h: float = Field(24.0, gt=0)
    min_events: int = Field(200, ge=1)
    # explicit champion/challenger pairs: [{model, champion, challenger}]; default: the
    # two newest versions of every model live in the window
    pairs: list[dict[str, str]] = Field(default_factory=list)
    # released versions per model; a version seen in the logs but not listed alerts
    released_versions: dict[str, list[str]] = Field(default_factory=dict)
    versions_cron: str = "*/10 * * * *"  # how often to look for unannounced versions
    latency_tolerance: float = Field(0.2, ge=0)  # relative p95 change
    confidence_tolerance: float = Field(0.05, ge=0)  # absolute change of mean confidence
    max_prediction_js: float = Field(0.1, ge=0, le=1)  # Jensen-Shannon distance of classes
    min_agreement: float = Field(0.95, ge=0, le=1)  # shadow traffic, same request_id
    error_rate_tolerance: float = Field(0.01, ge=0)  # absolute, when labels are present

    @field_validator("cron", "versions_cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        return _check_cron(v)

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, v: list[dict[str, str]]) -> list[dict[str, str]]:
        for pair in v:
            if set(pair) != {"model", "champion", "challenger"}:
                raise ValueError("each pair needs exactly model, champion and challenger")
        return v


class DriftReportConfig(_Section):
    """The weekly drift report (``monitor.drift_report``)."""

    enabled: bool = True
    cron: str = "0 8 * * 1"  # Monday 08:00 in jobs.timezone
    days: float = Field(7.0, gt=0)
    # without a stored reference, the model's earliest stored traffic of this span is used
    reference_span_s: float = Field(86_400.0, gt=0)
    min_events: int = Field(200, ge=1)
    psi_threshold: float = Field(0.1, gt=0)
    top_features: int = Field(10, ge=1)
    max_rows: int = Field(5000, ge=100)  # sampled rows per side given to Evidently
    evidently: bool = True

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        return _check_cron(v)


class CleanupJobConfig(_Section):
    cron: str = "30 3 * * *"

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        return _check_cron(v)


class JobsConfig(_Section):
    """Scheduled jobs (``monitor.scheduler``): one runner per fleet through a lease."""

    enabled: bool = True
    timezone: str = "UTC"
    reports_dir: str = "reports"
    report_url: str | None = None  # base URL the reports directory is served under
    lease_ttl_s: float = Field(60.0, ge=1)
    misfire_grace_s: float = Field(3600.0, ge=1)  # a run late by more is skipped
    coalesce: bool = True  # several missed runs run once
    summaries: SummariesConfig = SummariesConfig()
    compare: CompareJobConfig = CompareJobConfig()
    drift_report: DriftReportConfig = DriftReportConfig()
    cleanup: CleanupJobConfig = CleanupJobConfig()

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


def _default_instance() -> str:
    return os.environ.get("HOSTNAME") or socket.gethostname()


class Config(_Section):
    instance_id: str = Field(default_factory=_default_instance, min_length=1, max_length=200)
    kafka: KafkaConfig = KafkaConfig()
    events: EventsConfig = EventsConfig()
    store: StoreConfig = StoreConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    http: HttpConfig = HttpConfig()
    state: StateConfig = StateConfig()
    detectors: DetectorsConfig = DetectorsConfig()
    alerts: AlertsConfig = AlertsConfig()
    jobs: JobsConfig = JobsConfig()
    logging: LoggingConfig = LoggingConfig()

    def redacted(self) -> dict[str, Any]:
        """The effective config for the log: secrets shown as ``**********``."""
        return self.model_dump(mode="json")


def _env_value(raw: str) -> Any:
    """An environment value as a YAML scalar or list ("3", "true", "[a, b]"), but a
    string YAML would drop or mangle ("#security", "a: b") stays the string it is."""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if value is None and raw.strip() not in ("", "null", "~"):
        return raw
    if isinstance(value, dict):
        return raw
    return value


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _env_value(raw)
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolve_secret_files(node: Any, path: str, problems: list[str]) -> Any:
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        dotted = f"{path}.{key}" if path else str(key)
        base = str(key)[:-5] if str(key).endswith("_file") else None
        if base in SECRET_KEYS:
            if value in (None, ""):
                continue
            try:
                out[base] = Path(str(value)).read_text(encoding="utf-8").strip()
            except OSError as exc:
                problems.append(f"{dotted}: cannot read secret file {value!r} ({exc.strerror})")
            continue
        out[key] = _resolve_secret_files(value, dotted, problems)
    return out


def _format_errors(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            near = difflib.get_close_matches(str(item["loc"][-1]), _keys_at(item["loc"][:-1]),
                                             n=1, cutoff=0.7)
            msg = f"unknown key (did you mean {near[0]}?)" if near else (
                "unknown key (misspelt, or not valid here)")
        problems.append(f"{key}: {msg}")
    return problems


def _keys_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the section at ``loc`` (a validation error's location) takes, with
    their ``_file`` forms for secrets; [] where the location is not a section."""
    node: Any = Config
    for part in loc:
        model = _section_in(node)
        if model is not None:
            if not isinstance(part, str) or part not in model.model_fields:
                return []
            node = model.model_fields[part].annotation
        else:  # a list's item or a mapping's value (``receivers.<name>``): their type
            args = typing.get_args(node)
            if not args:
                return []
            node = args[-1]
    model = _section_in(node)
    if model is None:
        return []
    return [*model.model_fields, *(f"{k}_file" for k in model.model_fields if k in SECRET_KEYS)]


def _section_in(annotation: Any) -> type[BaseModel] | None:
    """The model in ``annotation`` (itself, or the one of ``X | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


def build_config(raw: Mapping[str, Any] | None, env: Mapping[str, str] | None = None) -> Config:
    """Validate a config mapping plus environment overrides; raise ConfigError."""
    data = _merge(dict(raw or {}), _env_overrides(os.environ if env is None else env))
    problems: list[str] = []
    data = _resolve_secret_files(data, "", problems)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems.extend(_format_errors(exc))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None) -> Config:
    """Read a YAML config file (or none: all defaults) and validate it."""
    raw: Any = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read config file ({exc.strerror})"]) from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError([f"{path}:{where}: not valid YAML ({exc})"]) from None
        if not isinstance(raw, dict):
            raise ConfigError([f"{path}: the top level must be a mapping of sections"])
    return build_config(raw, env)
