"""Benign clients whose queries differ in only a few features, against the
coordinate-wise search rule of ``evasion.query_neighbours``; and new clients of
models with few numeric features, against its noise-search rule.

    .venv/bin/python -m bench.narrow_queries [--clients 200] [--queries 300]

SimBA and ZOO change one or two input values per query, and ``QueryNeighbours``
counts a query that differs from an earlier one in 1 to ``sparse_groups`` (2) of its 8
feature groups as a near copy of it (5 near copies make a hit), and ``sparse_steps``
(4) such steps in a row as a hit. A benign client whose queries also differ in only
one or two feature groups looks the same: a what-if tool, or a client whose inputs
are constant but for one or two fields (a device whose settings never change but for
one reading, one customer scored again and again with another amount). This measures
how many such clients fire, by how many features vary from one query to the next, with
the default rule
and with it off (``detectors.neighbours.sparse_groups: 0``), and what turning it off
costs on the ART attack traces of ``bench.attacks`` (queries until the detector
fires). The detector alone (``QueryNeighbours.update``), not the pipeline.
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.attacks import attack_traces, sharpened, victim
from bench.report import write_section
from detectors.event import Event
from detectors.neighbours import QueryNeighbours

FEATURES = 25
VARYING = (1, 2, 3, 5, 25)
WIDTHS = (2, 3, 8, 25)  # numeric features of the new clients' models
NEW_CLIENTS = 5000
ATTACKS = ("HopSkipJump", "BoundaryAttack", "SignOPT", "GeoDA", "ZooAttack", "SimBA")
# sparse_groups 0: no query counts as a sparse copy of another, neither as a near copy
# nor as a step of a coordinate-wise walk
SETTINGS = {"default (sparse_groups 2)": {}, "sparse_groups: 0": {"sparse_groups": 0}}
# the attacks' queries with the victim's answers (as bench.attacks logs them), with
# those of a confident victim (bench.attacks.sharpened), or with none logged
ATTACK_SETTINGS = {
    "default, the victim's answers": ({}, "victim", 0.2),
    "default, a confident victim's answers": ({}, "sharpened", 0.2),
    "default, no answers logged": ({}, "none", 0.2),
    "default, the victim's answers, paced 1 query / 5 s": ({}, "victim", 5.0),
    "sparse_groups: 0, the victim's answers": ({"sparse_groups": 0}, "victim", 0.2),
}


def _first_fire(det: QueryNeighbours, rows: np.ndarray,
                probs: np.ndarray | None = None, every_s: float = 0.2) -> int | None:
    """Feed ``rows`` as one client's queries, one every ``every_s`` (5 a second), with
    the model's answers (``probs``: class probabilities) when given; the 1-based query
    it fired on."""
    names = [f"f{j:02d}" for j in range(rows.shape[1])]
    for i, row in enumerate(rows):
        answer = {} if probs is None else {"prediction": str(int(probs[i].argmax())),
                                           "confidence": float(probs[i].max())}
        det.update(Event(ts=i * every_s, model="m", model_version="1", client_id="c",
                         features=dict(zip(names, row.tolist(), strict=True)), **answer))
        if det.detected:
            return i + 1
    return None


def narrow_client(rng: np.random.Generator, varying: int, queries: int) -> np.ndarray:
    """A client's queries: its own flags (each flips with probability 0.05 per query)
    and ``varying`` values in 0..100 drawn afresh for every query."""
    base = (rng.uniform(0, 1, FEATURES) < 0.2).astype(float)
    rows = np.repeat(base[None, :], queries, axis=0)
    flips = rng.uniform(0, 1, rows.shape) < 0.05
    rows[flips] = 1 - rows[flips]
    rows[:, :varying] = rng.uniform(0, 100, (queries, varying))
    return rows


def few_numbers(rng: np.random.Generator, width: int, queries: int) -> np.ndarray:
    """A new ordinary client of a model with ``width`` numeric features: an age
    (18..90) and amounts (log-normal), drawn afresh for every query."""
    rows = rng.lognormal(3, 1, (queries, width))
    rows[:, 0] = rng.integers(18, 91, queries)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200, help="benign clients per row")
    parser.add_argument("--queries", type=int, default=300, help="queries per benign client")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args()

    benign_rows = []
    for varying in VARYING:
        rng = np.random.default_rng(varying)
        clients = [narrow_client(rng, varying, args.queries) for _ in range(args.clients)]
        cells = [f"{varying} of {FEATURES}"]
        for params in SETTINGS.values():
            fired = [q for rows in clients
                     if (q := _first_fire(QueryNeighbours(**params), rows)) is not None]
            at = f", median query {int(np.median(fired))}" if fired else ""
            cells.append(f"{len(fired)} of {len(clients)}{at}")
        print(" | ".join(cells), flush=True)
        benign_rows.append(cells)

    new_clients = []
    for width in WIDTHS:
        rng = np.random.default_rng(100 + width)
        fired = [q for _ in range(NEW_CLIENTS)
                 if (q := _first_fire(QueryNeighbours(), few_numbers(rng, width, 20))) is not None]
        cells = [str(width), f"{len(fired)} of {NEW_CLIENTS:,}"]
        print(" | ".join(cells), flush=True)
        new_clients.append(cells)

    traces = attack_traces(10, fresh=False)
    model = victim()[0]
    attack_rows = []
    for name in ATTACKS:
        cells = [name]
        answered = [model.predict_proba(rows) for rows in traces[name]]
        for params, answers, every_s in ATTACK_SETTINGS.values():
            fired = [q for rows, probs in zip(traces[name], answered, strict=True)
                     if (q := _first_fire(QueryNeighbours(**params), rows, {
                         "victim": probs, "sharpened": sharpened(probs), "none": None}[answers],
                         every_s)) is not None]
            median = f", median {int(np.median(fired))} queries" if fired else ""
            cells.append(f"{len(fired)} of {len(traces[name])}{median}")
        print(" | ".join(cells), flush=True)
        attack_rows.append(cells)

    head = " | ".join(SETTINGS)
    body = f"""
