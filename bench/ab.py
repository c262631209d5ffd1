"""A change's effect on the daemon's rate: `inferwatch run` of an earlier commit and of
this checkout, alternating on one topic, so that the machine's drift (2 shared cores:
runs an hour apart differ by ±20%) falls on both sides alike.

    .venv/bin/python -m bench.ab --before REV [--events 300000] [--repeats 3]

REV is checked out in a temporary git worktree and run with this checkout's
interpreter and packages (a REV that needs other dependencies cannot be compared
this way). Every detector is on, with the defaults, over the benchmark events of
``bench.throughput``; a bare kafka-python consumer reads the topic before each pair.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import data
from bench.harness import (
    ROOT,
    bare_consume,
    checkout,
    daemon_config,
    keyed,
    median,
    new_topic,
    produce,
    run_to_end,
    short_rev,
    start_broker,
)
from bench.report import write_section


def compare(before: Path, lines: list[bytes], repeats: int) -> dict[str, list[float]]:
    """Events/s of ``before``'s daemon and of this checkout's, alternating which goes
    first, and of the bare consumer before each pair."""
    codes = {"before": before, "after": ROOT}
    out: dict[str, list[float]] = {"bare": [], "before": [], "after": []}
    broker = start_broker()
    try:
        topic = new_topic(broker, 3)
        produce(broker.bootstrap, topic, keyed(lines))
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(repeats):
                out["bare"].append(bare_consume(broker.bootstrap, topic, len(lines)))
                for name in (("before", "after") if r % 2 == 0 else ("after", "before")):
                    work = Path(tmp) / f"{name}-{r}"
                    cfg = daemon_config(broker.bootstrap, topic, work, group=f"ab-{name}-{r}")
                    rate = run_to_end(cfg, work, len(lines), code=codes[name])
                    out[name].append(rate)
                    print(f"repeat {r}: {name} {rate:,.0f} events/s "
                          f"(bare consumer {out['bare'][-1]:,.0f}/s)", flush=True)
    finally:
        broker.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", required=True, help="the commit to compare against")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rev = short_rev(args.before)
    lines = data.load(args.events)
    with checkout(rev) as tree:
        out = compare(tree, lines, args.repeats)
    gains = [a / b for a, b in zip(out["after"], out["before"], strict=True)]

    def row(label: str, xs: list[float], fmt: str = "{:,.0f}") -> str:
        return f"| {label} | {fmt.format(median(xs))} | {', '.join(fmt.format(x) for x in xs)} |"

    body = f"""`inferwatch run` of commit {rev} and of this commit, every detector on, over the
{len(lines):,} benchmark events on one 3-partition topic, alternating which runs first;
a bare kafka-python consumer read the topic before each pair.

| events/s | median | repeats |
|---|---|---|
{row("bare kafka-python consumer", out["bare"])}
{row(f"`inferwatch run` at {rev}", out["before"])}
{row("`inferwatch run` at this commit", out["after"])}
{row("this commit / " + rev + " (per pair)", gains, "{:.2f}")}
"""
    print(body)
    write_section("ab", "A change's effect on `inferwatch run`, back to back",
                  f".venv/bin/python -m bench.ab --before {rev} --events {len(lines)} "
                  f"--repeats {args.repeats}", body)


if __name__ == "__main__":
    main()
