"""Linkage by source address (``detectors.source_ip``): an attack split over
several client ids from one address adds up again on the address; many ordinary
users behind one address (a NAT) stay quiet; batching, checkpoints and restarts
give the same alerts as one uninterrupted run."""

from __future__ import annotations

import msgspec
import numpy as np

from detectors.event import Event
from monitor.checkpoint import Checkpointer
from monitor.config import build_config
from monitor.pipeline import Pipeline, Record
from monitor.state import client_detectors
from monitor.store import Store
from tests.detectors.test_batch_prepare import MINUTE_WINDOWS, _stream, run_batched

T0 = 1_700_000_000.0
PID = ("logs", 0)


def _config(**source_ip: object) -> object:
    return build_config({"detectors": {"source_ip": {"enabled": True, **source_ip}}}, env={})


def _records(events: list[Event]) -> list[Record]:
    enc = msgspec.json.Encoder()
    return [Record(i, enc.encode(e)) for i, e in enumerate(events)]


def _alerts(pipeline: Pipeline, events: list[Event], batch: int = 50) -> list[dict]:
    out: list[dict] = []
    records = _records(events)
    for start in range(0, len(records), batch):
        out += pipeline.process(PID, records[start:start + batch]).alerts
        out += pipeline.advance()
    return out


def _sybil_walk(n: int, keys: int, ip: str = "10.0.0.9", seed: int = 1,
                start: float = T0) -> list[Event]:
    """A small-step search around one input, its queries dealt over ``keys`` client ids."""
    rng = np.random.default_rng(seed)
    point = rng.uniform(0, 1, 12)
    return [Event(ts=start + i, model="m", model_version="1", client_id=f"sybil-{i % keys}",
                  request_id=f"q{i}", source_ip=ip, confidence=0.9,
                  features={f"f{j}": float(v) for j, v in
                            enumerate(point + 1e-3 * rng.normal(size=12))})
            for i in range(n)]


def _nat(clients: int, n: int, ip: str = "192.0.2.1", seed: int = 2) -> list[Event]:
    """Ordinary users behind one address: their own inputs (a few retried), sure
    answers over every class. Together they send as many new inputs over as many
    classes as a natural-data sweep, which is why coverage is not run per address."""
    rng = np.random.default_rng(seed)
    events: list[Event] = []
    for i in range(n):
        if events and rng.random() < 0.03:  # a retry of a recent request
            prev = events[-int(rng.integers(1, min(5, len(events)) + 1))]
            events.append(msgspec.structs.replace(prev, ts=T0 + i * 0.5, request_id=f"r{i}"))
            continue
        events.append(Event(ts=T0 + i * 0.5, model="m", model_version="1",
                            client_id=f"user-{int(rng.integers(clients))}", source_ip=ip,
                            request_id=f"r{i}", confidence=float(rng.uniform(0.8, 1.0)),
                            prediction=f"class_{int(rng.integers(10))}",
                            features={f"f{j}": float(v) for j, v in
                                      enumerate(rng.uniform(0, 1, 12))}))
    return events


def test_an_attack_split_over_ten_keys_fires_on_their_address_naming_the_keys() -> None:
    walk = _sybil_walk(40, keys=10)  # 4 queries a key: too few for any per-key signal
    assert _alerts(Pipeline(build_config({}, env={})), walk) == []

    alerts = _alerts(Pipeline(_config()), walk)
    assert {a["detector"] for a in alerts} == {"evasion.query_neighbours"}
    first = alerts[0]
    assert first["subject"] == {"source_ip": "10.0.0.9"}
    queries = first["evidence"]["queries"]
    assert queries <= 10, "caught within ten queries of the whole attack"
    keys = [f"sybil-{k}" for k in range(queries)]  # the keys that sent them
    assert first["evidence"]["client_ids"] == keys
    assert first["summary"].startswith("Source address 10.0.0.9 ")
    assert first["summary"].endswith(f"Client ids seen from it: {', '.join(keys)}.")


def test_many_ordinary_users_behind_one_address_do_not_fire() -> None:
    assert _alerts(Pipeline(_config()), _nat(clients=300, n=6_000)) == []


