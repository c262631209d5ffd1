"""``inferwatch compare``, ``inferwatch report drift`` and ``inferwatch jobs status``:
the scheduled jobs by hand, on the same stored summaries."""

# ruff: noqa: T201 - a command line prints

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from alerts.sinks import NO_CONTROL
from monitor.config import Config

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str | None, tz: str, now: float) -> float | None:
    """``now``, ``7d`` / ``12h`` (ago), an ISO date (midnight in ``tz``) or date-time
    (in ``tz`` unless it carries an offset) -> Unix seconds.

    >>> parse_when("2026-01-05", "UTC", 0.0), parse_when("1d", "UTC", 86400.0)
    (1767571200.0, 0.0)
    """
    if text is None:
        return None
    text = text.strip()
    if text == "now":
        return now
    m = _AGO.match(text)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected now, 7d, 12h, 2026-01-05 or 2026-01-05T08:00") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(tz))
    return dt.timestamp()


def _setup(args: argparse.Namespace) -> tuple[Config, object]:
    from monitor.cli import _config_or_exit
    from monitor.scheduler import JobContext
    from monitor.store import Store

    config = _config_or_exit(args.config)
    store = Store(config.store.url.get_secret_value())
    store.migrate()
    return config, JobContext(config, store, config.instance_id)


def _say(text: str) -> None:
    """Print ``text`` line by line with control characters masked: model names and
    versions come from the producers' events and must not drive the terminal."""
    print("\n".join(line.translate(NO_CONTROL) for line in text.split("\n")))


def _range(args: argparse.Namespace, config: Config, default_s: float) -> tuple[float, float]:
    now = time.time()
    try:
        until = parse_when(args.until, config.jobs.timezone, now) or now
        since = parse_when(args.since, config.jobs.timezone, until)
    except argparse.ArgumentTypeError as exc:
        print(f"inferwatch: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return (until - default_s if since is None else since), until


def cmd_compare(args: argparse.Namespace) -> int:
    from monitor.compare import list_comparisons, run_comparisons

    config, ctx = _setup(args)
    if args.list:
        for r in list_comparisons(ctx.store, args.model, args.limit):  # type: ignore[attr-defined]
            _say(f"{r['created_at'][:16]}  {r['verdict']:13} {r['headline']}")
        return 0
    if bool(args.baseline) != bool(args.candidate) or (args.baseline and not args.model):
        print("inferwatch: --baseline and --candidate go together, with --model",
              file=sys.stderr)
        return 2
    since, until = _range(args, config, config.jobs.compare.window_h * 3600)
    pairs = [(args.model, args.baseline, args.candidate)] if args.baseline else None
    results = run_comparisons(ctx, until, model=args.model, pairs=pairs,  # type: ignore[arg-type]
                              since=since, post=args.post)
    if not results:
        _say(f"compare: no model{f' {args.model}' if args.model else ''} had two versions "
              f"live between {datetime.fromtimestamp(since, UTC):%Y-%m-%d %H:%M} and "
              f"{datetime.fromtimestamp(until, UTC):%Y-%m-%d %H:%M} UTC")
    for r in results:
        _say(f"{r['verdict']:13} {r['headline']}")
        for note in r["notes"]:
            _say(f"{'':14}note: {note}")
        if args.json:
            print(json.dumps(r["numbers"], indent=1, sort_keys=True, default=str))
    return 0


def cmd_report_drift(args: argparse.Namespace) -> int:
    from monitor.drift_report import report_job

    config, ctx = _setup(args)
    since, until = _range(args, config, config.jobs.drift_report.days * 86400)
    out = Path(args.out) if args.out else None
    _say(report_job(ctx, time.time(), model=args.model, since=since,  # type: ignore[arg-type]
                     until=until, out_dir=out, post=args.post))
    return 0


def cmd_jobs_status(args: argparse.Namespace) -> int:
    from monitor.scheduler import Lease, status_rows

    _config, ctx = _setup(args)
    store = ctx.store  # type: ignore[attr-defined]
    holder = Lease(store.engine, "", ttl_s=1).holder_now()
    print(f"scheduler lease: {holder or 'nobody (no daemon running jobs)'}")
    for r in status_rows(store):
        last_ok = (datetime.fromtimestamp(r["last_success_at"], UTC).isoformat(timespec="minutes")
                   if r["last_success_at"] else "never")
        _say(f"{r['job']:13} runs {r['runs']:4}  failures {r['failures']:3} "
              f"(in a row {r['consecutive_failures']})  last success {last_ok}  "
              f"last: {(r['last_message'] or '').splitlines()[0][:100] if r['last_message'] else ''}")
    return 0


def add_job_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare model versions on stored summaries")
    p.add_argument("--config", required=True)
    p.add_argument("--model", help="only this model")
    p.add_argument("--baseline", help="champion version (with --candidate)")
    p.add_argument("--candidate", help="challenger version (with --baseline)")
    p.add_argument("--since", help="now, 24h, 7d, 2026-01-05 or 2026-01-05T08:00 "
                                   "(default: jobs.compare.window_h before --until)")
    p.add_argument("--until", help="default: now")
    p.add_argument("--list", action="store_true", help="show stored verdicts instead")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true", help="print the numbers behind each verdict")
    p.add_argument("--post", action="store_true", help="also send the verdicts as alert records")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("report", help="write reports on stored summaries")
    rsub = p.add_subparsers(dest="report_command", required=True, metavar="REPORT")
    q = rsub.add_parser("drift", help="the weekly drift report, for any period")
    q.add_argument("--config", required=True)
    q.add_argument("--model", help="only this model (default: every model with traffic)")
    q.add_argument("--since", help="default: jobs.drift_report.days before --until")
    q.add_argument("--until", help="default: now")
    q.add_argument("--out", help="reports directory (default: jobs.reports_dir)")
    q.add_argument("--post", action="store_true", help="also send the summary as an alert record")
    q.set_defaults(func=cmd_report_drift)

    p = sub.add_parser("jobs", help="scheduled jobs")
    jsub = p.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    q = jsub.add_parser("status", help="who runs the jobs, and how their last runs went")
    q.add_argument("--config", required=True)
    q.set_defaults(func=cmd_jobs_status)

