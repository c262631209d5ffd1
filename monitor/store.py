"""The store (SQLAlchemy 2 Core): SQLite by default, PostgreSQL by URL.

Holds alerts and their delivery outbox, detector checkpoints with the offsets
they cover, and what the scheduled jobs read (window summaries, reports).
The schema is created on start-up and migrated additively (new tables, new
nullable columns), so an upgrade never loses data.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from alerts.outbox import OutboxEntry

log = logging.getLogger(__name__)

# 4: state_chunks; 5: summary_batches (window_summaries.batch unused); 6: job_runs_started;
# 7: job_runs_started.left_at
SCHEMA_VERSION = 7
metadata = sa.MetaData()

# Modules that define more tables on ``metadata`` (one per feature area); migrate()
# imports them so every table exists before the daemon or a job touches it.
TABLE_MODULES: list[str] = ["monitor.scheduler", "alerts.db", "monitor.reference"]


def _now() -> datetime:
    return datetime.now(UTC)


schema_info = sa.Table(
    "inferwatch_schema", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("migrated_at", sa.DateTime(timezone=True), nullable=False),
)

alerts = sa.Table(
    "alerts", metadata,
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("alert_id", sa.String(64), nullable=False),
    sa.Column("detector", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("severity", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("model", sa.String(1024), nullable=False),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("state", sa.LargeBinary, nullable=False),
    sa.Column("first_seen", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Index("ix_alerts_status", alerts.c.status)

alert_outbox = sa.Table(
    "alert_outbox", metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("producer", sa.String(200), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # alerts.model.delivery_key: one row per record however often it is raised
    # (null in rows written before schema 3)
    sa.Column("delivery_key", sa.String(64), nullable=True),
)
sa.Index("ix_alert_outbox_producer_seq", alert_outbox.c.producer, alert_outbox.c.seq)
sa.Index("ux_alert_outbox_delivery_key", alert_outbox.c.delivery_key, unique=True)

sink_cursors = sa.Table(
    "sink_cursors", metadata,
    sa.Column("sink", sa.String(200), primary_key=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

checkpoints = sa.Table(
    "checkpoints", metadata,
    sa.Column("scope", sa.String(1024), primary_key=True),
    sa.Column("state", sa.LargeBinary, nullable=False),
    sa.Column("next_offset", sa.BigInteger, nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# who may checkpoint a partition: its restore takes the next epoch, and a checkpoint
# stores the partition only at the epoch it took (a member the group evicted, still
# reaching the store, must not write over the new owner's state)
partition_owners = sa.Table(
    "partition_owners", metadata,
    sa.Column("scope", sa.String(1024), primary_key=True),  # the partition's checkpoint scope
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("owner", sa.String(200), nullable=False),  # instance_id, for the operator
    sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
)

# per-client detector state, one row per (partition scope, keyed detector, client):
# a checkpoint writes only the clients that changed since the last one
client_checkpoints = sa.Table(
    "client_checkpoints", metadata,
    sa.Column("scope", sa.String(1024), primary_key=True),
    sa.Column("detector", sa.Integer, primary_key=True),
    # sha256 of `client`: client ids are producer-controlled, and a long one must not
    # break an index (PostgreSQL's btree entries stop at ~2.7 KB)
    sa.Column("client_hash", sa.String(64), primary_key=True),
    sa.Column("client", sa.Text, nullable=False),  # JSON [model, client_id]
    sa.Column("seq", sa.BigInteger, nullable=False),  # LRU order within the detector
    sa.Column("state", sa.LargeBinary, nullable=False),
)
# the upsert of changed clients, run by the driver itself (``{}``: its placeholders,
# sqlite3 ``?``, psycopg ``%s``); valid SQL for SQLite and PostgreSQL alike
_CLIENT_UPSERT = (
    "INSERT INTO client_checkpoints (scope, detector, client_hash, client, seq, state) "
    "VALUES ({}) ON CONFLICT (scope, detector, client_hash) DO UPDATE SET "
    "client = excluded.client, seq = excluded.seq, state = excluded.state")

# rows a model-wide checkpoint holds by reference, stored append-only (monitor.row_chunks):
# a drift reference's warm-up rows, written once each instead of at every checkpoint
state_chunks = sa.Table(
    "state_chunks", metadata,
    sa.Column("scope", sa.String(1024), primary_key=True),
    sa.Column("rows_id", sa.String(32), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("first_row", sa.BigInteger, nullable=False),  # rows stored before this chunk
    sa.Column("rows", sa.LargeBinary, nullable=False),
)

window_summaries = sa.Table(
    "window_summaries", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("model", sa.String(1024), nullable=False),
    sa.Column("model_version", sa.String(1024), nullable=False),
    sa.Column("bucket_start", sa.Float, nullable=False),
    sa.Column("bucket_s", sa.Float, nullable=False),
    # who wrote the row: a partition ("group:topic:partition") or "*" once compacted
    sa.Column("scope", sa.String(1024), nullable=False),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("rev", sa.Integer, nullable=False),  # optimistic concurrency (monitor.summaries)
    sa.Column("payload", sa.LargeBinary, nullable=False),  # zlib(pickle(monitor.summaries.Summary))
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Index("ix_window_summaries_key", window_summaries.c.model, window_summaries.c.model_version,
         window_summaries.c.bucket_start, window_summaries.c.scope, unique=True)
sa.Index("ix_window_summaries_bucket", window_summaries.c.bucket_start)

# the checkpoint batches of window-summary deltas merged, per partition scope: a save
# that repeats one (its commit went through unacknowledged) skips it, even after the
# compaction merged its rows (monitor.summaries.write_deltas)
summary_batches = sa.Table(
    "summary_batches", metadata,
    sa.Column("scope", sa.String(1024), primary_key=True),
    sa.Column("token", sa.String(32), primary_key=True),
)

reports = sa.Table(
    "reports", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("kind", sa.String(40), nullable=False),  # "comparison" or "drift"
    sa.Column("model", sa.String(1024), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("path", sa.Text, nullable=True),
    sa.Column("payload", sa.Text, nullable=False),  # JSON (monitor.compare / monitor.drift_report)
    sa.Column("verdict", sa.String(40), nullable=True),
    sa.Column("period_start", sa.Float, nullable=True),
    sa.Column("period_end", sa.Float, nullable=True),
)
sa.Index("ix_reports_kind_model", reports.c.kind, reports.c.model, reports.c.created_at)


@dataclass(frozen=True)
class Checkpoint:
    state: bytes
    next_offset: int | None


@dataclass
class ClientRows:
    """Changed per-client states of one partition scope (see ``client_checkpoints``):
    ``upsert`` rows (detector, client, seq, state), ``update`` rows whose LRU
    position did not change (detector, client, state), ``delete`` (detector, client);
    ``replace`` deletes every stored client of the scope first."""

    upsert: list[tuple[int, str, int, bytes]]
    update: list[tuple[int, str, bytes]]
    delete: list[tuple[int, str]]
    replace: bool = False


@dataclass
class ChunkWrites:
    """Changes to ``state_chunks`` of one checkpoint: ``add`` rows (scope, rows id, seq,
    first row, rows), ``drop_before`` (scope, rows id, seq): that id's chunks before
    ``seq`` (a rewrite replaced them), ``drop`` (scope, rows id): every chunk of it;
    ``keep_only`` (scope, rows ids): every chunk of the scope but those ids'."""

    add: list[tuple[str, str, int, int, bytes]]
    drop_before: list[tuple[str, str, int]]
    drop: list[tuple[str, str]]
    keep_only: list[tuple[str, list[str]]]


