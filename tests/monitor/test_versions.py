"""A producer that writes a fresh value into ``model_version`` (or the model name)
on every event must not grow the daemon's state without bound: past
``events.max_model_versions`` pairs per partition, the events of new pairs are bad
input (``too_many_versions``)."""

from __future__ import annotations

import pickle
import random

import msgspec

from detectors.event import Event
from monitor.config import build_config
from monitor.pipeline import Pipeline, Record
from monitor.state import PartitionState
from monitor.versions import ModelVersions
from tests.monitor.streams import stream_records

LIMIT = 20


def _versioned(records: list[Record]) -> list[Record]:
    """The stream with its second half stamped with a new model version per event."""
    middle = len(records) // 2
    out = records[:middle]
    for rec in records[middle:]:
        doc = msgspec.json.decode(rec.value)
        out.append(Record(rec.offset, msgspec.json.encode(
            {**doc, "model_version": f"build-{rec.offset}"})))
    return out


def _run(records: list[Record], cuts: list[int]) -> tuple[Pipeline, list[str]]:
    p = Pipeline(build_config({"events": {"max_model_versions": LIMIT}}, env={}))
    bad: list[str] = []
    for start, end in zip([0, *cuts], [*cuts, len(records)], strict=True):
        result = p.process(("t", 0), records[start:end])
        p.advance()
        bad += [f"{rec.offset}:{b.reason}" for rec, b in result.bad]
    return p, bad


def test_a_version_per_event_is_bad_input_past_the_limit_and_state_stays_bounded() -> None:
    records = _versioned(stream_records())
    middle = len(records) // 2
    known = {(e["model"], e["model_version"]) for e in
             map(msgspec.json.decode, (r.value for r in records[:middle]))}
    p, bad = _run(records, cuts=list(range(500, len(records), 500)))
    assert len(known) < LIMIT
    assert len(bad) == len(records) - middle - (LIMIT - len(known))  # all but the room left
    assert {b.split(":")[1] for b in bad} == {"too_many_versions"}
    assert len(p.partitions[("t", 0)].versions.last) == LIMIT
    for keyed in p.models.detectors:
        assert len(keyed) <= LIMIT
    summary_pairs = {(m, v) for deltas in p.summaries.deltas.values() for m, v, _ in deltas}
    assert len(summary_pairs) <= LIMIT


def test_the_same_events_are_set_aside_however_the_stream_is_cut_into_batches() -> None:
    records = _versioned(stream_records())
    rng = random.Random(7)
    cuts = sorted(rng.sample(range(1, len(records)), 40))
    cut, whole = _run(records, cuts), _run(records, [])
    assert cut[1] == whole[1]
    state = [p.partitions[("t", 0)].versions for p in (cut[0], whole[0])]
    assert list(state[0].last.items()) == list(state[1].last.items())  # order, times
    assert state[0].now == state[1].now


def test_a_pair_idle_for_idle_s_makes_room_and_the_state_survives_a_pickle() -> None:
    v = ModelVersions(limit=2, idle_s=100)
    ev = lambda t, version: Event(ts=t, model="m", model_version=version)  # noqa: E731
    assert v.over_limit([ev(0, "a"), ev(10, "b"), ev(20, "c")]) == [2]
    v = pickle.loads(pickle.dumps(v))
    assert v.over_limit([ev(105, "a"), ev(109, "c")]) == [1]  # "b" idle 99 s: it stays
    assert v.over_limit([ev(111, "c")]) == []  # "b" idle 101 s: "c" takes its place
    assert list(v.last) == [("m", "a"), ("m", "c")]


def test_a_partition_state_stored_before_the_limit_gets_one_when_restored() -> None:
    state = PartitionState([], offset=7)
    del state.__dict__["versions"]
    restored = pickle.loads(pickle.dumps(state))
    assert restored.offset == 7
    assert restored.versions.over_limit([Event(ts=1, model="m", model_version="1")]) == []
