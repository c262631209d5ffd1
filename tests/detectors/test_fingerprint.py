"""Linkage by query fingerprint (``detectors.fingerprint``): an attack split over
many client ids and source addresses adds up again on the cell of inputs it
probes; ordinary users sending their own inputs stay quiet; batching,
checkpoints and restarts give the same alerts as one uninterrupted run."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from detectors.event import Event
from detectors.fingerprint import CellAttack, FingerprintKeyed, cells, fingerprint
from detectors.flooding import RequestRate
from detectors.keyed import Keyed
from detectors.neighbours import QueryNeighbours
from detectors.probing import LowConfidenceShare
from monitor.config import build_config
from monitor.pipeline import Pipeline
from monitor.state import client_detectors
from tests.detectors.test_batch_prepare import _stream, run_batched
from tests.detectors.test_source_ip import (
    PID,
    T0,
    _alerts,
    _essence,
    _nat,
    _sybil_walk,
    alerts_with_restart,
)


def _config(**fingerprint: object) -> object:
    return build_config({"detectors": {"fingerprint": {"enabled": True, **fingerprint}}},
                        env={})


def _botnet_walk(n: int, keys: int = 10, **kw: object) -> list[Event]:
    """``_sybil_walk`` with every key on an address of its own, near the decision
    boundary (low-confidence answers), as query-based attacks walk."""
    return [msgspec.structs.replace(e, source_ip=f"203.0.113.{e.client_id.rsplit('-', 1)[1]}",
                                    confidence=0.55)
            for e in _sybil_walk(n, keys=keys, **kw)]


def _popular_input(users: int, confidence: float, seed: int = 4) -> list[Event]:
    """Many users sending near copies of one popular input (each their own small
    edit), one every 10 s."""
    rng = np.random.default_rng(seed)
    point = rng.uniform(0, 1, 12)
    return [Event(ts=T0 + 10 * i, model="m", model_version="1", client_id=f"user-{i}",
                  request_id=f"p{i}", confidence=confidence,
                  features={f"f{j}": float(v) for j, v in
                            enumerate(point + 1e-3 * rng.normal(size=12))})
            for i in range(users)]


def test_an_attack_over_ten_keys_and_addresses_fires_on_its_fingerprint() -> None:
    walk = _botnet_walk(40)  # 4 queries a key and an address: too few for either
    assert _alerts(Pipeline(build_config({"detectors": {"source_ip": {"enabled": True}}},
                                         env={})), walk) == []

    alerts = _alerts(Pipeline(_config()), walk)
    assert {a["detector"] for a in alerts} == {"evasion.query_neighbours"}
    first = alerts[0]
    assert list(first["subject"]) == ["query_fingerprint"]
    # a grid line cuts this walk in two (28 and 12 queries): the larger part fires
    # within ten of its queries, naming the keys that sent them
    assert first["evidence"]["queries"] <= 10
    keys = first["evidence"]["client_ids"]
    assert len(keys) >= 2 and set(keys) <= {f"sybil-{k}" for k in range(10)}
    fp = first["subject"]["query_fingerprint"]
    assert first["summary"].startswith(f"Clients querying near fingerprint {fp} sent ")
    assert first["summary"].endswith(f"Client ids whose queries were its latest hits: {', '.join(keys)}.")


def test_ordinary_users_sending_their_own_inputs_do_not_fire() -> None:
    # answered near the boundary, so the confidence gate is open: their distinct
    # inputs fall in cells of their own, and no cell sees a cluster
    users = [msgspec.structs.replace(e, confidence=0.55) for e in _nat(clients=300, n=6_000)]
    pipeline = Pipeline(_config())
    assert _alerts(pipeline, users) == []
    by_cell = pipeline.partitions[PID].detectors[1]
    # cells idle for 15 minutes are dropped: those left are the last 1,800 inputs'
    # (a few are retries), nearly one cell each
    assert 1_700 < len(by_cell) <= 1_800


def test_a_popular_input_answered_with_confidence_does_not_fire() -> None:
    # the same near copies from 60 users: confident answers are no boundary walk
    assert _alerts(Pipeline(_config()), _popular_input(60, confidence=0.95)) == []
    near_boundary = _alerts(Pipeline(_config()), _popular_input(60, confidence=0.55))
    assert {a["detector"] for a in near_boundary} == {"evasion.query_neighbours"}
    assert near_boundary[0]["evidence"]["firing_signals"] == [
        "evasion.query_neighbours", "extraction.low_confidence_share"]


def test_cells_are_capped() -> None:
    pipeline = Pipeline(_config(max_cells=500))
    _alerts(pipeline, _nat(clients=300, n=3_000))
    assert len(pipeline.partitions[PID].detectors[1]) == 500


def test_a_fingerprint_is_the_same_alone_and_in_any_batch() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 25)) * rng.uniform(0.1, 100, size=(300, 1))
    whole = cells(x, 0.05)
    assert [cells(x[i:i + 1], 0.05)[0] for i in range(300)] == whole
    assert cells(x[7:45], 0.05) == whole[7:45]
    assert len(set(whole)) == 300, "unrelated inputs, cells of their own"
    # a step of 0.1% of the input's size seldom crosses a grid line; 50% always does
    near = cells(x + 1e-3 * np.abs(x).mean(axis=1, keepdims=True), 0.05)
    assert sum(a == b for a, b in zip(whole, near, strict=True)) >= 270
    far = cells(x * 1.5, 0.05)
    assert not set(far) & set(whole)
    e = Event(ts=0, model="m", model_version="1",
              features={f"f{j}": float(v) for j, v in enumerate(x[0])})
    assert fingerprint(e, 0.05) == whole[0]
    assert fingerprint(Event(ts=0, model="m", model_version="1"), 0.05) is None


def test_the_keyings_agree_batched_and_one_by_one() -> None:
    events = _stream(seed=5) + _botnet_walk(40, start=T0 + 50.5)
    events.sort(key=lambda e: e.ts)
    keyings = client_detectors(build_config(
        {"state": {"client_idle_s": 60}, "detectors": {"fingerprint": {"enabled": True}}},
        env={}))
    assert [k.key for k in keyings] == ["client", "fingerprint"]
    one_by_one = run_batched(keyings, events, None)
    assert any("query_fingerprint" in f[2] for f in one_by_one[0])
    for sizes in ([500], [1, 37, 200, 3]):
        keyings = client_detectors(build_config(
            {"state": {"client_idle_s": 60}, "detectors": {"fingerprint": {"enabled": True}}},
            env={}))
        assert run_batched(keyings, events, sizes) == one_by_one, sizes


def test_cell_state_survives_checkpoints_and_restarts(store_url: str) -> None:
    events = _stream(seed=6, n=1_500) + _botnet_walk(40, start=T0 + 100.5)
    events.sort(key=lambda e: e.ts)
    config = _config()
    whole = _alerts(Pipeline(config), events)
    linked = [a for a in whole if "query_fingerprint" in a["subject"]]
    # the restart falls after the cell's first hit, before the hit that fires it: the
    # alert names a key whose hit came before the restart
    hits = linked[0]["evidence"]["sample_request_ids"]
    assert len(hits) >= 3
    half = next(i for i, e in enumerate(events) if e.request_id == hits[0]) + 1
    assert _essence(alerts_with_restart(config, events, half, store_url)) == _essence(whole)


def test_plain_keyed_refuses_to_key_by_fingerprint() -> None:
    # it would otherwise fall through to model keying without a word
    with pytest.raises(ValueError, match="FingerprintKeyed"):
        Keyed(RequestRate(), key="fingerprint")


def test_a_cell_whose_walk_ends_resolves_once_though_its_answers_stay_low() -> None:
    # a cell's one incident needs both signals: when the near copies stop, it resolves
    # and stays resolved while only the low-confidence share still holds (it flapped,
    # resolved and fired again on every event and tick)
    cell = CellAttack(signals=(QueryNeighbours(window_s=30),
                               LowConfidenceShare(min_queries=1, window_s=600)))
    keyed = FingerprintKeyed(cell, renotify_s=1e9)
    findings = []
    for i in range(12):  # two keys walk in tiny steps near the boundary
        x = [v + 0.001 * i * (j + 1) for j, v in enumerate([1.0, 2.0, 3.0, 4.0])]
        findings += keyed.update(Event(ts=i, model="m", model_version="1",
                                       client_id=f"k{i % 2}", confidence=0.55,
                                       features=dict(zip("abcd", x, strict=True))))
    for now in (100.0, 200.0, 300.0):
        findings += keyed.tick(now)
    assert [(f.detector, f.status) for f in findings] == [
        ("evasion.query_neighbours", "firing"), ("evasion.query_neighbours", "resolved")]
