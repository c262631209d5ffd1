"""The notifier: alert records → grouped, routed, silenced, rendered notifications
→ receivers (Slack, webhooks), never losing one.

It is a ``Sink`` of the outbox ``Dispatcher`` (one fleet-wide cursor). Each step
is a store transaction, so a crash or a restart anywhere repeats at most the last
step:

1. ``send(records)`` (*ingest*): every record is routed (``alerts.routing``) and
   stored per receiver in its group. Idempotent: the same record twice is a no-op.
2. ``flush(now)``: for every group whose timer is due (``group_wait`` after its
   first alert, then every ``group_interval``), decide what to tell — new alerts
   (one message each, or one digest for more than ``digest_threshold``), repeats
   past ``repeat_interval`` (thread replies), resolutions (the original message
   edited, and a thread reply) and acknowledgements — skipping silenced and
   inhibited alerts; the rendered notifications go into ``notify_queue``.
3. ``deliver(now)``: each receiver's queue is sent in order; a retryable failure
   (429 with Retry-After, 5xx, connection) waits with backoff and blocks only that
   receiver; a permanent one (bad token, unknown channel) stops it with an error
   line and ``inferwatch_receiver_blocked``; the queue stays. A send unanswered
   within ``send_budget_s`` goes on in a thread; a later tick records its answer.

The last hop is at-least-once: if the process dies after Slack accepted a message
and before the store recorded it, that one message is sent again on restart.

The clock is injectable (``clock``: Unix seconds), so grouping, repeats and
backoff are tested without waiting. One replica of the fleet sends: the holder
of the ``notify_lease`` row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from alerts import db
from alerts.config import NotifyConfig
from alerts.matchers import labels_of, match_all, parse_all
from alerts.receivers import (
    Item,
    JsonWebhookReceiver,
    MessageRejectedError,
    Receiver,
    SlackReceiver,
    SlackWebhookReceiver,
)
from alerts.routing import RouteTree
from alerts.severity import severity
from alerts.sinks import DeliveryError
from alerts.slack import Renderer

log = logging.getLogger(__name__)

LEASE = "notifier"
KEEP_SENT_S = 7 * 86400.0
RECHECK_S = 30.0  # alerts held back by a silence or an inhibition are looked at again


def _gid(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class Notifier:
    """Routes, groups and sends alert records to the configured receivers."""

    local: ClassVar[bool] = False

    def __init__(self, store: Any, config: NotifyConfig, receivers: Mapping[str, Receiver], *,
                 instance: str = "local", metrics: Any = None,
                 clock: Callable[[], float] = time.time, lease_ttl_s: float = 30.0) -> None:
        self.name = "notifier"
        self.engine = store.engine
        self.config = config
        self.tree = RouteTree(config.route)
        self.inhibit = [(parse_all(r.source), parse_all(r.target), tuple(r.equal))
                        for r in config.inhibit]
        self.receivers = dict(receivers)
        self.renderers = {
            name: Renderer(mention=rc.mention, mention_severities=rc.mention_severities,
                           post_feature_values=config.post_feature_values,
                           raw_value_keys=config.raw_value_keys,
                           cli_config_path=config.cli_config_path)
            for name, rc in config.receivers.items()
        }
        self.instance = instance
        self.metrics = metrics
        self.clock = clock
        self.lease_ttl_s = lease_ttl_s
        self._next_tick = float("-inf")
        self._lease_until = float("-inf")
        self._standby_until = float("-inf")
        self._last_ingest = float("-inf")
        self._history: tuple[int, set[str]] | None = None
        self._turn = 0
        self._started = datetime.now(UTC)  # outbox rows older than this are history
        self._depth_at: dict[str, float] = {}
        self._next_cleanup = float("-inf")
        self._retry_at: dict[str, float] = {}
        self._backoff: dict[str, float] = {}
        self._blocked: set[str] = set()
        # sends the receiver took but the store could not record (it went away in
        # between), recorded before anything else is sent: never sent twice
        self._unrecorded: list[Callable[[], None]] = []
        self._sending: dict[str, _Sending] = {}  # per receiver: its send in flight
        self._finishing = False  # the daemon stops: no new send (finish())

    # -- Sink protocol (the outbox Dispatcher calls these) --------------------------
    def send(self, records: Sequence[str]) -> None:
        now = self.clock()
        try:
            if not self.has_lease(now):
                raise DeliveryError("another replica sends the notifications", retryable=True,
                                    retry_after_s=5 * self.config.tick_s, reason="standby")
            if self._history is None:
                self._history = self._history_to_skip()
            left, firing = self._history
            if left > 0:  # the first start on a store that already holds alerts
                head = [r for r in records[:left] if json.loads(r)["id"] in firing]
                self.ingest([*head, *records[left:]], now)
                self._history = (left - len(records[:left]), firing)
            else:
                self.ingest(records, now)
        except sa.exc.SQLAlchemyError as exc:
            raise DeliveryError(f"store: {type(exc).__name__}", retryable=True,
                                reason="store_error") from exc
        except (ValueError, KeyError, TypeError) as exc:  # never lose the loop to one record
            log.exception("notifier: cannot ingest a record batch")
            raise DeliveryError(f"ingest: {type(exc).__name__}", retryable=True,
                                reason="error") from exc

    def delivered_prefix(self, records: Sequence[str]) -> int:
        return 0  # ingest is idempotent

    def _history_to_skip(self) -> tuple[int, set[str]]:
        """Slack switched on for a store that already holds alerts: of its outbox
        (the history), notify only the alerts still firing — not a flood of old ones."""
        from monitor.store import alert_outbox, sink_cursors
        from monitor.store import alerts as stored

        with self.engine.connect() as conn:
            if conn.execute(sa.select(sink_cursors.c.last_seq)
                            .where(sink_cursors.c.sink == self.name)).first() is not None:
                return 0, set()
            left = int(conn.execute(sa.select(sa.func.count()).select_from(alert_outbox).where(
                alert_outbox.c.created_at < self._started)).scalar() or 0)
            firing = set(conn.execute(sa.select(stored.c.alert_id)
                                      .where(stored.c.status == "firing")).scalars())
        if left:
            log.info("notifications start on a store holding %d alert record(s): notifying "
                     "the %d alert(s) still firing, not the history", left, len(firing))
        return left, firing

    def tick(self) -> None:
        """Flush due groups and send queued notifications (at most every ``tick_s``)."""
        now = self.clock()
        if now < self._next_tick:
            return
        self._next_tick = now + self.config.tick_s
        try:
            if self.has_lease(now):
                self.flush(now)
                self.deliver(now)
                if now >= self._next_cleanup:
                    self._next_cleanup = now + 3600.0
                    self.cleanup(now)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("notifier: store unavailable (%s); retrying", type(exc).__name__)
        except Exception:  # a notifier bug must never stop the daemon's main loop
            self._next_tick = now + 30.0
            log.exception("notifier: unexpected error; alerts stay queued, retrying in 30s")

    # -- lease ------------------------------------------------------------------------
    def has_lease(self, now: float) -> bool:
        """Hold (or take over) the fleet's sender lease; renewed at half its life."""
        if now < self._lease_until - self.lease_ttl_s / 2:
            return True
        if now < self._standby_until:
            return False
        held = self._take_lease(now)
        if held:
            self._lease_until = now + self.lease_ttl_s
        else:
            self._lease_until = float("-inf")
            self._standby_until = now + min(5.0, self.lease_ttl_s / 4)
        return held

    def _take_lease(self, now: float) -> bool:
        lease = db.notify_lease
        with self.engine.begin() as conn:
            took = conn.execute(lease.update().where(
                lease.c.name == LEASE,
                sa.or_(lease.c.holder == self.instance, lease.c.expires_at < now),
            ).values(holder=self.instance, expires_at=now + self.lease_ttl_s)).rowcount
            if took:
                return True
            if conn.execute(sa.select(lease.c.name).where(lease.c.name == LEASE)).first():
                return False
        try:
            with self.engine.begin() as conn:
                conn.execute(lease.insert().values(name=LEASE, holder=self.instance,
                                                   expires_at=now + self.lease_ttl_s))
            return True
        except sa.exc.IntegrityError:
            return False

    # -- 1. ingest ----------------------------------------------------------------------
    def ingest(self, records: Iterable[str], now: float) -> None:
        """Route and store a batch of records in one transaction (a few statements
        per batch, not per record)."""
        na, ng = db.notify_alerts, db.notify_groups
        batch = [(raw, json.loads(raw)) for raw in records]
        if not batch:
            return
        with self.engine.begin() as conn:
            ids = sorted({rec["id"] for _, rec in batch})
            known: dict[tuple[str, str], dict[str, Any]] = {}
            for i in range(0, len(ids), 500):
                for r in conn.execute(sa.select(na.c.receiver, na.c.alert_id, na.c.record,
                                                na.c.group_id).where(
                        na.c.alert_id.in_(ids[i:i + 500]))):
                    known[(r.receiver, r.alert_id)] = {"record": r.record, "gid": r.group_id,
                                                       "new": False, "changed": False}
            groups: dict[tuple[str, str], dict[str, Any]] = {}
            wake: dict[tuple[str, str], bool] = {}  # group → at once (an escalation)
            for raw, rec in batch:
                # strictly increasing: groups and alerts are told in the order they came
                now = self._last_ingest = max(now, self._last_ingest + 1e-6)
                labels = labels_of(rec)
                if rec["status"] == "firing":
                    for route in self.tree.match(labels):
                        key = (route.receiver, rec["id"])
                        if route.receiver not in self.receivers or key in known:
                            continue
                        gid = _gid(route.group_key(labels))
                        known[key] = {"record": raw, "gid": gid, "new": True, "changed": True,
                                      "row": {"receiver": route.receiver, "alert_id": rec["id"],
                                              "fingerprint": rec["fingerprint"],
                                              "group_id": gid, "ingested_at": now}}
                        groups.setdefault((route.receiver, gid), {
                            "receiver": route.receiver, "group_id": gid, "route_id": route.id,
                            "labels": json.dumps(route.group_labels(labels)), "first_at": now,
                            "last_flush_at": None, "open_digest": None, "digest_n": 0,
                            "next_at": now + route.group_wait_s})
                for rcv in self.receivers:
                    st = known.get((rcv, rec["id"]))
                    if st is not None and st["record"] != raw:
                        before = severity(json.loads(st["record"])["severity"]).rank
                        st["record"], st["status"], st["changed"] = raw, rec["status"], True
                        # a resolution is news for the group's timer, an escalation at
                        # once; a count is not news
                        worse = rec["status"] == "firing" and severity(
                            rec["severity"]).rank > before
                        if rec["status"] != "firing" or worse:
                            key = (rcv, st["gid"])
                            wake[key] = wake.get(key, False) or worse
            inserts = [{**st["row"], "record": st["record"],
                        "status": json.loads(st["record"])["status"]}
                       for st in known.values() if st["new"]]
            if inserts:
                conn.execute(na.insert(), inserts)
            updates = [{"r": rcv, "a": aid, "rec": st["record"], "st": st["status"]}
                       for (rcv, aid), st in known.items() if st["changed"] and not st["new"]]
            if updates:
                conn.execute(na.update().where(na.c.receiver == sa.bindparam("r"),
                                               na.c.alert_id == sa.bindparam("a"))
                             .values(record=sa.bindparam("rec"), status=sa.bindparam("st")),
                             updates)
            existing: set[tuple[str, str]] = set()
            gids = sorted({gid for _, gid in groups})
            for i in range(0, len(gids), 500):
                existing.update((r.receiver, r.group_id) for r in conn.execute(
                    sa.select(ng.c.receiver, ng.c.group_id).where(
                        ng.c.group_id.in_(gids[i:i + 500]))))
            fresh = [g for key, g in groups.items() if key not in existing]
            if fresh:
                conn.execute(ng.insert(), fresh)
            for key in sorted(set(wake) | (set(groups) & existing)):
                self._wake(conn, key[0], key[1], now, at_once=wake.get(key, False))

    def _wake(self, conn: Connection, receiver: str, group_id: str, now: float, *,
              at_once: bool = False) -> None:
        """Something changed in a group: look at it when its timer allows, or at once
        (an escalation)."""
        ng = db.notify_groups
        g = conn.execute(sa.select(ng.c.route_id, ng.c.first_at, ng.c.last_flush_at,
                                   ng.c.next_at).where(ng.c.receiver == receiver,
                                                       ng.c.group_id == group_id)).first()
        if g is None:
            return
        route = self.tree.route(g.route_id)
        due = now if at_once else (g.first_at + route.group_wait_s if g.last_flush_at is None
                                   else g.last_flush_at + route.group_interval_s)
        if g.next_at is None or due < g.next_at:
            conn.execute(ng.update().where(ng.c.receiver == receiver, ng.c.group_id == group_id)
                         .values(next_at=due))

    # -- 2. flush -----------------------------------------------------------------------
    def flush(self, now: float) -> int:
        """Queue the notifications of every due group; how many were queued."""
        ng, na, aa = db.notify_groups, db.notify_alerts, db.alert_acks
        with self.engine.connect() as conn:
            todo = {(g.receiver, g.group_id) for g in conn.execute(
                sa.select(ng.c.receiver, ng.c.group_id).where(
                    sa.or_(ng.c.next_at.is_(None), ng.c.next_at <= now)))}
            todo.update((r.receiver, r.group_id) for r in conn.execute(
                sa.select(na.c.receiver, na.c.group_id).distinct().where(
                    na.c.notified_status == "firing",
                    na.c.alert_id.in_(sa.select(aa.c.alert_id).where(
                        aa.c.announced_at.is_(None))))))
        if not todo:
            return 0
        active = [s for s in db.silences(self.engine, now) if s.active(now)]
        acks = db.acks(self.engine)
        queued = 0
        with self.engine.begin() as conn:
            sources: list[tuple[Any, tuple[str, ...], list[dict[str, str]]]] | None = None

            def inhibitors() -> list[tuple[Any, tuple[str, ...], list[dict[str, str]]]]:
                nonlocal sources
                if sources is None:  # the firing alerts, read once per flush when needed
                    firing = [labels_of(json.loads(raw)) for raw in conn.execute(
                        sa.select(na.c.record).where(na.c.status == "firing")).scalars()]
                    sources = [(target, equal, [lab for lab in firing if match_all(src, lab)])
                               for src, target, equal in self.inhibit]
                return sources

            def suppressed(rec: dict) -> bool:
                if db.silenced_by(active, rec) is not None:
                    return True
                labels = labels_of(rec)
                if not any(match_all(target, labels) for _, target, _ in self.inhibit):
                    return False
                for target, equal, srcs in inhibitors():
                    if match_all(target, labels) and any(
                            all(s.get(e, "") == labels.get(e, "") for e in equal)
                            and s.get("id") != labels.get("id") for s in srcs):
                        return True
                return False

            groups = [conn.execute(sa.select(ng).where(ng.c.receiver == receiver,
                                                       ng.c.group_id == group_id)).first()
                      for receiver, group_id in todo]
            for g in sorted((g for g in groups if g is not None),
                            key=lambda g: (g.first_at, g.receiver, g.group_id)):
                if g.receiver in self.receivers:
                    queued += self._flush_group(conn, now, g, suppressed, acks)
        return queued

    def _flush_group(self, conn: Connection, now: float, g: Any,
                     suppressed: Callable[[dict], bool], acks: Mapping[str, db.Ack]) -> int:
        na, ng = db.notify_alerts, db.notify_groups
        rcv, gid = g.receiver, g.group_id
        route = self.tree.route(g.route_id)
        render = self.renderers.get(rcv) or Renderer()
        threads = self.receivers[rcv].threads
        group = json.loads(g.labels)
        rows = conn.execute(sa.select(na).where(na.c.receiver == rcv, na.c.group_id == gid)
                            .order_by(na.c.ingested_at, na.c.alert_id)).all()
        recs = {r.alert_id: json.loads(r.record) for r in rows}
        queue: list[dict[str, Any]] = []

        def enqueue(action: str, reason: str, message: dict, alerts: list[dict], *,
                    key: str | None = None, parent: str | None = None) -> None:
            queue.append({"receiver": rcv, "action": action, "reason": reason,
                          "message_key": key, "parent_key": parent, "created_at": now,
                          "payload": json.dumps({"message": message, "alerts": alerts,
                                                 "group": group})})

        def ack_of(alert_id: str) -> dict | None:
            a = acks.get(alert_id)
            return None if a is None else {"acked_by": a.acked_by, "comment": a.comment}

        # acknowledgements and escalations are told at once, whatever the group timers say
        for r in rows:
            a = acks.get(r.alert_id)
            if a is not None and a.announced_at is None and r.notified_status == "firing":
                msg = render.reply("ack", [recs[r.alert_id]], ack_of(r.alert_id))
                enqueue("reply", "ack", msg, [recs[r.alert_id]], parent=r.parent_key)
                conn.execute(db.alert_acks.update().where(db.alert_acks.c.alert_id == r.alert_id)
                             .values(announced_at=now))
        escalated = [r for r in rows if r.status == "firing" and r.notified_status == "firing"
                     and not suppressed(recs[r.alert_id]) and r.notified_severity is not None
                     and severity(recs[r.alert_id]["severity"]).rank
                     > severity(r.notified_severity).rank]
        for r in escalated:  # worse than when we last said: say it again, loudly
            rec = recs[r.alert_id]
            enqueue("reply", "escalated", render.reply("escalated", [rec]), [rec],
                    parent=r.parent_key)
            if threads and r.parent_key and r.parent_key.startswith("alert:"):
                enqueue("update", "escalated", render.alert(rec, ack=ack_of(r.alert_id)),
                        [rec], parent=r.parent_key)
            conn.execute(na.update().where(na.c.receiver == rcv, na.c.alert_id == r.alert_id)
                         .values(notified_severity=rec["severity"], last_notified_at=now))

        due = (g.first_at + route.group_wait_s if g.last_flush_at is None
               else g.last_flush_at + route.group_interval_s)
        if now < due:  # woken for an escalation: back to the group's own timer
            conn.execute(ng.update().where(ng.c.receiver == rcv, ng.c.group_id == gid).values(
                next_at=self._next_at(now, first_at=g.first_at, last_flush=g.last_flush_at,
                                      route=route, rows=rows, acks=acks)))
        else:
            # firing and not told yet; or fired and cleared before anyone was told (the
            # daemon caught up on a backlog) and lasted longer than a flap: still news
            new = [r for r in rows if r.notified_status is None
                   and not suppressed(recs[r.alert_id])
                   and (r.status == "firing" or _lasted(recs[r.alert_id]) >= route.group_wait_s)]
            repeats = [r for r in rows if r.status == "firing" and r.notified_status == "firing"
                       and r.alert_id not in acks and not suppressed(recs[r.alert_id])
                       and not (recs[r.alert_id].get("evidence") or {}).get("notice")
                       and now - (r.last_notified_at or now) >= route.repeat_interval_s]
            repeats = [r for r in repeats if r not in escalated]
            resolved = [r for r in rows if r.status == "resolved"
                        and r.notified_status == "firing"]
            parents: dict[str, str | None] = {r.alert_id: r.parent_key for r in rows}
            status = {r.alert_id: r.notified_status for r in rows}
            open_digest, digest_n = g.open_digest, g.digest_n
            touched: set[str] = set()

            if new:
                reason = "first" if g.last_flush_at is None else "new"
                if open_digest is None and len(new) > self.config.digest_threshold:
                    digest_n += 1
                    open_digest = f"digest:{rcv}:{gid}:{digest_n}"
                    for r in new:
                        parents[r.alert_id] = open_digest
                    members = [recs[a] for a, p in parents.items() if p == open_digest]
                    enqueue("post", reason, render.digest(group, members), members,
                            key=open_digest)
                elif open_digest is not None:
                    for r in new:
                        parents[r.alert_id] = open_digest
                    added = [recs[r.alert_id] for r in new]
                    enqueue("reply", "new", render.reply("new", added), added, parent=open_digest)
                    touched.add(open_digest)
                else:
                    for r in new:
                        key = f"alert:{rcv}:{r.alert_id}"
                        parents[r.alert_id] = key
                        enqueue("post", reason, render.alert(recs[r.alert_id],
                                                             ack=ack_of(r.alert_id)),
                                [recs[r.alert_id]], key=key)
                told = [r.alert_id for r in new if r.alert_id in acks]
                if told:  # the new message already says who acknowledged it
                    conn.execute(db.alert_acks.update().where(
                        db.alert_acks.c.alert_id.in_(told)).values(announced_at=now))
                for r in new:
                    status[r.alert_id] = r.status
                conn.execute(na.update().where(na.c.receiver == rcv,
                                               na.c.alert_id == sa.bindparam("a"))
                             .values(notified_status=sa.bindparam("s"), last_notified_at=now,
                                     parent_key=sa.bindparam("p"),
                                     notified_severity=sa.bindparam("v")),
                             [{"a": r.alert_id, "p": parents[r.alert_id], "s": r.status,
                               "v": recs[r.alert_id]["severity"]}
                              for r in new])
                notices = [r.alert_id for r in new
                           if (recs[r.alert_id].get("evidence") or {}).get("notice")]
                if notices:  # a one-off notice (a job's report) is over once told
                    conn.execute(na.update().where(na.c.receiver == rcv,
                                                   na.c.alert_id.in_(notices))
                                 .values(status="resolved", notified_status="resolved"))

            for parent, batch in _by_parent(repeats).items():
                items = [recs[r.alert_id] for r in batch]
                enqueue("reply", "repeat", render.reply("repeat", items), items, parent=parent)
                conn.execute(na.update().where(na.c.receiver == rcv, na.c.alert_id.in_(
                    [r.alert_id for r in batch])).values(last_notified_at=now))

            for parent, batch in _by_parent(resolved).items():
                items = [recs[r.alert_id] for r in batch]
                if parent is not None and parent.startswith("alert:"):
                    rec = items[0]
                    if threads:
                        enqueue("update", "resolved", render.alert(rec, ack=ack_of(rec["id"])),
                                items, parent=parent)
                        enqueue("reply", "resolved", render.reply("resolved", items), items,
                                parent=parent)
                    else:
                        enqueue("post", "resolved", render.alert(rec), items)
                else:
                    enqueue("reply", "resolved", render.reply("resolved", items), items,
                            parent=parent)
                    if parent is not None:
                        touched.add(parent)
                for r in batch:
                    status[r.alert_id] = "resolved"
                conn.execute(na.update().where(na.c.receiver == rcv, na.c.alert_id.in_(
                    [r.alert_id for r in batch])).values(notified_status="resolved"))

            for digest in sorted(touched):
                members = [recs[a] for a, p in parents.items()
                           if p == digest and status.get(a) is not None]
                if threads:
                    enqueue("update", "digest", render.digest(group, members), members,
                            parent=digest)
                if digest == open_digest and all(m["status"] == "resolved" for m in members):
                    open_digest = None

            # resolved before anyone was told (a flap inside group_wait, or silenced)
            conn.execute(na.delete().where(na.c.receiver == rcv, na.c.group_id == gid,
                                           na.c.status == "resolved",
                                           na.c.notified_status.is_(None)))
            values: dict[str, Any] = {"open_digest": open_digest, "digest_n": digest_n}
            if any(q["reason"] not in ("ack", "escalated") for q in queue):
                values["last_flush_at"] = last_flush = now
            else:
                last_flush = g.last_flush_at
            left = conn.execute(sa.select(na.c.alert_id, na.c.status, na.c.notified_status,
                                          na.c.last_notified_at).where(
                na.c.receiver == rcv, na.c.group_id == gid)).all()
            if not any(r.status == "firing" for r in left):
                # the episode of this group is over: the next alert starts a fresh group
                conn.execute(na.delete().where(na.c.receiver == rcv, na.c.group_id == gid))
                conn.execute(ng.delete().where(ng.c.receiver == rcv, ng.c.group_id == gid))
            else:
                values["next_at"] = self._next_at(now, first_at=g.first_at, last_flush=last_flush,
                                                 route=route, rows=left, acks=acks)
                conn.execute(ng.update().where(ng.c.receiver == rcv, ng.c.group_id == gid)
                             .values(**values))
        if queue:
            conn.execute(db.notify_queue.insert(), queue)
        return len(queue)

    @staticmethod
    def _next_at(now: float, *, first_at: float, last_flush: float | None, route: Any,
                 rows: Sequence[Any], acks: Mapping[str, db.Ack]) -> float:
        """When the group may next have something to say: its timer for pending news,
        the next reminder, or a re-check of alerts held back by a silence/inhibition."""
        due = (first_at + route.group_wait_s if last_flush is None
               else last_flush + route.group_interval_s)
        later = [now + 86400.0]
        for r in rows:
            pending = (r.status == "firing" and r.notified_status is None) or (
                r.status == "resolved" and r.notified_status == "firing")
            if pending:
                later.append(due if due > now else now + RECHECK_S)
            elif r.status == "firing" and r.alert_id not in acks:
                later.append(max(due, (r.last_notified_at or now) + route.repeat_interval_s))
        return min(later)

    # -- 3. deliver ---------------------------------------------------------------------
    def deliver(self, now: float | None = None, *, budget_s: float | None = None) -> int:
        """Send queued notifications in order, per receiver; how many were sent.

        Stops after ``send_budget_s`` of wall time (the rest goes next tick), so a
        slow Slack never holds the daemon's poll loop long enough to cost a rebalance.
        """
        now = self.clock() if now is None else now
        while self._unrecorded:
            self._unrecorded[0]()
            self._unrecorded.pop(0)
        deadline = time.monotonic() + (self.config.send_budget_s if budget_s is None
                                       else budget_s)
        sent = 0
        names = list(self.receivers)
        self._turn = (self._turn + 1) % max(1, len(names))  # who goes first rotates
        for name in names[self._turn:] + names[:self._turn]:
            receiver = self.receivers[name]
            if self._retry_at.get(name, float("-inf")) <= now:
                sent += self._deliver_to(name, receiver, now, deadline)
                if time.monotonic() >= deadline:
                    self._next_tick = now  # more is waiting: come back on the next loop
            if self.metrics is not None and (sent or now >= self._depth_at.get(name, -1.0)):
                self._depth_at[name] = now + 10.0
                self.metrics.receiver_queue_depth.labels(name).set(self.queue_depth(name))
        return sent

    def finish(self) -> None:
        """Before the daemon exits: wait for the sends in flight (at most a request
        timeout, ``alerts.slack.timeout_s``) and record their answers, so that a stop
        does not send them again after the restart. No new send starts."""
        self._finishing = True
        if not self._sending:
            return
        deadline = time.monotonic() + self.config.slack.timeout_s
        for sending in list(self._sending.values()):
            sending.done.wait(max(0.0, deadline - time.monotonic()))
        try:
            self.deliver(budget_s=max(0.1, deadline - time.monotonic()))
        except sa.exc.SQLAlchemyError as exc:
            log.warning("notifier: the last sends are not recorded, the store is away (%s): "
                        "they may be sent again after the restart", type(exc).__name__)

    def queue_depth(self, receiver: str) -> int:
        q = db.notify_queue
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(q).where(
                q.c.receiver == receiver, q.c.sent_at.is_(None))).scalar() or 0)

    def _deliver_to(self, name: str, receiver: Receiver, now: float, deadline: float) -> int:
        q, msgs = db.notify_queue, db.notify_messages
        sent = 0
        while time.monotonic() < deadline:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(q).where(q.c.receiver == name, q.c.sent_at.is_(None))
                                    .order_by(q.c.seq).limit(50)).all()
            if not rows:
                return sent
            for row in rows:
                if time.monotonic() >= deadline:
                    return sent
                payload = json.loads(row.payload)
                item = Item(action=row.action, reason=row.reason, message=payload["message"],
                            alerts=payload.get("alerts", []), group=payload.get("group", {}))
                outcome = "sent"
                if row.action in ("reply", "update"):
                    with self.engine.connect() as conn:
                        parent = conn.execute(sa.select(msgs.c.channel, msgs.c.ts)
                                              .where(msgs.c.key == row.parent_key)).first()
                    if parent is not None and parent.ts:
                        item.channel, item.ts = parent.channel, parent.ts
                    elif row.action == "update" or not receiver.threads:
                        outcome = "skipped" if row.action == "update" else "sent"
                    else:
                        item.action = "post"  # the thread is gone: say it in the channel
                try:
                    channel, ts = (None, None) if outcome == "skipped" else self._send(
                        name, receiver, row.seq, item, deadline)
                except _StillSending:  # its answer is looked for on the next loop
                    self._next_tick = now
                    return sent
                except MessageRejectedError as exc:
                    log.error("receiver %s refused notification %d (%s): %s; skipping it",
                              name, row.seq, exc.reason, exc)
                    self._count(name, exc.reason)
                    self._record(partial(self._mark, row.seq, now, f"rejected:{exc.reason}"[:80]))
                    continue
                except DeliveryError as exc:
                    self._failed(name, exc, now, len(rows))
                    return sent
                self._record(partial(self._mark, row.seq, now, outcome, key=row.message_key,
                                     receiver=name, channel=channel, ts=ts))
                if outcome == "sent":
                    sent += 1
                    self._count(name, "sent")
                    if self.metrics is not None:
                        self.metrics.receiver_delivery_seconds.labels(name).observe(
                            max(0.0, now - row.created_at))
                self._backoff.pop(name, None)
                if name in self._blocked:
                    self._blocked.discard(name)
                    log.info("receiver %s delivers again", name)
                    if self.metrics is not None:
                        self.metrics.receiver_blocked.labels(name).set(0)
        return sent

    def _send(self, name: str, receiver: Receiver, seq: int, item: Item,
              deadline: float) -> tuple[str | None, str | None]:
        """``receiver.send(item)`` in a thread of its own, waited for until
        ``deadline``: a receiver that hangs (up to its request timeout) holds the loop
        no longer than the send budget. Unanswered by then, the send stays in flight
        (``_StillSending``); later ticks look for its answer without waiting and
        record it: never sent twice."""
        sending = self._sending.get(name)
        if sending is None or sending.seq != seq:
            if self._finishing:
                raise _StillSending  # stopping: no new send
            sending = self._sending[name] = _Sending(seq, partial(receiver.send, item))
            left = deadline - time.monotonic()
            wait = None if left == float("inf") else max(0.0, left)
        else:
            wait = 0.0  # it had its budget already
        if not sending.done.wait(wait):
            raise _StillSending
        del self._sending[name]
        return sending.result()

    def _record(self, mark: Callable[[], None]) -> None:
        """Record a send (``mark``); when the store is away, keep it for the next
        ``deliver`` to record first, and raise."""
        try:
            mark()
        except sa.exc.SQLAlchemyError:
            self._unrecorded.append(mark)
            raise

    def _mark(self, seq: int, now: float, outcome: str, *, key: str | None = None,
              receiver: str = "", channel: str | None = None, ts: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(db.notify_queue.update().where(db.notify_queue.c.seq == seq)
                         .values(sent_at=now, outcome=outcome))
            if key is not None and outcome == "sent":
                conn.execute(db.notify_messages.delete().where(db.notify_messages.c.key == key))
                conn.execute(db.notify_messages.insert().values(
                    key=key, receiver=receiver, channel=channel, ts=ts, created_at=now))

    def _failed(self, name: str, exc: DeliveryError, now: float, pending: int) -> None:
        self._count(name, exc.reason)
        self._depth_at.pop(name, None)  # refresh the queue-depth gauge now
        if not exc.retryable:
            wait = self.config.permanent_retry_s
            if name not in self._blocked:
                log.error("receiver %s stopped: %s. Notifications wait in the queue (%d+); "
                          "fix the setting — they are sent once it works (next try in %.0fs)",
                          name, exc, pending, wait)
            self._blocked.add(name)
            if self.metrics is not None:
                self.metrics.receiver_blocked.labels(name).set(1)
        else:
            wait = exc.retry_after_s if exc.retry_after_s is not None else min(
                self._backoff.get(name, 0.5) * 2, self.config.max_backoff_s)
            log.warning("receiver %s: delivery failed (%s), retrying in %.1fs: %s",
                        name, exc.reason, wait, exc)
        self._backoff[name] = wait
        self._retry_at[name] = now + wait

    def _count(self, receiver: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.receiver_notifications.labels(receiver, result).inc()

    def cleanup(self, now: float) -> None:
        """Forget notifications sent more than a week ago, and posted messages no
        alert or queued notification refers to any more."""
        q, msgs, na, ng = db.notify_queue, db.notify_messages, db.notify_alerts, db.notify_groups
        with self.engine.begin() as conn:
            conn.execute(q.delete().where(q.c.sent_at < now - KEEP_SENT_S))
            used = sa.union(
                sa.select(na.c.parent_key.label("k")).where(na.c.parent_key.is_not(None)),
                sa.select(ng.c.open_digest.label("k")).where(ng.c.open_digest.is_not(None)),
                sa.select(q.c.parent_key.label("k")).where(q.c.sent_at.is_(None),
                                                           q.c.parent_key.is_not(None)))
            conn.execute(msgs.delete().where(msgs.c.created_at < now - KEEP_SENT_S,
                                             msgs.c.key.not_in(sa.select(used.subquery().c.k))))


class _StillSending(Exception):  # noqa: N818 (not an error: an answer still to come)
    """The receiver has not answered within the send budget."""


class _Sending:
    """One send running in a daemon thread (a hung request never holds the exit);
    ``result()`` once ``done``: the send's answer, or its exception raised."""

    def __init__(self, seq: int, send: Callable[[], tuple[str | None, str | None]]) -> None:
        self.seq = seq
        self.done = threading.Event()
        self._answer: tuple[str | None, str | None] = (None, None)
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._answer = send()
            except BaseException as exc:  # handed to the loop by result()
                self._error = exc
            finally:
                self.done.set()

        threading.Thread(target=run, name="notify-send", daemon=True).start()

    def result(self) -> tuple[str | None, str | None]:
        if self._error is not None:
            raise self._error
        return self._answer


def _lasted(record: Mapping[str, Any]) -> float:
    """Event-time length of an alert episode, in seconds."""
    try:
        return (datetime.fromisoformat(record["last_seen"])
                - datetime.fromisoformat(record["first_seen"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return float("inf")


def _by_parent(rows: Sequence[Any]) -> dict[str | None, list[Any]]:
    out: dict[str | None, list[Any]] = defaultdict(list)
    for r in rows:
        out[r.parent_key].append(r)
    return out


def build_receivers(config: NotifyConfig) -> dict[str, Receiver]:
    """The receivers that can deliver: a channel needs ``alerts.slack.token``."""
    token = config.slack.token.get_secret_value() if config.slack.token else None
    out: dict[str, Receiver] = {}
    for name, rc in config.receivers.items():
        if rc.webhook_url is not None:
            out[name] = SlackWebhookReceiver(name, rc.webhook_url.get_secret_value(),
                                             timeout_s=config.slack.timeout_s)
        elif rc.url is not None:
            out[name] = JsonWebhookReceiver(name, rc.url.get_secret_value(),
                                            timeout_s=config.slack.timeout_s)
        elif rc.channel is not None and token:
            out[name] = SlackReceiver(name, rc.channel, token, base_url=config.slack.base_url,
                                      timeout_s=config.slack.timeout_s)
    return out


def routes_without_transport(alerts_config: Any, receivers: Any) -> dict[str, list[str]]:
    """Receivers that routes send alerts to but that have no transport (no bot token
    for their channel, no webhook), each with the matchers of those routes: what is
    routed there reaches only the console and JSONL sinks."""
    out: dict[str, list[str]] = {}
    tree = RouteTree(alerts_config.route)  # receivers inherited as routing resolves them
    for rid in sorted(tree.by_id):
        route = tree.by_id[rid]
        if route.receiver not in receivers:
            out.setdefault(route.receiver, []).append(
                ", ".join(map(str, route.matchers)) or "(every alert)")
    return out


def build_notifiers(config: Any, store: Any, metrics: Any = None) -> list[Notifier]:
    """The daemon's notifier (empty when no receiver can deliver, e.g. no token)."""
    receivers = build_receivers(config.alerts)
    if not receivers:
        log.info("alert notifications: no receiver configured (set alerts.slack.token or a "
                 "receiver's webhook_url); alerts go to the console/JSONL sinks only")
        return []
    for name, routes in sorted(routes_without_transport(config.alerts, receivers).items()):
        log.warning("alert receiver %s has no transport (no alerts.slack.token, no "
                    "webhook_url): the alerts routed to it (%s) reach the console/JSONL "
                    "sinks only", name, "; ".join(routes))
    return [Notifier(store, config.alerts, receivers, instance=config.instance_id,
                     metrics=metrics)]
