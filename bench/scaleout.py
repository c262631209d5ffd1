"""Scale-out: 1, 2 and 3 replicas of ``inferwatch run`` in one consumer group on a
6-partition topic (PostgreSQL store, every detector on). Each group is started
and settled on an empty topic, then the events are produced as fast as the
producer goes; throughput is from the first event counted to the last. The
per-client alerts of every group must equal those of one replica.

    .venv/bin/python -m bench.scaleout [--events 300000] [--replicas 1,2,3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import msgspec
import sqlalchemy as sa

from bench import data
from bench.harness import DaemonProcess, daemon_config, keyed, new_topic, produce, start_broker
from bench.report import write_section

PG = "postgresql://postgres@127.0.0.1:5432/test"
FLOOD_BUDGET = 40  # per minute: the stream's flooders cross it, so per-client alerts exist


def per_client(files: list[Path]) -> list[bytes]:
    enc = msgspec.json.Encoder(order="sorted")
    out = []
    for f in files:
        if f.exists():
            for line in f.read_bytes().splitlines():
                rec = msgspec.json.decode(line)
                if "client_id" in rec["subject"]:
                    out.append(enc.encode(rec))
    return sorted(out)


def run_group(broker_bootstrap: str, topic: str, lines: list[bytes], replicas: int,
              work: Path, schema: str) -> dict:
    url = f"{PG}?options=-csearch_path%3D{schema}"
    ds = []
    for r in range(replicas):
        cfg = daemon_config(broker_bootstrap, topic, work, group=f"scale-{schema}",
                            store_url=url, instance=f"r{r}",
                            detectors={"flooding": {"max_events": FLOOD_BUDGET}})
        ds.append(DaemonProcess(cfg, work))
    try:
        deadline = time.monotonic() + 120
        while not all(d.ready() for d in ds):
            if time.monotonic() > deadline:
                raise TimeoutError("the group did not settle")
            time.sleep(0.3)
        time.sleep(2)
        t_produce = time.perf_counter()
        produce(broker_bootstrap, topic, keyed(lines))
        produced_s = time.perf_counter() - t_produce
        first = None
        n = 0
        while n < len(lines):
            n = sum(d.events() for d in ds)
            if n and first is None:
                first = time.perf_counter()
            if time.monotonic() > deadline + 900:
                raise TimeoutError(f"read {n} of {len(lines)}")
            time.sleep(0.1)
        # from the start of production: the producer outruns the group, and a short run
        # timed from the first counted batch would flatter the bigger groups
        elapsed = time.perf_counter() - t_produce
        counts = [d.events() for d in ds]
        cpu = [d.cpu_s() for d in ds]
        time.sleep(2)  # the last checkpoints and deliveries
    finally:
        for d in ds:
            d.stop()
    return {"rate": len(lines) / elapsed, "elapsed": elapsed, "produce_s": produced_s,
            "counts": counts, "cpu": cpu,
            "alerts": per_client([work / f"alerts-r{r}.jsonl" for r in range(replicas)])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--replicas", default="1,2,3")
    args = parser.parse_args()
    counts = [int(x) for x in args.replicas.split(",")]
    lines = data.load(300_000)[: args.events]
    engine = sa.create_engine(PG.replace("postgresql://", "postgresql+psycopg://"))
    broker = start_broker()
    results = {}
    schemas = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for k in counts:
                schema = f"bench_{uuid.uuid4().hex[:8]}"
                schemas.append(schema)
                with engine.begin() as conn:
                    conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
                topic = new_topic(broker, 6)
                work = Path(tmp) / f"k{k}"
                results[k] = run_group(broker.bootstrap, topic, lines, k, work, schema)
                r = results[k]
                print(f"{k} replica(s): {r['rate']:,.0f} events/s in {r['elapsed']:.1f}s "
                      f"(per replica {r['counts']}), {len(r['alerts'])} per-client alert records")
    finally:
        broker.stop()
        with engine.begin() as conn:
            for schema in schemas:
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        engine.dispose()
    base = results[counts[0]]
    rows = []
    for k in counts:
        r = results[k]
        same = "yes" if r["alerts"] == base["alerts"] else "**no**"
        rows.append(f"| {k} | {r['rate']:,.0f} | {r['rate'] / base['rate']:.2f}x | "
                    f"{', '.join(f'{c:,}' for c in r['counts'])} | {len(r['alerts'])} | {same} |")
    one = base["rate"]
    body = f"""{args.events:,} benchmark events (25 features, 10 classes, 20,000 clients) on a
6-partition topic, each group settled on the empty topic first, then fed as fast as one
producer goes (it took {base['produce_s']:.1f} s for the first group); timed from the start of
production to the last event counted. PostgreSQL store, every
detector on (flooding budget {FLOOD_BUDGET}/min so that per-client alerts exist to compare).
The machine has 2 cores shared by the broker, the producer and the replicas, so more than
two replicas cannot add CPU here; on separate nodes each replica brings its own.

| replicas | events/s (all) | vs 1 | events per replica | per-client alert records | same as 1 replica |
|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""

**Sizing rule** (for the Helm chart): one replica handles about **{one:,.0f} events/s** of
this traffic with every detector on, on one core of this machine; run
`replicas >= peak events/s / {one:,.0f}` (with headroom), and give the topic at least as many
partitions as replicas (a replica without a partition idles). Per-client alerts do not
depend on the number of replicas (clients are keyed to partitions, their state moves with
the partition); model-wide detectors run per replica on the partitions it owns.
"""
    print(body)
    write_section("scaleout", "Scale-out: replicas in one consumer group",
                  f".venv/bin/python -m bench.scaleout --events {args.events} "
                  f"--replicas {args.replicas}", body)


if __name__ == "__main__":
    main()