def test_a_flood_split_over_keys_exceeds_the_address_budget_only() -> None:
    # 10 keys at 1 request/s each: 60 a minute per key (budget 600), 600 per address
    flood = [Event(ts=T0 + i / 10, model="m", model_version="1", client_id=f"k{i % 10}",
                   source_ip="10.0.0.7") for i in range(1_200)]
    alerts = _alerts(Pipeline(_config(max_events=500)), flood)
    assert [(a["detector"], a["subject"], a["status"]) for a in alerts] == [
        ("flooding.request_rate", {"source_ip": "10.0.0.7"}, "firing")]
    assert alerts[0]["evidence"]["threshold"] == 500


def _with_addresses(events: list[Event]) -> list[Event]:
    """Clients share addresses (a few per address), some events carry none."""
    out = []
    for i, e in enumerate(events):
        ip = None if i % 13 == 0 else f"10.1.0.{sum(map(ord, e.client_id or '')) % 7}"
        out.append(msgspec.structs.replace(e, source_ip=ip))
    return out


def _run_both(events: list[Event], batch_sizes: list[int] | None) -> tuple[list, list]:
    keyings = client_detectors(build_config(
        {"state": {"client_idle_s": 60}, "detectors": {"coverage": {"min_queries": 16,
                                                                    "window_s": 60},
                                                       "source_ip": {"enabled": True},
                                                       **MINUTE_WINDOWS}},
        env={}))
    assert [k.key for k in keyings] == ["client", "source_ip"]
    return run_batched(keyings, events, batch_sizes)


def test_both_keyings_agree_batched_and_one_by_one() -> None:
    events = _with_addresses(_stream(seed=5))
    one_by_one = _run_both(events, None)
    assert any("source_ip" in f[2] for f in one_by_one[0])
    for sizes in ([500], [1, 37, 200, 3]):
        assert _run_both(events, sizes) == one_by_one, sizes


def test_address_state_survives_checkpoints_and_restarts(store_url: str) -> None:
    events = _with_addresses(_stream(seed=6, n=1_500)) + _sybil_walk(40, keys=10,
                                                                     start=T0 + 100.5)
    events.sort(key=lambda e: e.ts)
    # the restart falls inside the walk, before it fires: its alert names keys seen
    # before the restart
    half = next(i for i, e in enumerate(events) if e.request_id == "q3") + 1
    config = _config()
    whole = _alerts(Pipeline(config), events)
    sybil = next(a for a in whole if a["subject"] == {"source_ip": "10.0.0.9"})
    assert sybil["evidence"]["queries"] > 4, "fires after the restart"

    assert _essence(alerts_with_restart(config, events, half, store_url)) == _essence(whole)


def alerts_with_restart(config: object, events: list[Event], cut: int,
                        store_url: str) -> list[dict]:
    """The alerts of ``events`` through a pipeline restarted from its checkpoint
    before event ``cut`` (and checkpointed after each part)."""
    store = Store(store_url)
    store.migrate()
    records = _records(events)
    out: list[dict] = []
    for start, end in ((0, cut), (cut, len(records))):
        p = Pipeline(config)  # a restart before each part
        cp = Checkpointer(store, p, group="g", producer="a")
        cp.restore([PID])
        for at in range(start, end, 50):
            out += p.process(PID, records[at:min(at + 50, end)]).alerts
            out += p.advance()
        cp.save()
    store.close()
    return out


def _essence(alerts: list[dict]) -> list[tuple]:
    return [(a["detector"], a["status"], a["subject"], a["count"], a["evidence"])
            for a in alerts]


def test_an_attacker_with_one_key_on_its_own_address_gets_one_alert_not_two() -> None:
    walk = [msgspec.structs.replace(e, client_id="solo") for e in _sybil_walk(40, keys=1)]
    alerts = _alerts(Pipeline(_config()), walk)
    assert alerts and all(a["subject"] == {"client_id": "solo"} for a in alerts)
    linked = _alerts(Pipeline(_config(min_clients=1)), walk)
    assert {"source_ip": "10.0.0.9"} in [a["subject"] for a in linked]


def test_events_without_an_address_are_only_keyed_by_client() -> None:
    walk = [msgspec.structs.replace(e, source_ip=None) for e in _sybil_walk(40, keys=10)]
    pipeline = Pipeline(_config())
    assert _alerts(pipeline, walk) == [], "no address to link the keys by"
    by_client, by_address = pipeline.partitions[PID].detectors
    assert (len(by_client), len(by_address)) == (10, 0)
