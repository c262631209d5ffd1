"""Real parts for the tests: a Kafka-protocol broker on loopback (session-wide),
PostgreSQL schemas of their own per test, SQLite files in tmp dirs."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings

from monitor.broker import EmbeddedBroker

# Property tests run beside three other workers on two shared cores: generating an
# example can be slow there, which says nothing about the code under test (a
# decoder test failed once in a loaded run, not again alone or under load)
settings.register_profile("shared-cores", suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("shared-cores")

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DROP_LOCK_TIMEOUT_S = 60


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """Tests that run a command in-process (``monitor.cli.main``) call
    ``setup_logging``, which replaces the root handlers: put them back, so one
    test's logging set-up does not change what the next one captures."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


@pytest.fixture
def topic(broker: EmbeddedBroker, request: pytest.FixtureRequest) -> str:
    """A fresh 3-partition topic (override with @pytest.mark.parametrize indirect)."""
    partitions = getattr(request, "param", 3)
    name = f"t-{uuid.uuid4().hex[:10]}"
    broker.create_topic(name, partitions)
    return name


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a schema of this test's own; its sessions
    carry the schema as their application_name, so a session the test left open can
    be named."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield (f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
               f"&application_name={schema}")
    finally:
        try:
            _drop_schema(admin, schema)
        finally:
            admin.dispose()


def _drop_schema(admin: sa.Engine, schema: str) -> None:
    """Drop a test's schema. A session that still holds a lock in it a minute after
    the test (a connection the daemon or the test never closed) fails the test with
    that session's figures, and is ended so the next test does not wait on it."""
    drop = sa.text(f"DROP SCHEMA {schema} CASCADE")
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT_S}s'"))
            conn.execute(drop)
        return
    except sa.exc.OperationalError as exc:
        if "lock timeout" not in str(exc):
            raise
    with admin.begin() as conn:
        held = conn.execute(sa.text(
            "SELECT pid, application_name, client_port, state, now() - xact_start AS open_for, "
            "left(query, 200) AS last_query FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND state <> 'idle'")).mappings().all()
        conn.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = :schema"), {"schema": schema})
    with admin.begin() as conn:
        conn.execute(drop)
    pytest.fail(f"schema {schema} stayed locked {DROP_LOCK_TIMEOUT_S}s after the test; "
                f"sessions not idle then (those named {schema} were ended): "
                f"{[dict(r) for r in held]}")


@pytest.fixture(params=["kafka-python", "confluent-kafka"])
def kafka_client(request: pytest.FixtureRequest) -> str:
    """Each Kafka client the daemon can consume with (``kafka.client``)."""
    return str(request.param)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_url")


def _flat(value: object, path: str = "") -> dict[str, object]:
    """A decoded record as {dotted path: leaf value}."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{path}.{key}").items()}
    return {path or ".": value}


def pytest_assertrepr_compare(op: str, left: object, right: object) -> list[str] | None:
    """For two lists of canonical alert records (``tests.kafka_helpers.canonical``),
    name the fields in which the first differing pair differs: the default diff
    truncates a record long before its evidence."""
    if op != "==" or not (isinstance(left, list) and isinstance(right, list)):
        return None
    if not all(isinstance(r, bytes) for r in left + right):
        return None
    import msgspec

    lines = [f"alert records differ: {len(left)} got, {len(right)} expected"]
    for i, (a, b) in enumerate(zip(left, right, strict=False)):
        if a == b:
            continue
        try:
            fa, fb = _flat(msgspec.json.decode(a)), _flat(msgspec.json.decode(b))
        except msgspec.DecodeError:
            return None
        lines.append(f"first difference at index {i}, record {fb.get('.fingerprint')}:")
        lines += [f"  {k}: got {fa.get(k, '<absent>')!r}, expected {fb.get(k, '<absent>')!r}"
                  for k in sorted(fa.keys() | fb.keys()) if fa.get(k) != fb.get(k)]
        break
    extra = left[len(right):] or right[len(left):]
    lines += [f"  unmatched: {r[:300]!r}" for r in extra[:3]]
    return lines
