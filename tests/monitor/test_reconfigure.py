"""A configuration changed between two runs takes effect at the restart, on SQLite and
on the machine's PostgreSQL: the restored state keeps what still means the same
under the new settings (monitor/reconfigure.py)."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest

from detectors.attack import ClientAttack
from detectors.neighbours import QueryNeighbours
from monitor.checkpoint import Checkpointer
from monitor.config import Config, build_config
from monitor.pipeline import Pipeline, Record
from monitor.store import Store
from tests.monitor.streams import stream_records

PID = ("logs", 0)
T0 = 1_767_225_600.0


def _config(**detectors: Any) -> Config:
    return build_config({"detectors": {"drift": {"enabled": False},
                                       "confidence": {"enabled": False}, **detectors}}, env={})


class Run:
    """One process of the daemon: a pipeline restored from ``store``."""

    def __init__(self, store: Store, config: Config) -> None:
        self.pipeline = Pipeline(config)
        self.checkpointer = Checkpointer(store, self.pipeline, group="g", producer="a")
        self.checkpointer.restore([PID])
        self.offset = self.pipeline.partitions[PID].offset or 0

    def send(self, events: list[dict[str, Any]]) -> list[dict]:
        records = [Record(self.offset + i, msgspec.json.encode(e)) for i, e in enumerate(events)]
        self.offset += len(records)
        return self.pipeline.process(PID, records).alerts

    def save(self) -> None:
        self.checkpointer.save()

    def keyed(self, key: str) -> Any:
        return next(k for k in self.pipeline.partitions[PID].detectors if k.key == key)


def _events(client: str, n: int, start: float, *, ip: str = "10.0.0.1",
            step: float = 0.0) -> list[dict[str, Any]]:
    """``n`` requests of ``client``, one every 0.1 s from ``start``; with ``step``,
    each query a small step from the one before (what query neighbours keys on)."""
    return [{"ts": start + 0.1 * i, "model": "m", "model_version": "1", "client_id": client,
             "source_ip": ip, "request_id": f"{client}-{start}-{i}", "prediction": "a",
             "confidence": 0.99,
             "features": {f"f{j}": 1.0 + j + step * i * (j + 1) for j in range(6)}}
            for i in range(n)]


@pytest.fixture
def store(store_url: str) -> Any:
    s = Store(store_url)
    s.migrate()
    yield s
    s.close()


def _fired(alerts: list[dict], client: str) -> list[str]:
    return [a["status"] for a in alerts if a.get("subject", {}).get("client_id") == client]


def test_a_client_allow_listed_at_a_restart_is_ignored_from_then_on(store: Store) -> None:
    flooding = {"flooding": {"max_events": 10}}
    first = Run(store, _config(**flooding))
    assert _fired(first.send(_events("etl", 15, T0) + _events("user", 5, T0)), "etl") == [
        "firing"]
    first.save()

    second = Run(store, _config(**flooding, allow_clients=["etl"]))
    resolved = [msgspec.json.decode(e.record) for e in second.pipeline.pending]
    assert [(r["status"], r["subject"]) for r in resolved] == [
        ("resolved", {"client_id": "etl"})]  # its open alert, at once
    assert ("m", "etl") not in second.keyed("client").slots  # no state for it
    alerts = second.send(_events("etl", 20, T0 + 2) + _events("user", 20, T0 + 2))
    assert _fired(alerts, "etl") == []
    assert _fired(alerts, "user") == ["firing"]  # the same budget, not allow-listed
    second.save()
    third = Run(store, _config(**flooding, allow_clients=["etl"]))
    assert ("m", "etl") not in third.keyed("client").slots  # nor in the stored rows


def test_a_threshold_changed_at_a_restart_takes_effect_and_other_signals_keep_their_state(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    first = Run(store, _config(flooding={"max_events": 100}))
    assert not first.send(_events("c", 4, T0, step=0.001))
    neighbours_before = first.keyed("client").slots[("m", "c")].detector.signals[0].export_state()
    first.save()

    with caplog.at_level(logging.WARNING, logger="monitor.checkpoint"):
        second = Run(store, _config(flooding={"max_events": 10}))
    assert "max_events=100" in caplog.text and "max_events=10," in caplog.text
    attack = second.keyed("client").slots[("m", "c")].detector
    assert isinstance(attack, ClientAttack)
    assert isinstance(attack.signals[0], QueryNeighbours)
    # the query history is the same signal's, configured as before: kept
    assert attack.signals[0].export_state() == neighbours_before
    # the request budget changed: its window starts afresh, under the new budget
    alerts = second.send(_events("c", 11, T0 + 10))
    assert [(a["status"], a["detector"]) for a in alerts
            if a["detector"] == "flooding.request_rate"] == [("firing", "flooding.request_rate")]


def test_a_keying_turned_off_at_a_restart_resolves_its_open_alerts_and_one_turned_on_runs(
        store: Store) -> None:
    linked = {"source_ip": {"enabled": True, "max_events": 20}, "flooding": {"max_events": 1000}}
    first = Run(store, _config(**linked))
    alerts = first.send([e for k in range(5) for e in _events(f"k{k}", 6, T0 + k * 0.01,
                                                              ip="10.9.9.9")])
    assert [(a["status"], a["subject"]) for a in alerts] == [
        ("firing", {"source_ip": "10.9.9.9"})]
    first.save()

    second = Run(store, _config(flooding={"max_events": 1000}))
    assert [k.key for k in second.pipeline.partitions[PID].detectors] == ["client"]
    resolved = [msgspec.json.decode(e.record) for e in second.pipeline.pending]
    assert [(r["status"], r["subject"]) for r in resolved] == [
        ("resolved", {"source_ip": "10.9.9.9"})]
    second.save()

    third = Run(store, _config(**linked))  # on again: it starts with no keys, and runs
    assert len(third.keyed("source_ip")) == 0
    alerts = third.send([e for k in range(5) for e in _events(f"k{k}", 6, T0 + 100 + k * 0.01,
                                                              ip="10.9.9.9")])
    assert [(a["status"], a["subject"]) for a in alerts] == [
        ("firing", {"source_ip": "10.9.9.9"})]


def test_after_a_layout_change_the_next_checkpoint_stores_the_new_layout(store: Store) -> None:
    records = stream_records()
    half = len(records) // 2
    before = _config(flooding={"max_events": 300}, probing={"min_queries": 20})
    after = _config(flooding={"max_events": 200}, probing={"min_queries": 20},
                    source_ip={"enabled": True})
    first = Pipeline(before)
    Checkpointer(store, first, group="g", producer="a").restore([PID])
    first.process(PID, records[:half])
    Checkpointer(store, first, group="g", producer="a").save()

    second = Pipeline(after)
    Checkpointer(store, second, group="g", producer="a").restore([PID])
    second.process(PID, records[half:])
    Checkpointer(store, second, group="g", producer="a").save()

    third = Pipeline(after)  # the same configuration again: the state as it was
    Checkpointer(store, third, group="g", producer="a").restore([PID])
    assert [k.key for k in third.partitions[PID].detectors] == ["client", "source_ip"]
    for resumed, running in zip(third.partitions[PID].detectors,
                                second.partitions[PID].detectors, strict=True):
        assert len(resumed) > 0
        assert list(resumed.slots) == list(running.slots)
        assert resumed.firing_keys == running.firing_keys
        assert [resumed.export_slot(s) for s in resumed.slots.values()] == [
            running.export_slot(s) for s in running.slots.values()]


def test_model_wide_detectors_keep_their_state_unless_their_settings_changed(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    records = stream_records()
    drift_on = {"drift": {"enabled": True, "reference_events": 200, "window_events": 100}}
    first = Pipeline(build_config({"detectors": drift_on}, env={}))
    Checkpointer(store, first, group="g", producer="a").restore([PID])
    first.process(PID, records)
    first.advance()
    Checkpointer(store, first, group="g", producer="a").save()
    stored = {type(k.prototype).__name__: len(k) for k in first.models.detectors}
    assert stored["DistributionDrift"] > 0

    same = Pipeline(build_config({"detectors": drift_on}, env={}))
    Checkpointer(store, same, group="g", producer="a").restore([PID])
    assert {type(k.prototype).__name__: len(k) for k in same.models.detectors} == stored

    changed = {"drift": {**drift_on["drift"], "min_psi": 0.5}}
    other = Pipeline(build_config({"detectors": changed}, env={}))
    Checkpointer(store, other, group="g", producer="a").restore([PID])
    now = {type(k.prototype).__name__: len(k) for k in other.models.detectors}
    assert now["DistributionDrift"] == 0  # starts afresh under the new settings
    assert now["ConfidenceDrift"] == stored["ConfidenceDrift"] > 0  # unchanged: kept
    assert "DistributionDrift per model: settings changed (min_psi 0.02 -> 0.5)" in caplog.text


def test_packed_clients_are_carried_to_new_settings_too(store: Store) -> None:
    packing = {"state": {"pack_idle_after_s": 1}}
    before = build_config({**packing, "detectors": {"flooding": {"max_events": 100}}}, env={})
    first = Run(store, before)
    first.send(_events("c", 4, T0, step=0.001))
    neighbours_before = first.keyed("client").slots[("m", "c")].detector.signals[0].export_state()
    first.send(_events("other", 1, T0 + 100))
    first.send(_events("other", 1, T0 + 101))  # announcing this batch packs the idle "c"
    assert first.keyed("client").slots[("m", "c")].packed is not None
    first.save()

    after = build_config({**packing, "detectors": {"flooding": {"max_events": 10}}}, env={})
    second = Run(store, after)
    keyed = second.keyed("client")
    state = keyed.export_slot(keyed.slots[("m", "c")])[5]
    assert state[0][0] == neighbours_before  # the query history, unpacked and carried
    assert "max_events=10," in repr(keyed.prototype)


@pytest.mark.parametrize("flooding", [{"enabled": False}, {"max_events": 1000}],
                         ids=["turned off", "changed"])
def test_an_open_alert_of_a_signal_turned_off_or_changed_resolves_under_its_name(
        store: Store, flooding: dict[str, Any]) -> None:
    first = Run(store, _config(flooding={"max_events": 10}))
    alerts = first.send(_events("c", 20, T0))
    assert [(a["status"], a["detector"]) for a in alerts] == [("firing", "flooding.request_rate")]
    first.save()

    second = Run(store, _config(flooding=flooding))
    resolved = [msgspec.json.decode(e.record) for e in second.pipeline.pending]
    assert [(r["status"], r["detector"], r["subject"]) for r in resolved] == [
        ("resolved", "flooding.request_rate", {"client_id": "c"})]
    assert not second.keyed("client").firing_keys
    assert not second.send(_events("c", 3, T0 + 2))  # nothing more to say about it
