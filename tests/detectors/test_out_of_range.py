"""The out-of-range signal: a client whose queries fall outside the model's stored
reference data (noise or synthetic extraction queries) fires, whatever confidence
the model answers with; clients drawing from the reference's distribution, models
without a stored reference and automatic references stay quiet; the signal's state
leaves the shared references out and survives a restart from the store."""

from __future__ import annotations

import pickle

import msgspec
import numpy as np
import pytest

from detectors.drift import ReferenceSet
from detectors.event import Event
from detectors.out_of_range import OutOfRangeShare
from detectors.reference import build_reference
from monitor.checkpoint import Checkpointer
from monitor.config import build_config
from monitor.pipeline import Pipeline
from monitor.reference import save_reference
from monitor.store import Store
from tests.detectors.test_batch_prepare import run_batched
from tests.detectors.test_source_ip import PID, _alerts, _essence, alerts_with_restart

T0 = 1_767_225_600.0
N_FEATURES = 16


def _training(n: int = 2000, seed: int = 1) -> list[dict]:
    """Image-like rows: values in [0, 1], the first four features always 0 (an
    image's blank border)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, N_FEATURES))
    x[:, :4] = 0.0
    return [{f"f{j}": float(v) for j, v in enumerate(row)} for row in x]


def _reference(source: str = "file:train.csv") -> ReferenceSet:
    return ReferenceSet([build_reference(_training(), model="m", source=source)])


def _event(t: float, client: str, row: dict, conf: float = 0.97) -> Event:
    return Event(ts=T0 + t, model="m", model_version="1", client_id=client,
                 request_id=f"{client}-{t}", features=row, confidence=conf)


def _traffic(seed: int = 2, n: int = 400) -> list[Event]:
    """Benign clients querying rows like the training data, one sending augmented
    copies (a little noise on every feature, the blank border too), and a thief
    sending uniform noise (answered confidently: the low-confidence share cannot
    see it)."""
    rng = np.random.default_rng(seed)
    benign = _training(n, seed=seed + 10)
    events = []
    for i in range(n):
        t = i * 0.5
        events.append(_event(t, f"user-{i % 8}", benign[i]))
        jitter = rng.normal(0, 0.01, N_FEATURES)
        events.append(_event(t + 0.05, "augmenter", {
            k: v + float(d) for (k, v), d in zip(benign[i].items(), jitter, strict=True)}))
        if i % 4 == 0:
            noise = {f"f{j}": float(v) for j, v in enumerate(rng.uniform(0, 1, N_FEATURES))}
            events.append(_event(t + 0.1, "thief", noise))
    return events


def _config(**out_of_range: object) -> object:
    return build_config({"detectors": {"out_of_range": out_of_range}}, env={})


def _pipeline(refs: ReferenceSet | None = None, **out_of_range: object) -> Pipeline:
    pipeline = Pipeline(_config(**out_of_range))  # type: ignore[arg-type]
    if refs is not None:
        pipeline.use_references(refs)
    return pipeline


def test_noise_queries_fire_and_ordinary_ones_stay_quiet() -> None:
    alerts = _alerts(_pipeline(_reference()), _traffic())
    firing = [a for a in alerts if a["status"] == "firing"]
    assert {a["subject"]["client_id"] for a in firing} == {"thief"}
    first = firing[0]
    assert first["detector"] == "extraction.out_of_range_share"
    ev = first["evidence"]
    # the thief's 20th query (the minimum) is the first judged with a full window
    assert ev["queries_in_window"] == 20 and ev["out_of_range_share"] == 1.0
    assert set(ev["example_features"]) <= {"f0", "f1", "f2", "f3"}
    assert ev["sample_request_ids"][0].startswith("thief-")
    assert "outside the range of its reference data" in first["summary"]


def test_without_a_stored_reference_nothing_is_judged() -> None:
    for pipeline in (_pipeline(), _pipeline(ReferenceSet())):
        assert _alerts(pipeline, _traffic()) == []
        (keyed,) = pipeline.partitions[PID].detectors
        det = keyed.slots[("m", "thief")].detector
        signal = next(s for s in det.signals if isinstance(s, OutOfRangeShare))
        assert signal.evidence()["queries_in_window"] == 0


def test_another_models_reference_and_the_margin_are_respected() -> None:
    other = ReferenceSet([build_reference(_training(), model="other", source="file:x")])
    assert _alerts(_pipeline(other), _traffic()) == []
    # a border that varies over [0, 0.5] in training: noise beyond 0.55 is out by the
    # default margin (10% of the range), not with a margin of the whole range (to 1.0)
    rng = np.random.default_rng(3)
    half = ReferenceSet([build_reference(
        [{**r, **{f"f{j}": float(rng.uniform(0, 0.5)) for j in range(4)}} for r in _training()],
        model="m", source="file:x")])

    def fired(margin: float) -> set[str]:
        return {a["subject"]["client_id"] for a in _alerts(_pipeline(half, margin=margin),
                                                          _traffic())
                if a["detector"] == "extraction.out_of_range_share"}

    assert fired(0.1) == {"thief"}
    assert fired(1.0) == set()


def test_batched_and_one_by_one_agree() -> None:
    config = _config()
    events = _traffic(seed=5)

    def run(sizes: list[int] | None) -> tuple:
        pipeline = Pipeline(config)  # type: ignore[arg-type]
        pipeline.use_references(_reference())
        keyings = pipeline.new_partition_state().detectors
        return run_batched(keyings, events, sizes)

    one_by_one = run(None)
    assert any(f[0] == "extraction.out_of_range_share" for f in one_by_one[0])
    for sizes in ([500], [1, 37, 200, 3]):
        assert run(sizes) == one_by_one, sizes


def test_a_clients_state_leaves_the_references_out() -> None:
    refs = _reference()
    det = OutOfRangeShare(references=refs, min_queries=5)
    for e in _traffic()[:40]:
        det.update(e)
    state = det.export_state()
    assert refs not in state and len(pickle.dumps(state)) < 300
    twin = OutOfRangeShare(references=refs, min_queries=5)
    twin.import_state(state)
    assert twin.references is refs and twin.evidence() == det.evidence()
    assert det.clone().references is refs, "every client's clone shares the references"


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
def test_a_restart_from_the_store_uses_the_stored_reference_and_decides_alike(
        store_url: str) -> None:
    store = Store(store_url)
    store.migrate()
    save_reference(store, build_reference(_training(), model="m", source="file:train.csv"))
    store.close()
    config = _config()
    events = _traffic(seed=7)
    whole = _alerts(_pipeline(_reference()), events)
    assert any(a["detector"] == "extraction.out_of_range_share" for a in whole)
    thief = [i for i, e in enumerate(events) if e.client_id == "thief"]
    cut = thief[25]  # after the first alert: the restart must keep the window's counts
    assert _essence(alerts_with_restart(config, events, cut, store_url)) == _essence(whole)


def test_an_automatic_reference_in_the_store_is_not_used(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    save_reference(store, build_reference(_training(), model="m", source="auto"))
    pipeline = _pipeline()
    Checkpointer(store, pipeline, group="g", producer="a").restore([PID])
    assert _alerts(pipeline, _traffic()) == []


def test_a_client_unpacked_after_idling_still_judges_its_queries() -> None:
    pipeline = _pipeline(_reference(), min_queries=10)
    events = _traffic()
    thief = [e for e in events if e.client_id == "thief"]
    # the thief sends 5 queries, idles past state.pack_idle_after_s (300 s), sends more
    late = [msgspec.structs.replace(e, ts=e.ts + 1000) for e in thief[5:15]]
    alerts = _alerts(pipeline, [*thief[:5], *late])
    assert [a["detector"] for a in alerts] == ["extraction.out_of_range_share"]


def test_counts_prepared_with_other_settings_are_not_used() -> None:
    refs = _reference()
    thief = [e for e in _traffic() if e.client_id == "thief"]
    narrow = OutOfRangeShare(references=refs, min_queries=5)
    narrow.prepare(thief, [e.client_id for e in thief], {})
    wide = OutOfRangeShare(references=refs, min_queries=5, margin=100.0)
    for e in thief:
        wide.update(e)
    assert wide.evidence()["queries_in_window"] == len(thief) and not wide.detected