class PartitionsTakenError(RuntimeError):
    """A checkpoint's partitions that another member has taken since (``scopes``);
    nothing of the checkpoint was stored."""

    def __init__(self, scopes: list[str]) -> None:
        super().__init__(f"taken by another member: {', '.join(scopes)}")
        self.scopes = scopes


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    fingerprint: str
    record: str


@dataclass(frozen=True)
class StoredAlert:
    fingerprint: str
    status: str
    record: str
    state: bytes


DIALECTS = ("sqlite", "postgresql", "postgres")  # what a store URL's scheme may name
# libpq settings, unless the URL sets them: a database that stops answering (a
# failover, a dropped route) fails the connect in 10 s and a dead connection in
# seconds to a minute, instead of holding the loop for the kernel's TCP timeouts
POSTGRES_CONNECT_ARGS = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30,
                         "keepalives_interval": 10, "keepalives_count": 3,
                         "tcp_user_timeout": 20_000}


# Set at the start of every PostgreSQL transaction (SET LOCAL: for that transaction
# only, so it holds behind a transaction-pooling PgBouncer too). A transaction whose
# client vanished without closing its connection (a dropped route, a killed pod) keeps
# its locks until the server notices: with these probes within about a minute, not the
# kernel's two hours. Meanwhile a statement waits at most LOCK_TIMEOUT_S for a lock, so
# the next checkpoint, blocked by those locks, fails and is retried with backoff instead
# of holding the loop (and a stop) until then.
LOCK_TIMEOUT_S = 10
SERVER_KEEPALIVES = {"tcp_keepalives_idle": 30, "tcp_keepalives_interval": 10,
                     "tcp_keepalives_count": 3}


