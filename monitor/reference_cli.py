"""``inferwatch reference build|list``: drift references from files, in the store."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from monitor.config import Config
from monitor.reference_file import DEFAULT_MAX_ROWS


def _time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def add_reference_commands(sub: Any, config_or_exit: Callable[[str | None], Config]) -> None:
    p = sub.add_parser("reference", help="build and list drift references")
    ref_sub = p.add_subparsers(dest="reference_command", required=True, metavar="ACTION")

    def cmd_build(args: argparse.Namespace) -> int:
        from monitor.reference import save_reference
        from monitor.reference_file import reference_from_file
        from monitor.store import Store

        config = config_or_exit(args.config)
        drift = config.detectors.drift

        def progress(rows: int) -> None:
            sys.stderr.write(f"reference build: {rows:,} rows read from {args.file}\n")

        try:
            built = reference_from_file(
                args.file, model=args.model, model_version=args.model_version or "",
                prediction_column=args.prediction_column,
                confidence_column=args.confidence_column, drop_columns=args.drop,
                since=_time(args.since) if args.since else None,
                until=_time(args.until) if args.until else None, max_rows=args.max_rows,
                progress=progress, bins=drift.bins, top_k=drift.top_k,
                segment_by=drift.segment_by, top_segments=drift.top_segments)
        except (OSError, ValueError) as exc:
            sys.stderr.write(f"inferwatch: {exc}\n")
            return 2
        ref = built.reference
        store = Store(config.store.url.get_secret_value())
        store.migrate()
        ref_id = save_reference(store, ref)
        lay = ref.layout
        segs = f", segments by {lay.segment_by}: {', '.join(lay.segments)}" if lay.segment_by else ""
        drawn = (f" (a uniform sample of {built.rows_matching:,}: --max-rows)"
                 if built.rows_matching > ref.n else "")
        sys.stdout.write(
            f"reference {ref_id}: {ref.model}@{ref.model_version or '*'} from {ref.source}, "
            f"{ref.n:,} rows{drawn}, {len(lay.numeric)} numeric and {len(lay.categorical)} "
            f"categorical columns{segs}\n")
        return 0

    def columns(text: str) -> list[str]:
        return [c.strip() for c in text.split(",") if c.strip()]

    def positive(text: str) -> int:
        n = int(text)
        if n < 1:
            raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
        return n

    q = ref_sub.add_parser(
        "build", help="build a model's drift reference from CSV, Parquet or JSONL",
        description="Rows of a CSV/Parquet/JSONL table are feature rows; a JSONL archive "
                    "of inference-log events (with 'features') pins a production period.")
    q.add_argument("file", help="training/validation data, or archived events (.jsonl)")
    q.add_argument("--config", help="YAML config file (store URL, drift bins)")
    q.add_argument("--model", required=True)
    q.add_argument("--model-version", help="default: every version of the model")
    q.add_argument("--prediction-column", help="table column holding the model's prediction")
    q.add_argument("--confidence-column", help="table column holding the confidence")
    q.add_argument("--drop", type=columns, action="extend", default=[], metavar="COLUMNS",
                   help="table columns that are not features, comma-separated (ids, label); "
                        "may be repeated")
    q.add_argument("--since", help="events: start of the pinned period (RFC 3339 or Unix s)")
    q.add_argument("--until", help="events: end of the pinned period (exclusive)")
    q.add_argument("--max-rows", type=positive, default=DEFAULT_MAX_ROWS,
                   help="rows kept, a uniform sample of the file's when it has more "
                        f"(default {DEFAULT_MAX_ROWS:,})")
    q.set_defaults(func=cmd_build)

    def cmd_list(args: argparse.Namespace) -> int:
        from monitor.reference import list_references
        from monitor.store import Store

        config = config_or_exit(args.config)
        store = Store(config.store.url.get_secret_value())
        store.migrate()
        for r in list_references(store):
            sys.stdout.write(
                f"{r['id']:>5}  {r['model']}@{r['model_version'] or '*'}  {r['n_events']:>9,} "
                f"events  {r['source']}  {r['created_at']:%Y-%m-%d %H:%M}\n")
        return 0

    q = ref_sub.add_parser("list", help="list stored references, newest first")
    q.add_argument("--config", help="YAML config file")
    q.set_defaults(func=cmd_list)
