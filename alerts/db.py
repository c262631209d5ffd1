"""Tables of the notification layer (on ``monitor.store.metadata``, registered in
``monitor.store.TABLE_MODULES``) and the silence / acknowledgement operations the
command line and the notifier share.

Times are Unix seconds (floats) from the notifier's clock, which tests replace.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from alerts.matchers import Matcher, labels_of, match_all, parse_all
from monitor.store import alerts as alerts_table
from monitor.store import metadata

_seq = sa.BigInteger().with_variant(sa.Integer, "sqlite")

# One row per (receiver, alert episode) routed there: what was last ingested and
# what the receiver was last told about it.
notify_alerts = sa.Table(
    "notify_alerts", metadata,
    sa.Column("receiver", sa.String(200), primary_key=True),
    sa.Column("alert_id", sa.String(64), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("group_id", sa.String(64), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("notified_status", sa.String(20), nullable=True),
    sa.Column("notified_severity", sa.String(20), nullable=True),
    sa.Column("parent_key", sa.String(300), nullable=True),
    sa.Column("last_notified_at", sa.Float, nullable=True),
    sa.Column("ingested_at", sa.Float, nullable=False),
)
sa.Index("ix_notify_alerts_group", notify_alerts.c.receiver, notify_alerts.c.group_id)

# A group of alerts notified together (route + group_by labels), with its timers.
notify_groups = sa.Table(
    "notify_groups", metadata,
    sa.Column("receiver", sa.String(200), primary_key=True),
    sa.Column("group_id", sa.String(64), primary_key=True),
    sa.Column("route_id", sa.String(200), nullable=False),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("first_at", sa.Float, nullable=False),
    sa.Column("last_flush_at", sa.Float, nullable=True),
    sa.Column("open_digest", sa.String(300), nullable=True),
    sa.Column("digest_n", sa.Integer, nullable=False, default=0),
    # when this group may next have something to say (None: look now)
    sa.Column("next_at", sa.Float, nullable=True),
)
sa.Index("ix_notify_groups_next_at", notify_groups.c.next_at)

# Rendered notifications, stored before they are sent, sent in ``seq`` order per receiver.
notify_queue = sa.Table(
    "notify_queue", metadata,
    sa.Column("seq", _seq, primary_key=True, autoincrement=True),
    sa.Column("receiver", sa.String(200), nullable=False),
    sa.Column("action", sa.String(10), nullable=False),  # post | reply | update
    sa.Column("reason", sa.String(40), nullable=False),  # first | new | repeat | resolved | ack
    sa.Column("message_key", sa.String(300), nullable=True),  # a post: where its ts is kept
    sa.Column("parent_key", sa.String(300), nullable=True),  # a reply/update: which message
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("sent_at", sa.Float, nullable=True),
    sa.Column("outcome", sa.String(80), nullable=True),
)
sa.Index("ix_notify_queue_receiver_seq", notify_queue.c.receiver, notify_queue.c.sent_at,
         notify_queue.c.seq)

# Slack messages we posted (for thread replies and chat.update).
notify_messages = sa.Table(
    "notify_messages", metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("receiver", sa.String(200), nullable=False),
    sa.Column("channel", sa.String(200), nullable=True),
    sa.Column("ts", sa.String(64), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

alert_silences = sa.Table(
    "alert_silences", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("matchers", sa.Text, nullable=False),  # JSON list of "name=value" strings
    sa.Column("starts_at", sa.Float, nullable=False),
    sa.Column("ends_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

alert_acks = sa.Table(
    "alert_acks", metadata,
    sa.Column("alert_id", sa.String(64), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("acked_by", sa.String(200), nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("acked_at", sa.Float, nullable=False),
    sa.Column("announced_at", sa.Float, nullable=True),
)

# One sender per fleet: the replica holding this lease ingests and sends.
notify_lease = sa.Table(
    "notify_lease", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def covers(self, labels: dict[str, str]) -> bool:
        return match_all(self.matchers, labels)


@dataclass(frozen=True)
class Ack:
    alert_id: str
    fingerprint: str
    acked_by: str
    comment: str
    acked_at: float
    announced_at: float | None


def add_silence(engine: Engine, matchers: Sequence[str], *, starts_at: float, ends_at: float,
                created_by: str, comment: str) -> str:
    parse_all(matchers)  # refuse what cannot match
    if not matchers:
        raise ValueError("a silence needs at least one matcher")
    sid = secrets.token_hex(6)
    with engine.begin() as conn:
        conn.execute(alert_silences.insert().values(
            id=sid, matchers=json.dumps(list(matchers)), starts_at=starts_at, ends_at=ends_at,
            created_by=created_by, comment=comment, created_at=starts_at))
    return sid


def expire_silence(engine: Engine, sid: str, now: float) -> list[str]:
    """End the silences whose id starts with ``sid``; the ids ended."""
    with engine.begin() as conn:
        rows = conn.execute(sa.select(alert_silences.c.id).where(
            alert_silences.c.id.startswith(sid, autoescape=True),
            alert_silences.c.ends_at > now)).scalars().all()
        if len(rows) == 1:
            conn.execute(alert_silences.update().where(alert_silences.c.id == rows[0])
                         .values(ends_at=now))
    return list(rows)


def silences(engine: Engine, now: float | None = None) -> list[Silence]:
    """Silences not yet ended at ``now`` (all of them when ``now`` is None)."""
    query = sa.select(alert_silences).order_by(alert_silences.c.created_at)
    if now is not None:
        query = query.where(alert_silences.c.ends_at > now)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [Silence(r.id, parse_all(json.loads(r.matchers)), r.starts_at, r.ends_at,
                    r.created_by, r.comment) for r in rows]


def find_alerts(engine: Engine, ref: str) -> list[dict]:
    """Stored alert records whose fingerprint or episode id starts with ``ref``."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(alerts_table.c.record).where(sa.or_(
            alerts_table.c.fingerprint.startswith(ref, autoescape=True),
            alerts_table.c.alert_id.startswith(ref, autoescape=True)))).scalars().all()
    return [json.loads(r) for r in rows]


def add_ack(engine: Engine, record: dict, *, acked_by: str, comment: str, now: float) -> None:
    with engine.begin() as conn:
        conn.execute(alert_acks.delete().where(alert_acks.c.alert_id == record["id"]))
        conn.execute(alert_acks.insert().values(
            alert_id=record["id"], fingerprint=record["fingerprint"], acked_by=acked_by,
            comment=comment, acked_at=now, announced_at=None))


def acks(engine: Engine) -> dict[str, Ack]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(alert_acks)).all()
    return {r.alert_id: Ack(r.alert_id, r.fingerprint, r.acked_by, r.comment, r.acked_at,
                            r.announced_at) for r in rows}


def silenced_by(active: Sequence[Silence], record: dict) -> Silence | None:
    labels = labels_of(record)
    return next((s for s in active if s.covers(labels)), None)