# An advisory lock held until the transaction ends, keyed by the outbox table (its
# oid: one per schema); see Store._append_outbox
_OUTBOX_LOCK = "SELECT pg_advisory_xact_lock(1769366893, 'alert_outbox'::regclass::oid::int)"


def _transaction_settings(options: str) -> str:
    """The ``SET LOCAL`` statements, but for the settings the URL's ``options`` gives
    (``?options=-c lock_timeout=30s``: the URL's own settings win)."""
    settings = {"lock_timeout": f"'{LOCK_TIMEOUT_S}s'", **SERVER_KEEPALIVES}
    return "; ".join(f"SET LOCAL {name} = {value}" for name, value in settings.items()
                     if name not in options)


def url_dialect(url: str) -> str:
    """The database a store URL names (``"sqlite"``, ``"postgresql"``, ...: its scheme
    without a ``+driver``); "" when it has no scheme."""
    return url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""


def make_engine(url: str, pool_size: int = 5) -> Engine:
    """An engine for a store URL of one of ``DIALECTS`` (``store.url`` is checked
    against them when the config is read); a PostgreSQL URL without a driver gets
    psycopg."""
    dialect = url_dialect(url)
    if dialect == "sqlite":
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        return engine
    scheme, _, rest = url.partition("://")
    if scheme in ("postgresql", "postgres"):  # no driver named
        url = "postgresql+psycopg://" + rest
    given = sa.engine.make_url(url).query  # the URL's own settings win
    libpq = {k: v for k, v in POSTGRES_CONNECT_ARGS.items() if k not in given}
    engine = sa.create_engine(url, pool_size=pool_size, pool_pre_ping=True, connect_args=libpq)

    statements = _transaction_settings(str(given.get("options", "")))  # once per engine

    @sa.event.listens_for(engine, "begin")
    def _settings(conn: Connection) -> None:
        if statements:
            conn.exec_driver_sql(statements)

    return engine


