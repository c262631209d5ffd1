"""Throughput of good records when half the input is malformed: the pipeline
(every detector on) over the same good events alone, then interleaved 1:1 with
malformed records of every kind the tests know (including 1 MB+ records).

    .venv/bin/python -m bench.bad_input [--events 50000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

from bench import data
from bench.harness import median
from bench.report import write_section
from monitor.config import build_config
from monitor.pipeline import Pipeline, Record
from tests.integration.test_bad_input import KINDS

OVERSIZED = b'{"ts":1767225600,"model":"m","model_version":"1","request_id":"' + b"x" * 2_000_000 + b'"}'


def good_per_s(values: list[bytes], n_good: int) -> float:
    pipeline = Pipeline(build_config({}, env={}))
    t = time.perf_counter()
    for i in range(0, len(values), 2000):
        pipeline.process(("b", 0), [Record(i + j, v) for j, v in enumerate(values[i:i + 2000])])
        pipeline.advance()
        pipeline.pending.clear()
    return n_good / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    good = data.load(300_000)[: args.events]
    mixed: list[bytes] = []
    for i, v in enumerate(good):
        mixed.append(v)
        mixed.append(OVERSIZED if i % 5000 == 0 else KINDS[i % len(KINDS)][0])
    clean, dirty, ratio = [], [], []
    for r in range(args.repeats):
        a = good_per_s(good, len(good))
        b = good_per_s(mixed, len(good))
        clean.append(a)
        dirty.append(b)
        ratio.append(b / a)
        print(f"repeat {r}: good only {a:,.0f} good/s, half malformed {b:,.0f} good/s, "
              f"ratio {b / a:.2f}")
    body = f"""The pipeline with every detector on, in one process: {args.events:,} benchmark events
alone, then the same events each followed by a malformed record ({len(KINDS)} kinds cycling:
not UTF-8, not JSON, NaN, deep nesting, wrong types, missing fields, out of range, ...;
every 5,000th a 2 MB record). Good records per second, median of {args.repeats}:

| input | good records/s | repeats |
|---|---|---|
| good only | {median(clean):,.0f} | {", ".join(f"{x:,.0f}" for x in clean)} |
| half malformed | {median(dirty):,.0f} | {", ".join(f"{x:,.0f}" for x in dirty)} |
| **ratio** | **{median(ratio):.2f}** | {", ".join(f"{x:.2f}" for x in ratio)} |
"""
    print(body)
    write_section("bad_input", "Bad input: throughput of good records when half is malformed",
                  f".venv/bin/python -m bench.bad_input --events {args.events}", body)


if __name__ == "__main__":
    main()
