"""The per-client signals give the same findings and the same state whether the
pipeline announces its batches (``Keyed.prepare``: the numeric work of a batch
in one pass) or feeds events one by one, however the stream is cut into batches:
replays, Kafka runs and restarts after a crash batch differently."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.base import Finding
from detectors.event import Event
from detectors.keyed import Keyed
from monitor.config import build_config
from monitor.state import client_detectors


def _stream(seed: int, n: int = 3_000) -> list[Event]:
    """Ordinary clients, retries, augmentation bursts, small-step and coordinate-wise
    attackers, embeddings, odd feature maps and clients that change their layout."""
    rng = np.random.default_rng(seed)
    attack_point = rng.uniform(0, 1, 12)
    simba = rng.uniform(0, 1, 30)
    events = []
    for i in range(n):
        kind = rng.random()
        client = f"c{int(rng.integers(40))}"
        feats: dict | None = None
        embedding = None
        if kind < 0.15:  # small steps around one point
            client = "hsj"
            x = attack_point + 1e-3 * rng.normal(size=12)
        elif kind < 0.25:  # one coordinate at a time
            client = "simba"
            simba = simba.copy()
            simba[int(rng.integers(30))] += 0.3
            x = simba
        elif kind < 0.3 and events:  # a retry of an earlier input
            prev = events[int(rng.integers(max(0, len(events) - 20), len(events)))]
            client, feats, embedding = prev.client_id, prev.features, prev.embedding
            x = None
        elif kind < 0.35:
            client = "embedder"
            x = None
            embedding = rng.normal(size=int(rng.choice([16, 40]))).tolist()
        elif kind < 0.38:
            x = None
            feats = {"a": 1.0, "b": "text", "c": None, "d": True, "e": float(rng.normal())}
        elif kind < 0.40:
            x = rng.uniform(0, 1, int(rng.choice([3, 6, 9])))  # layouts change per client
        else:
            x = rng.uniform(0, 1, 12)
        if x is not None:
            feats = {f"f{j}": float(v) for j, v in enumerate(x)}
        events.append(Event(ts=1_700_000_000 + i * 0.2, model="m", model_version="1",
                            client_id=client, request_id=f"r{i}", features=feats,
                            embedding=embedding,
                            prediction=f"class_{int(rng.integers(10))}", confidence=0.9))
    return events


# the per-client windows shortened to a minute: a client is kept as long as its
# longest window, and these streams should see clients expire (client_idle_s 60)
MINUTE_WINDOWS = {name: {"window_s": 60}
                  for name in ("probing", "out_of_range", "neighbours", "flooding")}


def _keyed(max_clients: int) -> Keyed:
    config = build_config({"state": {"max_clients": max_clients, "client_idle_s": 60},
                           "detectors": {"coverage": {"min_queries": 16, "window_s": 60},
                                         **MINUTE_WINDOWS}},
                          env={})
    (keyed,) = client_detectors(config)
    return keyed


def _seen(findings: list[Finding]) -> list[tuple]:
    return [(f.detector, f.status, f.subject, f.ts, repr(sorted(f.evidence.items())))
            for f in findings]


def _states(keyings: list[Keyed]) -> list[dict]:
    return [{key: keyed.export_slot(slot) for key, slot in keyed.slots.items()}
            for keyed in keyings]


def run_batched(keyings: list[Keyed], events: list[Event], batch_sizes: list[int] | None):
    """Findings and final states of ``keyings`` fed ``events`` one by one (no sizes) or
    in batches of the sizes cycling, each batch announced to every keying first, as
    the pipeline does."""
    findings = []
    i = 0
    while i < len(events):
        size = 1 if batch_sizes is None else batch_sizes[i % len(batch_sizes)]
        batch = events[i:i + size]
        if batch_sizes is not None:
            for keyed in keyings:
                keyed.prepare(batch)
        for event in batch:
            for keyed in keyings:
                findings += _seen(keyed.update(event))
        i += size
    return findings, _states(keyings)


def _run(events: list[Event], batch_sizes: list[int] | None, max_clients: int):
    return run_batched([_keyed(max_clients)], events, batch_sizes)


@pytest.mark.parametrize("max_clients", [1_000, 7])  # 7: clients are evicted mid-batch
def test_batched_and_one_by_one_agree(max_clients: int) -> None:
    events = _stream(seed=max_clients)
    one_by_one = _run(events, None, max_clients)
    assert any(f[0] == "evasion.query_neighbours" for f in one_by_one[0])
    for sizes in ([500], [1, 37, 200, 3], [3_000]):
        assert _run(events, sizes, max_clients) == one_by_one, sizes


def test_a_detector_fed_outside_its_batch_still_agrees() -> None:
    """Steps prepared for a batch apply only to the detector they were computed
    for, in the state they were computed from; anything else computes afresh."""
    events = _stream(seed=3, n=600)
    reference = _run(events, None, 1_000)
    keyed = _keyed(1_000)
    stale = _keyed(1_000)
    findings = []
    for start in range(0, len(events), 100):
        batch = events[start:start + 100]
        stale.prepare(batch)  # prepared by another Keyed that never takes the batch
        keyed.prepare(batch[: len(batch) // 2])  # and only half of it for this one
        for event in batch:
            findings += _seen(keyed.update(event))
    assert (findings, _states([keyed])) == reference