class Store:
    """Typed operations over the tables; each method is one transaction."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.engine = make_engine(url, pool_size)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    # -- schema ---------------------------------------------------------------------
    def migrate(self) -> None:
        """Create missing tables, nullable columns and indexes; never drop anything."""
        for module in TABLE_MODULES:
            importlib.import_module(module)
        with self.engine.begin() as conn:
            metadata.create_all(conn)
            inspector = sa.inspect(conn)
            for table in metadata.sorted_tables:
                have = {c["name"] for c in inspector.get_columns(table.name)}
                for column in table.columns:
                    if column.name not in have:
                        ddl = column.type.compile(dialect=conn.dialect)
                        log.info("migrating: adding column %s.%s", table.name, column.name)
                        conn.execute(sa.text(
                            f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {ddl}'
                        ))
                for index in table.indexes:
                    index.create(conn, checkfirst=True)
            row = conn.execute(sa.select(schema_info.c.version)).first()
            if row is None:
                conn.execute(schema_info.insert().values(
                    id=1, version=SCHEMA_VERSION, migrated_at=_now()))
            elif row.version < SCHEMA_VERSION:
                conn.execute(schema_info.update().values(
                    version=SCHEMA_VERSION, migrated_at=_now()))

    # -- helpers --------------------------------------------------------------------
    def _insert(self, table: sa.Table) -> Any:
        """This dialect's INSERT, which takes ON CONFLICT clauses."""
        return (postgresql if self.dialect == "postgresql" else sqlite).insert(table)

    def _upsert(self, conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]],
                keys: Sequence[str]) -> None:
        if not rows:
            return
        stmt = self._insert(table)
        update = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
        conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=update), rows)

    # -- checkpoints ----------------------------------------------------------------
    def save_checkpoint(
        self,
        producer: str,
        states: dict[str, Checkpoint],
        outbox: Iterable[OutboxEntry],
        changed_alerts: Iterable[StoredAlert],
        alert_meta: dict[str, dict[str, Any]],
        *,
        clients: dict[str, ClientRows] | None = None,
        chunks: ChunkWrites | None = None,
        extra: Callable[[Connection], None] | None = None,
        owners: dict[str, int] | None = None,
    ) -> None:
        """One transaction: detector states with their offsets (and the changed
        per-client states of each scope, and the row chunks they refer to), the
        alert records they produced (into the outbox) and the alerts' current state;
        ``extra`` writes more in the same transaction (window summaries). ``owners``:
        the epoch taken for each partition scope (``take_partitions``); if another
        member has taken one since, nothing is stored (``PartitionsTakenError``)."""
        now = _now()
        with self.engine.begin() as conn:
            if owners:
                self._fence(conn, owners)
            if extra is not None:
                extra(conn)
            for scope, client_rows in (clients or {}).items():
                self._write_clients(conn, scope, client_rows)
            if chunks is not None:
                self._write_chunks(conn, chunks)
            self._upsert(conn, checkpoints, [
                {"scope": scope, "state": cp.state, "next_offset": cp.next_offset,
                 "updated_at": now}
                for scope, cp in states.items()
            ], ["scope"])
            self._upsert(conn, alerts, [
                {"fingerprint": a.fingerprint, "status": a.status, "record": a.record,
                 "state": a.state, "updated_at": now, **alert_meta[a.fingerprint]}
                for a in changed_alerts
            ], ["fingerprint"])
            self._append_outbox(conn, producer, outbox, now)  # last: it locks until commit

    def take_partitions(self, scopes: Iterable[str], owner: str) -> dict[str, int]:
        """Take the next epoch of each partition scope: from now on only a checkpoint
        at that epoch stores the partition."""
        t = partition_owners
        taken = {}
        with self.engine.begin() as conn:
            for scope in sorted(scopes):  # one order: takers never wait on each other in a cycle
                stmt = self._insert(t).values(scope=scope, epoch=1, owner=owner, taken_at=_now())
                stmt = stmt.on_conflict_do_update(
                    index_elements=["scope"],
                    set_={"epoch": t.c.epoch + 1, "owner": owner, "taken_at": stmt.excluded.taken_at})
                taken[scope] = conn.execute(stmt.returning(t.c.epoch)).scalar_one()
        return taken

    def _fence(self, conn: Connection, owners: dict[str, int]) -> None:
        """Raise ``PartitionsTakenError`` unless each scope is still at its epoch; lock those
        rows until the transaction ends, so no member takes one meanwhile."""
        t = partition_owners
        lock = t.update().where(t.c.scope.in_(owners)).values(epoch=t.c.epoch)
        held = {r.scope: r.epoch for r in conn.execute(lock.returning(t.c.scope, t.c.epoch))}
        lost = sorted(scope for scope, epoch in owners.items() if held.get(scope) != epoch)
        if lost:
            raise PartitionsTakenError(lost)

    def append_outbox(self, producer: str, outbox: Iterable[OutboxEntry], *,
                      owners: dict[str, int] | None = None) -> None:
        """Put alert records in the outbox ahead of the checkpoint that stores the
        state which raised them; a record already there (same key) is skipped.
        ``owners``: as for ``save_checkpoint``, nothing is stored if another member
        has taken one of those partitions (``PartitionsTakenError``)."""
        with self.engine.begin() as conn:
            if owners:
                self._fence(conn, owners)
            self._append_outbox(conn, producer, outbox, _now())

    def _append_outbox(self, conn: Connection, producer: str, outbox: Iterable[OutboxEntry],
                       now: datetime) -> None:
        """Insert outbox rows in ``conn``'s transaction, which must commit right after.

        The dispatchers deliver in ``seq`` order past a cursor, so a row must never
        become visible after a row of higher ``seq``. On PostgreSQL ``seq`` is taken
        from a sequence at INSERT, not at commit: appending transactions (replicas,
        the jobs thread) are serialised from their first row to their commit by
        ``_OUTBOX_LOCK``. SQLite needs none: one write transaction at a time holds
        the database, and a rowid is max + 1 (outbox rows are never deleted)."""
        rows = [{"producer": producer, "fingerprint": e.fingerprint, "record": e.record,
                 "delivery_key": e.delivery_key, "created_at": now} for e in outbox]
        if rows:
            if self.dialect == "postgresql":
                conn.exec_driver_sql(_OUTBOX_LOCK)
            conn.execute(self._insert(alert_outbox)
                         .on_conflict_do_nothing(index_elements=["delivery_key"]), rows)

    def load_checkpoint(self, scope: str) -> Checkpoint | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(checkpoints.c.state, checkpoints.c.next_offset)
                .where(checkpoints.c.scope == scope)
            ).first()
        return None if row is None else Checkpoint(row.state, row.next_offset)

    def _write_clients(self, conn: Connection, scope: str, rows: ClientRows) -> None:
        t = client_checkpoints
        match = (t.c.scope == sa.bindparam("s")) & (t.c.detector == sa.bindparam("d")) & (
            t.c.client_hash == sa.bindparam("h"))
        if rows.replace:
            conn.execute(t.delete().where(t.c.scope == scope))
        if rows.delete:
            conn.execute(t.delete().where(match),
                         [{"s": scope, "d": d, "h": _hash(c)} for d, c in rows.delete])
        if rows.upsert:
            # the bulk of a checkpoint, one row per changed client: straight to the driver's
            # executemany (SQLAlchemy's per-row parameter processing took a third of it)
            mark = "?" if self.dialect == "sqlite" else "%s"
            conn.exec_driver_sql(_CLIENT_UPSERT.format(", ".join([mark] * 6)),
                                 [(scope, d, _hash(c), c, q, st) for d, c, q, st in rows.upsert])
        if rows.update:
            conn.execute(t.update().where(match).values(state=sa.bindparam("st")),
                         [{"s": scope, "d": d, "h": _hash(c), "st": st} for d, c, st in rows.update])

    def _write_chunks(self, conn: Connection, chunks: ChunkWrites) -> None:
        t = state_chunks
        same = (t.c.scope == sa.bindparam("s")) & (t.c.rows_id == sa.bindparam("r"))
        for scope, keep in chunks.keep_only:
            conn.execute(t.delete().where((t.c.scope == scope) & t.c.rows_id.not_in(keep)))
        if chunks.drop:
            conn.execute(t.delete().where(same), [{"s": s, "r": r} for s, r in chunks.drop])
        # an upsert: a save whose commit went through unacknowledged wrote these already
        self._upsert(conn, t, [{"scope": s, "rows_id": r, "seq": q, "first_row": f, "rows": b}
                               for s, r, q, f, b in chunks.add], ["scope", "rows_id", "seq"])
        if chunks.drop_before:
            conn.execute(t.delete().where(same & (t.c.seq < sa.bindparam("q"))),
                         [{"s": s, "r": r, "q": q} for s, r, q in chunks.drop_before])

    def load_chunks(self, scope: str) -> list[tuple[str, int, int, bytes]]:
        """The row chunks stored for ``scope``: (rows id, seq, first row, rows), in
        order of id and seq."""
        t = state_chunks
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.rows_id, t.c.seq, t.c.first_row, t.c.rows)
                                .where(t.c.scope == scope).order_by(t.c.rows_id, t.c.seq))
            return [(r.rows_id, r.seq, r.first_row, r.rows) for r in rows]

    def load_clients(self, scope: str) -> list[tuple[int, str, bytes]]:
        """The stored per-client states of ``scope``: (detector, client, state), in
        LRU order per detector."""
        t = client_checkpoints
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.detector, t.c.client, t.c.state)
                                .where(t.c.scope == scope).order_by(t.c.detector, t.c.seq))
            return [(r.detector, r.client, r.state) for r in rows]

    # -- alerts and outbox ----------------------------------------------------------
    def firing_alerts(self, detector: str | None = None) -> list[StoredAlert]:
        """The firing alerts (of ``detector`` only, when given)."""
        q = (sa.select(alerts.c.fingerprint, alerts.c.status, alerts.c.record, alerts.c.state)
             .where(alerts.c.status == "firing"))
        if detector is not None:
            q = q.where(alerts.c.detector == detector)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [StoredAlert(r.fingerprint, r.status, r.record, r.state) for r in rows]

    def resolve_alert(self, producer: str, stored: StoredAlert, record: OutboxEntry | None) -> None:
        """Mark the firing alert row ``stored`` resolved, with ``record`` (its resolved
        record, put in the outbox), unless the row has changed since it was read."""
        t = alerts
        values: dict[str, Any] = {"status": "resolved", "updated_at": _now()}
        if record is not None:
            values["record"] = record.record
        with self.engine.begin() as conn:
            done = conn.execute(t.update().where(
                (t.c.fingerprint == stored.fingerprint) & (t.c.status == "firing")
                & (t.c.state == stored.state)).values(values))
            if done.rowcount == 1 and record is not None:
                self._append_outbox(conn, producer, [record], values["updated_at"])

    def list_alerts(self, status: str | None = None, limit: int = 100) -> list[str]:
        query = sa.select(alerts.c.record).order_by(alerts.c.last_seen.desc()).limit(limit)
        if status:
            query = query.where(alerts.c.status == status)
        with self.engine.connect() as conn:
            return [r.record for r in conn.execute(query)]

    def outbox_after(
        self, sink: str, producer: str | None = None, limit: int = 500
    ) -> list[OutboxRow]:
        """Undelivered rows for ``sink`` in order; only ``producer``'s when given
        (sinks local to one replica, like a file, deliver only its own alerts)."""
        with self.engine.connect() as conn:
            cursor = conn.execute(
                sa.select(sink_cursors.c.last_seq).where(sink_cursors.c.sink == sink)
            ).scalar()
            if cursor is None:
                cursor = 0
            query = (
                sa.select(alert_outbox.c.seq, alert_outbox.c.fingerprint, alert_outbox.c.record)
                .where(alert_outbox.c.seq > cursor).order_by(alert_outbox.c.seq).limit(limit)
            )
            if producer is not None:
                query = query.where(alert_outbox.c.producer == producer)
            rows = conn.execute(query).all()
        return [OutboxRow(r.seq, r.fingerprint, r.record) for r in rows]

    def outbox_depth(self, sink: str, producer: str | None = None) -> int:
        with self.engine.connect() as conn:
            cursor = conn.execute(
                sa.select(sink_cursors.c.last_seq).where(sink_cursors.c.sink == sink)
            ).scalar() or 0
            query = (sa.select(sa.func.count()).select_from(alert_outbox)
                     .where(alert_outbox.c.seq > cursor))
            if producer is not None:
                query = query.where(alert_outbox.c.producer == producer)
            return int(conn.execute(query).scalar() or 0)

    def advance_cursor(self, sink: str, seq: int) -> None:
        with self.engine.begin() as conn:
            self._upsert(conn, sink_cursors,
                         [{"sink": sink, "last_seq": seq, "updated_at": _now()}], ["sink"])


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
