# ruff: noqa: T201 - a command line prints
"""``inferwatch alerts ack|silence|unsilence|silences``: acknowledgements and
silences are rows in the store, read by the notifier of every replica."""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from alerts import db
from alerts.matchers import Matcher
from alerts.sinks import NO_CONTROL

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90m``, ``2h``, ``1h30m``, ``7d`` → seconds.

    >>> parse_duration("1h30m")
    5400.0
    """
    text = text.strip().lower()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30m, 2h, 1h30m, 7d")
    return float(sum(float(n) * _UNIT[u] for n, u in parts))


def label_matcher(text: str) -> str:
    """An argparse type: a label matcher as text, refused with the parser's reason."""
    try:
        Matcher.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _who() -> str:
    try:
        return os.environ.get("INFERWATCH_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _store(config: Any) -> Any:
    from monitor.store import Store

    store = Store(config.store.url.get_secret_value())
    store.migrate()
    return store


def cmd_silence(args: argparse.Namespace, config: Any) -> int:
    store = _store(config)
    now = time.time()
    sid = db.add_silence(store.engine, args.match, starts_at=now, ends_at=now + args.duration,
                         created_by=args.by or _who(), comment=args.why)
    matching = [r for r in (_records(store, "firing")) if db.silenced_by(
        [db.Silence(sid, tuple(Matcher.parse(m) for m in args.match), now, now + args.duration,
                    "", "")], r)]
    print(f"silence {sid} until {_when(now + args.duration)}: {' '.join(args.match)}")
    print(f"  matches {len(matching)} firing alert(s) now; end it early with "
          f"`inferwatch alerts unsilence {sid} --config {args.config}`")
    return 0


def cmd_unsilence(args: argparse.Namespace, config: Any) -> int:
    store = _store(config)
    ended = db.expire_silence(store.engine, args.id, time.time())
    if len(ended) == 1:
        print(f"silence {ended[0]} ended")
        return 0
    if not ended:
        print(f"inferwatch: no active silence with id {args.id!r}", file=sys.stderr)
    else:
        print(f"inferwatch: {args.id!r} is ambiguous ({', '.join(ended)})", file=sys.stderr)
    return 1


def cmd_silences(args: argparse.Namespace, config: Any) -> int:
    store = _store(config)
    now = time.time()
    for s in db.silences(store.engine, None if args.all else now):
        state = "active" if s.active(now) else ("ended" if s.ends_at <= now else "pending")
        print(f"{s.id}  {state:7} until {_when(s.ends_at)}  {' '.join(map(str, s.matchers))}"
              f"  by {s.created_by}: {s.comment}")
    return 0


def _one_alert(store: Any, ref: str) -> dict | None:
    """The one stored alert whose fingerprint or id starts with ``ref``; None (and
    why, on stderr) when none or several do."""
    found = db.find_alerts(store.engine, ref)
    if len(found) == 1:
        return found[0]
    what = "no stored alert" if not found else f"{len(found)} alerts"
    print(f"inferwatch: {what} match {ref!r} (give more of the fingerprint or id)",
          file=sys.stderr)
    return None


def cmd_show(args: argparse.Namespace, config: Any) -> int:
    """The whole stored record (evidence, sample request ids, the detector's
    settings) as JSON; whether it is acknowledged or silenced on stderr."""
    import json

    store = _store(config)
    rec = _one_alert(store, args.alert)
    if rec is None:
        return 1
    print(json.dumps(rec, indent=2, sort_keys=True))
    mark = marks(store)(rec).strip()
    if mark:
        print(mark, file=sys.stderr)
    return 0


def cmd_ack(args: argparse.Namespace, config: Any) -> int:
    store = _store(config)
    rec = _one_alert(store, args.alert)
    if rec is None:
        return 1
    db.add_ack(store.engine, rec, acked_by=args.by or _who(), comment=args.why, now=time.time())
    print(f"acknowledged {rec['fingerprint']} ({rec['kind']} on {rec['model']}): no more "
          "reminders for this episode".translate(NO_CONTROL))
    return 0


def marks(store: Any) -> Callable[[dict], str]:
    """For ``alerts list``: `` [acked by …]`` and `` [silenced <id>]`` after a record."""
    now = time.time()
    acked = db.acks(store.engine)
    active = [s for s in db.silences(store.engine, now) if s.active(now)]

    def mark(rec: dict) -> str:
        out = ""
        if rec.get("id") in acked:
            out += f" [acked by {acked[rec['id']].acked_by}]"
        silence = db.silenced_by(active, rec) if rec.get("status") == "firing" else None
        if silence is not None:
            out += f" [silenced {silence.id}]"
        return out

    return mark


def _records(store: Any, status: str | None) -> list[dict]:
    import json

    return [json.loads(r) for r in store.list_alerts(status, 10_000)]


def add_commands(sub: Any, config_or_exit: Callable[[str | None], Any]) -> None:
    """Register ``show``, ``ack``, ``silence``, ``unsilence`` and ``silences`` under
    ``alerts``."""

    def wrap(fn: Callable[[argparse.Namespace, Any], int]) -> Callable[[argparse.Namespace], int]:
        return lambda args: fn(args, config_or_exit(args.config))

    p = sub.add_parser("show", help="one alert's whole record: evidence, sample request ids")
    p.add_argument("alert", help="fingerprint or alert id (a unique prefix is enough)")
    p.add_argument("--config", required=True)
    p.set_defaults(func=wrap(cmd_show))

    p = sub.add_parser("ack", help="acknowledge an alert: no more reminders, a note in Slack")
    p.add_argument("alert", help="fingerprint or alert id (a unique prefix is enough)")
    p.add_argument("--config", required=True)
    p.add_argument("--by", help="who acknowledges (default: $INFERWATCH_USER or login)")
    p.add_argument("--why", required=True, help="what is being done about it")
    p.set_defaults(func=wrap(cmd_ack))

    p = sub.add_parser("silence", help="mute notifications of matching alerts for a while")
    p.add_argument("-m", "--match", action="append", required=True, type=label_matcher,
                   help="label matcher: name=value, name!=value, name=~regex, name!~regex "
                        "(labels: kind, severity, model, model_version, detector, fingerprint, "
                        "client_id, …); repeat to AND them")
    p.add_argument("-d", "--duration", type=parse_duration, default=parse_duration("2h"),
                   help="how long (30m, 2h, 1d; default 2h)")
    p.add_argument("--config", required=True)
    p.add_argument("--by", help="who silences (default: $INFERWATCH_USER or login)")
    p.add_argument("--why", required=True, help="why (shown to whoever looks next)")
    p.set_defaults(func=wrap(cmd_silence))

    p = sub.add_parser("unsilence", help="end a silence now")
    p.add_argument("id", help="silence id (a unique prefix is enough)")
    p.add_argument("--config", required=True)
    p.set_defaults(func=wrap(cmd_unsilence))

    p = sub.add_parser("silences", help="list silences (active and pending)")
    p.add_argument("--config", required=True)
    p.add_argument("--all", action="store_true", help="include ended silences")
    p.set_defaults(func=wrap(cmd_silences))
