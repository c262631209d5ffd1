"""The ``inferwatch`` command line (see DESIGN.md, "Command line — contract")."""

from __future__ import annotations

import argparse
import gzip
import logging
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import msgspec

from monitor import __version__
from monitor.config import Config, ConfigError, load_config
from monitor.logs import setup_logging

log = logging.getLogger("inferwatch")


def _config_or_exit(path: str | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"inferwatch: invalid configuration{f' in {path}' if path else ''}:",
              file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(args: argparse.Namespace) -> int:
    from monitor.daemon import Daemon, StartupError

    config = _config_or_exit(args.config)
    setup_logging(config.logging.level, config.logging.format)
    log.info("effective config: %s", msgspec.json.encode(config.redacted()).decode())
    daemon = Daemon(config)
    daemon.install_signal_handlers()
    try:
        daemon.run()
    except StartupError as exc:
        print(f"inferwatch: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _config_or_exit(args.config)
    print(f"{args.config}: OK")
    if args.show:
        print(msgspec.json.encode(config.redacted()).decode())
    if not args.connect:
        return 0
    from monitor.preflight import preflight

    logging.disable(logging.ERROR)  # the clients' own retries would bury the answers
    try:
        checks = preflight(config)
    finally:
        logging.disable(logging.NOTSET)
    for check in checks:
        print(check.line())
    return 1 if any(c.ok is False for c in checks) else 0


def cmd_replay(args: argparse.Namespace) -> int:
    from alerts.sinks import ConsoleSink, JsonlSink, Sink
    from monitor.replay import AlertTally, BadTally, replay

    config = _config_or_exit(args.config)
    setup_logging(config.logging.level, config.logging.format)
    source: Path | BinaryIO
    if args.file == "-":  # the Unix convention (a file named "-" is ./-)
        if sys.stdin is None:
            print("inferwatch: replay -: there is no standard input", file=sys.stderr)
            return 2
        source, name = sys.stdin.buffer, "standard input"
    else:
        source = path = Path(args.file)
        if not path.is_file():
            print(f"inferwatch: {'not a file' if path.exists() else 'no such file'}: {path}",
                  file=sys.stderr)
            return 2
        name = str(path)
    tally = AlertTally()
    sinks: list[Sink] = [tally]
    if not args.quiet:
        sinks.append(ConsoleSink())
    if args.alerts_out:
        out = Path(args.alerts_out)
        try:  # created (emptied) now: it exists when the replay raises no alert too
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(b"")
        except OSError as exc:
            print(f"inferwatch: cannot write --alerts-out {out}: {exc.strerror}", file=sys.stderr)
            return 2
        sinks.append(JsonlSink(out))

    def progress(seen: int, bad: int) -> None:
        print(f"replay: {seen:,} records read, {bad:,} bad", file=sys.stderr)

    bad = BadTally(sys.stderr)
    references = None
    if args.stored_references:
        from monitor.reference import load_references
        from monitor.store import Store

        store = Store(config.store.url.get_secret_value())
        store.migrate()
        references = load_references(store)
        store.close()
    try:
        pipeline = replay(source, config, sinks, progress=progress, on_bad=bad,
                          references=references)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:  # a damaged or truncated gzip file
        print(f"inferwatch: cannot read {name} to its end: {exc}; the alerts above were "
              "raised by the records before the damage", file=sys.stderr)
        return 1
    firing = len(pipeline.alerts.firing)
    print(f"replay done: {name}: {bad.summary()}; {tally.records:,} alert record(s), "
          f"{firing} alert(s) still firing at the end", file=sys.stderr)
    return 0


LIST_SCAN = 100_000  # stored alerts ``alerts list --match`` looks through, newest first


def cmd_alerts_list(args: argparse.Namespace) -> int:
    from alerts.cli import marks
    from alerts.matchers import labels_of, match_all, parse_all
    from alerts.sinks import NO_CONTROL
    from monitor.store import Store

    config = _config_or_exit(args.config)
    store = Store(config.store.url.get_secret_value())
    store.migrate()
    mark = marks(store)
    matchers = parse_all(args.match or ())
    shown = 0
    # with matchers, the newest matching ones (among the newest LIST_SCAN stored)
    for record in store.list_alerts(args.status, LIST_SCAN if matchers else args.limit):
        rec = msgspec.json.decode(record)
        if matchers and not match_all(matchers, labels_of(rec)):
            continue
        subject = " ".join(f"{k}={v}" for k, v in sorted(rec["subject"].items()))
        line = (f"{rec['fingerprint']}  {rec['status']:8} {rec['severity']:8} {rec['kind']:10} "
                f"{rec['model']} {subject}  {rec['summary']}{mark(rec)}")
        print(line.translate(NO_CONTROL))  # client ids must not drive the terminal
        shown += 1
        if shown >= args.limit:
            break
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from monitor.demo import run_demo

    return run_demo(Path(args.workdir), minutes=args.minutes, wall_seconds=args.wall_seconds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferwatch",
        description="Watch ML models in production through their inference logs.",
    )
    parser.add_argument("--version", action="version", version=f"inferwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon against Kafka")
    p.add_argument("--config", required=True, help="YAML config file")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a config and say what is wrong")
    p.add_argument("--config", required=True)
    p.add_argument("--show", action="store_true", help="print the effective config (redacted)")
    p.add_argument("--connect", action="store_true",
                   help="also reach Kafka (topics, partitions), the store and the Slack "
                        "receivers; exit 1 if one fails")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("replay", help="run the detectors over archived events (JSONL)")
    p.add_argument("file", help="JSONL events, plain or gzip; - reads standard input")
    p.add_argument("--config", help="YAML config file (default: built-in defaults)")
    p.add_argument("--alerts-out", help="write alert records here (JSONL, replaced)")
    p.add_argument("--quiet", action="store_true", help="no alert lines on the console")
    p.add_argument("--stored-references", action="store_true",
                   help="use the drift references stored in the config's store (as `run` does)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("alerts", help="list, acknowledge and silence stored alerts")
    alerts_sub = p.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    q = alerts_sub.add_parser("list", help="list alerts, newest first")
    q.add_argument("--config", required=True)
    q.add_argument("--status", choices=["firing", "resolved"])
    q.add_argument("--limit", type=int, default=50)
    from alerts.cli import label_matcher

    q.add_argument("-m", "--match", action="append", type=label_matcher,
                   help="label matcher as for silences (client_id=key-17, kind=~flooding|"
                        "extraction, model!=x); repeat to AND them")
    q.set_defaults(func=cmd_alerts_list)
    from alerts.cli import add_commands as add_alert_commands

    add_alert_commands(alerts_sub, _config_or_exit)

    p = sub.add_parser("demo", help="the whole loop on this machine, no set-up needed")
    p.add_argument("--workdir", default="inferwatch-demo", help="where files go")
    p.add_argument("--minutes", type=float, default=30.0,
                   help="simulated minutes of traffic (event time)")
    p.add_argument("--wall-seconds", type=float, default=60.0,
                   help="how long producing the traffic takes (real time)")
    p.set_defaults(func=cmd_demo)

    from monitor.reference_cli import add_reference_commands

    add_reference_commands(sub, _config_or_exit)  # reference build, reference list

    from monitor.jobs_cli import add_job_commands

    add_job_commands(sub)  # compare, report drift, jobs status
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from sqlalchemy.exc import OperationalError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OperationalError as exc:  # the commands that read the store (the daemon retries)
        reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(
            exc.orig).__name__
        print(f"inferwatch: cannot use the store (store.url): {reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
