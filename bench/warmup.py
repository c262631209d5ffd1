"""Checkpoints while many quiet model versions build their drift references.

Each version keeps its first 5,000 events raw until its automatic reference is
built (``detectors.drift``); a quiet version holds them for hours. This runs
``--versions`` versions of 25 float features that have each seen
``--warm-events`` events, then ``--checkpoints`` checkpoints into a SQLite store
with ``--events-between`` new events per version before each (a quiet spell:
one event a second per version, 5 s apart), and reports what each checkpoint
writes and takes: the model-wide state and its new row chunks
(``monitor.row_chunks``), with window summaries on and off; then the time to
restore it all. ``--before REV`` runs the same on commit REV's code (a temporary
git worktree), e.g. one that wrote the rows inside the state at every checkpoint.

    .venv/bin/python -m bench.warmup [--versions 100] [--before REV]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import sqlalchemy as sa

from bench.report import write_section
from detectors.drift import DistributionDrift
from monitor.checkpoint import Checkpointer
from monitor.config import build_config
from monitor.pipeline import Pipeline, Record
from monitor.store import Store

PID = ("logs", 0)
T0 = 1_767_225_600.0


def records(versions: int, start: int, per_version: int, rng: np.random.Generator) -> list[Record]:
    """``per_version`` events of each version, one a second each, from second ``start``."""
    enc = msgspec.json.Encoder()
    out = []
    for s in range(start, start + per_version):
        x = rng.normal(0, 1, (versions, 25)).round(4)
        for v in range(versions):
            out.append(Record(s * versions + v, enc.encode({
                "ts": T0 + s, "model": f"model-{v}", "model_version": "1", "client_id": f"c{v}",
                "features": {f"f{j:02d}": float(x[v, j]) for j in range(25)},
                "prediction": int(rng.integers(10)), "confidence": float(rng.random())})))
    return out


def warming_rows(p: Pipeline) -> int:
    return sum(len(slot.detector._ref_rows) for k in p.models.detectors
               for slot in k.slots.values() if isinstance(slot.detector, DistributionDrift))


def model_bytes(store: Store) -> tuple[int, dict[tuple[str, int], int]]:
    """Bytes of the stored model-wide state, and of each row chunk by (rows id, seq)
    (none before ``state_chunks`` existed)."""
    with store.engine.connect() as conn:
        state = conn.execute(sa.text(
            "SELECT length(state) FROM checkpoints WHERE scope LIKE 'models:%'")).scalar_one()
        if not sa.inspect(conn).has_table("state_chunks"):
            return int(state), {}
        chunks = conn.execute(sa.text("SELECT rows_id, seq, length(rows) FROM state_chunks"))
        return int(state), {(r[0], r[1]): int(r[2]) for r in chunks}


def measure(args: argparse.Namespace, summaries: bool) -> dict[str, float]:
    """Figures of one run of this code (see the module); window summaries on or off."""
    config = build_config({"jobs": {"summaries": {"enabled": summaries}}}, env={})
    rng = np.random.default_rng(1)
    p = Pipeline(config)
    second = 0
    for _ in range(0, args.warm_events, 100):
        p.process(PID, records(args.versions, second, 100, rng))
        p.advance()
        second += 100
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'store.db'}")
        store.migrate()
        cp = Checkpointer(store, p, group="g", producer="a")
        started = time.perf_counter()
        cp.save()
        first_s = time.perf_counter() - started
        written, took = [], []
        for _ in range(args.checkpoints):
            p.process(PID, records(args.versions, second, args.events_between, rng))
            p.advance()
            second += args.events_between
            _, before = model_bytes(store)
            started = time.perf_counter()
            cp.save()
            took.append(time.perf_counter() - started)
            state, after = model_bytes(store)  # a chunk is never written twice here
            written.append(state + sum(n for k, n in after.items() if k not in before))
        state, after = model_bytes(store)
        chunks = sum(after.values())
        started = time.perf_counter()
        restored = Pipeline(config)
        Checkpointer(store, restored, group="g", producer="a").restore([PID])
        restore_s = time.perf_counter() - started
        assert warming_rows(restored) == warming_rows(p), "rows lost in the store"
        store.close()
    return {"held": warming_rows(p), "written": statistics.median(written),
            "written_max": max(written),
            "save_s": statistics.median(took), "first_s": first_s, "state": state,
            "chunks": chunks, "restore_s": restore_s}


def run_before(rev: str, argv: list[str]) -> dict[str, dict[str, float]]:
    """This script's figures for commit ``rev``'s code (a temporary worktree)."""
    from bench.harness import checkout  # here: the run at rev imports that rev's bench

    with checkout(rev) as tree:
        # its progress and any error go straight to this terminal; its figures to stdout
        out = subprocess.run([sys.executable, __file__, "--json", *argv], check=True,
                             stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(tree)}).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", type=int, default=100)
    ap.add_argument("--warm-events", type=int, default=2500)
    ap.add_argument("--checkpoints", type=int, default=40)
    ap.add_argument("--events-between", type=int, default=5)
    ap.add_argument("--before", help="also run this commit's code, for comparison")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # for --before
    args = ap.parse_args()
    sizes = [f"--versions={args.versions}", f"--warm-events={args.warm_events}",
             f"--checkpoints={args.checkpoints}", f"--events-between={args.events_between}"]
    runs = {}
    for summaries in (True, False):
        print(f"{'before: ' if args.json else ''}{args.versions} versions x "
              f"{args.warm_events} events, window summaries "
              f"{'on' if summaries else 'off'} ...", file=sys.stderr, flush=True)
        runs["on" if summaries else "off"] = measure(args, summaries)
    if args.json:
        print(json.dumps(runs))
        return
    rev = None
    if args.before:
        from bench.harness import short_rev  # not at the top: see run_before
        rev = short_rev(args.before)
    before = run_before(rev, sizes) if rev else None
    mib = 1 << 20
    on, off = runs["on"], runs["off"]

    def row(label: str, key: str, fmt: Any, which: str = "on") -> str:
        cells = [fmt(runs[which][key])]
        if before is not None:
            cells.insert(0, fmt(before[which][key]))
        return f"| {label} | {' | '.join(cells)} |"

    cols = f"| | {rev} (before) | this commit |\n|---|---|---|" if before else \
        "| | this commit |\n|---|---|"
    size = lambda b: f"{b / mib:.2f} MiB"  # noqa: E731
    ms = lambda s: f"{s * 1e3:,.0f} ms"  # noqa: E731
    body = f"""
{args.versions} model versions of 25 float features, each past {args.warm_events:,} of the 5,000
events its automatic drift reference is built from ({on["held"]:,} rows held raw in all at the end), then
{args.checkpoints} checkpoints into a SQLite store, {args.events_between} new events per version
before each (one a second per version). Every detector on (the defaults). Medians per
checkpoint.

{cols}
{row("model-wide bytes written per checkpoint", "written", size)}
{row("the most written by one of them", "written_max", size)}
{row("`Checkpointer.save`", "save_s", ms)}
{row("`Checkpointer.save`, window summaries off", "save_s", ms, "off")}
{row("the first checkpoint", "first_s", ms)}
{row("stored at the end: model-wide state", "state", size)}
{row("stored at the end: row chunks", "chunks", size)}
{row("restore (rows checked equal)", "restore_s", ms)}
"""
    if before is not None:
        body += f"""
Bytes written per checkpoint: **{before["on"]["written"] / on["written"]:.0f}x** fewer than at
{rev}; with window summaries off the save takes {off["save_s"] / before["off"]["save_s"]:.2f} of
its time there. What remains of a save with summaries on is the window summaries: each
checkpoint reads, merges and writes back each (model, version, hour)'s summary row.
"""
    print(body)
    command = ".venv/bin/python -m bench.warmup" + (f" --before {rev}" if rev else "")
    write_section("warmup", "Checkpoints while many quiet versions build their drift references",
                  command, body)


if __name__ == "__main__":
    main()
