"""Idle clients keep their detector state packed into bytes (``Keyed(pack_after_s=...)``):
the findings and the state are exactly those of a run that never packs, the packed
form is much smaller than the live detectors, and checkpoints read it."""

from __future__ import annotations

import pickle

import msgspec

from detectors.event import Event
from detectors.keyed import Keyed
from monitor.config import build_config
from monitor.state import client_detectors
from tests.detectors.test_batch_prepare import _stream


def _keyed(pack_after_s: float) -> Keyed:
    config = build_config({"state": {"client_idle_s": 3600, "pack_idle_after_s": pack_after_s},
                           "detectors": {"coverage": {"min_queries": 16}}}, env={})
    (keyed,) = client_detectors(config)
    return keyed


def _run(events: list[Event], pack_after_s: float, batch: int = 50):
    keyed = _keyed(pack_after_s)
    findings, most_packed = [], 0
    for start in range(0, len(events), batch):
        part = events[start:start + batch]
        keyed.prepare(part)
        for event in part:
            findings += [(f.detector, f.status, f.subject["client_id"], f.ts,
                          repr(sorted(f.evidence.items()))) for f in keyed.update(event)]
        for t in range(int(part[0].ts), int(part[-1].ts) + 1):  # resolve quiet firing clients
            findings += [(f.detector, f.status, f.subject["client_id"], f.ts,
                          repr(sorted(f.evidence.items()))) for f in keyed.tick(t)]
        most_packed = max(most_packed, sum(s.packed is not None for s in keyed.slots.values()))
    state = {key: keyed.export_slot(slot) for key, slot in keyed.slots.items()}
    return findings, state, most_packed, keyed


def test_packing_idle_clients_changes_no_finding_and_no_state() -> None:
    events = _stream(seed=11, n=6_000)  # 1,200 s of event time, 40 ordinary clients + attackers
    events = [e for i, e in enumerate(events) if i < 2_000 or e.client_id not in ("hsj", "simba")]
    never = _run(events, pack_after_s=1e9)
    packed = _run(events, pack_after_s=2.0)
    assert never[2] == 0 and packed[2] >= 10  # ordinary clients idle 2 s at times
    assert any(f[1] == "firing" for f in never[0])
    assert any(f[1] == "resolved" for f in never[0])
    assert packed[:2] == never[:2]


def test_a_packed_client_is_smaller_and_survives_pickling() -> None:
    events = [Event(ts=1_700_000_000 + i, model="m", model_version="1", client_id=f"c{i % 3}",
                    request_id=f"r{i}", features={f"f{j}": float(i * j % 7) for j in range(25)},
                    prediction="a", confidence=0.7) for i in range(30)]
    keyed = _keyed(pack_after_s=5.0)
    keyed.prepare(events)
    for event in events:
        keyed.update(event)
    live = len(pickle.dumps(keyed.slots[("m", "c0")].detector))
    late = Event(ts=1_700_000_100, model="m", model_version="1", client_id="c9", request_id="x",
                 features={"f0": 1.0}, prediction="a", confidence=0.7)
    keyed.update(late)
    keyed.prepare([])  # the next batch starts: c0..c2 have been idle for 70 s
    assert all(keyed.slots[("m", f"c{i}")].detector is None for i in range(3))
    assert len(keyed.slots[("m", "c0")].packed) < live / 2
    before = keyed.export_slot(keyed.slots[("m", "c1")])
    again = pickle.loads(pickle.dumps(keyed))
    assert again.export_slot(again.slots[("m", "c1")]) == before
    again.update(Event(ts=1_700_000_101, model="m", model_version="1", client_id="c1",
                       request_id="y", features={"f0": 2.0}, prediction="a", confidence=0.7))
    assert again.slots[("m", "c1")].packed is None  # restored by its next event


def _slots(det: object) -> list:
    """Every field of a slotted detector, its signals' fields in place of them."""
    return [[_slots(v) for v in value]
            if isinstance(value, tuple) and value and all(hasattr(v, "export_state") for v in value)
            else value
            for value in det.__getstate__()]  # type: ignore[attr-defined]


def test_a_detector_restored_without_its_constructor_is_a_clone_holding_the_state() -> None:
    config = build_config({"detectors": {
        "coverage": {"min_queries": 16}, "source_ip": {"enabled": True},
        "fingerprint": {"enabled": True},
        "rules": [{"name": "daily", "max_events": 50, "window_s": 600, "distinct": True}]}},
        env={})
    keyings = client_detectors(config)
    events = [msgspec.structs.replace(e, source_ip=f"10.0.0.{i % 3}")
              for i, e in enumerate(_stream(seed=5, n=1_500))]
    for start in range(0, len(events), 100):
        for keyed in keyings:
            keyed.prepare(events[start:start + 100])
        for event in events[start:start + 100]:
            for keyed in keyings:
                keyed.update(event)
    for keyed in keyings:
        proto, kept, seen = keyed.prototype, [], set()
        assert len(keyed) > 0
        for slot in keyed.slots.values():
            state = pickle.loads(pickle.dumps(slot.detector.export_state()))
            made = proto.clone()
            made.import_state(pickle.loads(pickle.dumps(state)))
            restored = proto.restored(state)
            assert type(restored) is type(made)
            assert _slots(restored) == _slots(made) == _slots(slot.detector)
            kept.append(restored)  # alive, so no two objects share an id
            owned = [id(restored), *map(id, restored.signals)]
            assert not seen & set(owned), "each client its own signals"
            assert not {id(proto), *map(id, proto.signals)} & set(owned)
            seen.update(owned)


def test_packed_rows_restore_under_another_packing_dictionary() -> None:
    """Rows packed with one dictionary (a shell stored by another runtime, whose
    pickles differ) are unpacked with it and packed again with the current one."""
    from detectors.keyed import _Packer

    events = _stream(seed=11, n=2_000)
    _, state, most_packed, keyed = _run(events, pack_after_s=2.0)
    assert most_packed > 0
    rows = [(k, keyed.stored_slot(s)) for k, s in keyed.slots.items()]
    assert any(isinstance(row[5], bytes) for _, row in rows)
    shell = pickle.loads(pickle.dumps(keyed))  # carries its packing dictionary
    shell._packer_obj = _Packer(b"another runtime's fresh state" + shell.packing_dict)
    shell.restore_slots(rows)
    assert {k: shell.export_slot(s) for k, s in shell.slots.items()} == state
    assert all(s.packed != keyed.slots[k].packed for k, s in shell.slots.items()
               if s.packed is not None)