Benign clients of a model with {FEATURES} features: each client has its own binary
flags (each flips with probability 0.05 per query) and draws the first *k* features
afresh for every query (uniform 0..100); {args.clients} clients of {args.queries}
queries each per row. `QueryNeighbours` alone, fed one query at a time.

| features that change per query | alerted: {head} |
|---|---|---|
{chr(10).join("| " + " | ".join(r) + " |" for r in benign_rows)}

New ordinary clients of models with few numeric features (an age, log-normal
amounts, drawn afresh for every query), {NEW_CLIENTS:,} clients of 20 queries each per
row: alerted by `QueryNeighbours`. Until commit e47b9e5 its noise-search rule ran on
inputs of any width and alerted about one such client in a thousand in its first 20
queries (21 of 20,000 with 2 features, 17 of 20,000 with 3, 2 with 8, 0 with 25); it
now runs on inputs of 8 values or more.

| numeric features | alerted |
|---|---|
{chr(10).join("| " + " | ".join(r) + " |" for r in new_clients)}

The query-based evasion attacks of `bench.attacks` (ART traces, 10 runs each; runs
detected by the detector alone, and its median queries until it fired), sent at 5
queries a second unless paced. When the model's answers are logged, its near-copy and
noise-search rules count only in a burst (a distinct query within `burst_s`, 3 s, of the
one before) or at the decision boundary (a near copy answered otherwise, or an answer
below 0.6 confidence): an attack paced slower than that is seen once its queries reach
the boundary (the paced column).

| attack | {" | ".join(ATTACK_SETTINGS)} |
|---|---|---|---|---|---|
{chr(10).join("| " + " | ".join(r) + " |" for r in attack_rows)}

Until commit 56549c9 every client of the first two rows was alerted (200 of 200,
within 9 and 15 queries): a copy differing in one or two groups counted as a near copy,
and any run of them as a coordinate-wise walk. Now only a run that moves through the
groups counts; a client that changes one field at every step is not a walk, except in
its first few queries, where one unseen change (a group's code is one byte) can make its
steps look like one. What is left of the rule costs no query-based attack anything;
turning it off (`sparse_groups: 0`) loses SimBA.
"""
    print(body)
    if not args.no_write:
        write_section("narrow_queries", "Benign clients that change one or two features "
                      "per query (bench/narrow_queries.py)",
                      ".venv/bin/python -m bench.narrow_queries", body)


if __name__ == "__main__":
    main()
