"""QueryNeighbours as a specification: small-step query chains fire within a few
queries; retries, augmentation bursts and ordinary clients stay quiet; the state
is small and survives checkpoints."""

from __future__ import annotations

import pickle

import msgspec
import numpy as np

from detectors.allow import AllowListed
from detectors.event import Event
from detectors.neighbours import QueryNeighbours
from monitor.config import build_config
from monitor.state import client_detectors

D = 30


def _event(i: int, x: np.ndarray, client: str = "c") -> Event:
    return Event(ts=1_700_000_000 + i * 0.5, model="m", model_version="1", client_id=client,
                 request_id=f"r{i}", features={f"f{j:02d}": float(v) for j, v in enumerate(x)})


def _run(det: QueryNeighbours, xs: list[np.ndarray]) -> int | None:
    """Feed the queries; return the 1-based index of the first one it fired on."""
    first = None
    for i, x in enumerate(xs):
        det.update(_event(i, x))
        if det.detected and first is None:
            first = i + 1
    return first


def _gradient_estimate(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """HopSkipJump-style: a boundary point, then many tiny random perturbations."""
    x0 = rng.uniform(0, 1, D)
    return [x0] + [x0 + 1e-3 * rng.normal(size=D) for _ in range(n - 1)]


def test_fires_within_ten_queries_of_a_gradient_estimate() -> None:
    det = QueryNeighbours()
    assert _run(det, _gradient_estimate(np.random.default_rng(1), 50)) == 6
    ev = det.evidence()
    assert ev["max_near_copies"] >= 15 and ev["exact_repeats"] == 0
    assert len(ev["sample_request_ids"]) == 5


def test_fires_on_a_boundary_walk_in_small_steps() -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, D)
    walk = []
    for _ in range(40):
        x = x + 0.002 * rng.normal(size=D)
        walk.append(x.copy())
    assert _run(QueryNeighbours(), walk) is not None


def test_ordinary_client_is_quiet() -> None:
    rng = np.random.default_rng(3)
    assert _run(QueryNeighbours(), [rng.uniform(0, 1, D) for _ in range(2000)]) is None


def test_retries_are_not_neighbours() -> None:
    rng = np.random.default_rng(4)
    xs = []
    for _ in range(500):
        x = rng.uniform(0, 1, D)
        xs += [x] * int(rng.integers(1, 6))  # each request retried up to 4 times
    det = QueryNeighbours()
    assert _run(det, xs) is None
    assert det.evidence()["exact_repeats"] == len(xs) - 500


def test_augmentation_bursts_of_up_to_five_copies_are_quiet() -> None:
    rng = np.random.default_rng(5)
    xs = []
    for _ in range(500):
        x = rng.uniform(0, 1, D)
        xs += [x + 1e-3 * rng.normal(size=D) for _ in range(5)]
    assert _run(QueryNeighbours(), xs) is None


def test_clears_after_a_quiet_window_and_keeps_counting() -> None:
    det = QueryNeighbours(window_s=60)
    _run(det, _gradient_estimate(np.random.default_rng(6), 20))
    assert det.detected
    det.tick(1_700_000_000 + 20 * 0.5 + 61)
    assert not det.detected
    assert det.evidence()["clustered_queries_total"] == 15


def test_embedding_is_used_when_present_and_projected() -> None:
    rng = np.random.default_rng(7)
    x0 = rng.normal(size=256)
    det = QueryNeighbours()
    for i in range(10):
        det.update(Event(ts=i, model="m", model_version="1", client_id="c",
                         embedding=[float(v) for v in x0 + 1e-4 * rng.normal(size=256)]))
    assert det.detected


def test_state_is_small_and_survives_pickle() -> None:
    det = QueryNeighbours()
    _run(det, _gradient_estimate(np.random.default_rng(8), 300))
    blob = pickle.dumps(det)
    assert len(blob) < 1024, len(blob)
    twin = pickle.loads(blob)
    assert twin.evidence() == det.evidence() and twin.detected


def test_allow_listed_clients_get_no_state_and_no_alerts() -> None:
    config = build_config({"detectors": {"allow_clients": ["batch-*", "explainer-1"]}}, env={})
    keyed = client_detectors(config)
    assert all(isinstance(k, AllowListed) for k in keyed)
    xs = _gradient_estimate(np.random.default_rng(9), 40)
    findings = []
    for client in ("batch-7", "explainer-1", "attacker"):
        for i, x in enumerate(xs):
            for k in keyed:
                findings += k.update(_event(i, x, client))
    assert {f.subject["client_id"] for f in findings} == {"attacker"}
    assert all(len(k) <= 1 for k in keyed)


def test_fires_on_coordinate_wise_probing_simba_style() -> None:
    rng = np.random.default_rng(10)
    x = rng.uniform(0, 1, 64)
    xs = []
    for i in range(30):  # SimBA (pixel basis): one coordinate +/- a large step each query
        q = x.copy()
        q[int(rng.integers(64))] += 0.3 if i % 2 else -0.3
        xs.append(q)
    assert _run(QueryNeighbours(), xs) is not None
    # not close in L2: without the sparse copies only the star around x sees it, later
    assert _run(QueryNeighbours(sparse_groups=0, star_steps=0), xs) is None


def test_explainer_style_coalitions_are_not_sparse_copies() -> None:
    rng = np.random.default_rng(11)
    x, background = rng.uniform(0, 1, 64), rng.uniform(0, 1, 64)
    xs = [np.where(rng.random(64) < 0.5, x, background) for _ in range(300)]
    assert _run(QueryNeighbours(), xs) is None


def test_fires_on_a_binary_search_before_any_cluster_forms() -> None:
    rng = np.random.default_rng(12)
    lo, hi = rng.uniform(0, 1, D), rng.uniform(0, 1, D)
    xs = [lo, hi]
    for _ in range(10):  # bisect towards the boundary, always keeping the upper half
        mid = (lo + hi) / 2
        xs.append(mid)
        lo = mid
    det = QueryNeighbours()
    assert _run(det, xs) == 6
    assert det.evidence()["longest_bisection_run"] >= 4
    later = _run(QueryNeighbours(halvings=0), xs)  # the cluster of near copies alone
    assert later is None or later > 6


def _simba_walk(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """SimBA (pixel basis): try +eps then -eps on one random coordinate of the current
    point, keep the step when it helps (here: every third try)."""
    x = rng.uniform(0, 1, 64)
    xs = [x.copy()]
    for i in range(n):
        q = x.copy()
        q[int(rng.integers(64))] += 0.3 if i % 2 else -0.3
        xs.append(q)
        if i % 3 == 2:
            x = q
    return xs


def test_a_coordinate_wise_walk_fires_on_its_run_of_sparse_steps() -> None:
    xs = _simba_walk(np.random.default_rng(13), 40)
    det = QueryNeighbours()
    assert _run(det, xs) == 5  # the start, then 4 one-coordinate steps in a row
    assert det.evidence()["longest_sparse_run"] >= 4
    later = _run(QueryNeighbours(sparse_steps=0), xs)  # near copies alone take longer
    assert later is None or later > 5


def test_single_field_edits_need_a_run_not_one_step() -> None:
    rng = np.random.default_rng(14)
    xs = []
    for _ in range(300):  # a new record, then up to 2 one-field edits of it
        x = rng.uniform(0, 1, 64)
        xs.append(x)
        for _ in range(int(rng.integers(0, 3))):
            x = x.copy()
            x[int(rng.integers(64))] = rng.uniform(0, 1)
            xs.append(x)
    det = QueryNeighbours()
    assert _run(det, xs) is None
    assert det.evidence()["longest_sparse_run"] == 2


def _noise_ramp(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """GeoDA's search for a first adversarial point: the input plus Gaussian noise of
    growing size, clipped to the valid range."""
    x = rng.uniform(0, 1, 64)
    return [x] + [np.clip(x + 0.02 * k * rng.normal(size=64), 0, 1) for k in range(1, n)]


def test_a_noise_ramp_around_one_input_fires_within_ten_queries() -> None:
    det = QueryNeighbours()
    first = _run(det, _noise_ramp(np.random.default_rng(15), 30))
    assert first is not None and first <= 10, first
    assert det.evidence()["longest_star_run"] >= 6
    assert _run(QueryNeighbours(star_steps=0), _noise_ramp(np.random.default_rng(15), 10)) is None


def test_an_input_augmented_again_later_starts_its_star_over() -> None:
    rng = np.random.default_rng(16)
    inputs = [rng.uniform(0, 1, 64) for _ in range(3)]
    xs = []
    for x in inputs * 3:  # the same 3 inputs, each sent with 4 noisy copies, 3 times
        xs += [x] + [np.clip(x + 0.01 * rng.normal(size=64), 0, 1) for _ in range(4)]
    det = QueryNeighbours()
    assert _run(det, xs) is None
    assert det.evidence()["longest_star_run"] <= 5


def test_the_search_rules_come_from_the_config() -> None:
    config = build_config({"detectors": {"neighbours": {
        "sparse_steps": 0, "star_steps": 8, "star_radius": 0.5, "boundary_only": False,
        "low_confidence": 0.7, "burst_s": 1.5}}}, env={})
    (signal,) = [s for s in client_detectors(config)[0].prototype.signals
                 if isinstance(s, QueryNeighbours)]
    assert (signal.sparse_steps, signal.star_steps, signal.star_radius) == (0, 8, 0.5)
    assert (signal.boundary_only, signal.low_confidence, signal.burst_s) == (False, 0.7, 1.5)


def test_the_summary_names_the_search_pattern_that_fired() -> None:
    # on-call reads the summary first: it must describe what the client did, not
    # always the cluster of near copies
    subject = {"client_id": "c"}
    star = QueryNeighbours()
    _run(star, _noise_ramp(np.random.default_rng(15), 10))
    walk = QueryNeighbours()
    _run(walk, _simba_walk(np.random.default_rng(13), 5))
    cluster = QueryNeighbours(halvings=0, sparse_steps=0, star_steps=0)
    _run(cluster, _gradient_estimate(np.random.default_rng(1), 8))
    assert star.detected and walk.detected and cluster.detected
    star_text = star.summary(subject, "m")
    assert "around one earlier input" in star_text and "near copies" not in star_text
    walk_text = walk.summary(subject, "m")
    assert "changing 1 to 2 feature groups" in walk_text
    assert "near copies" not in walk_text
    assert "5+ distinct near copies" in cluster.summary(subject, "m")
    # and its resolution says the searching stopped, not "sent 0 queries ... rate-limit it"
    star.tick(1_700_000_000 + 10_000)
    assert not star.detected
    assert star.summary(subject, "m") == (
        "Client c sent no query to m that looked like the step of a black-box search for "
        f"600s ({star.hits} such queries in all).")


def _one_field_client(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """A client scoring one customer again and again with another amount: its flags
    stay put but for the odd flip, the amount is new every time."""
    base = (rng.uniform(0, 1, 25) < 0.2).astype(float)
    xs = []
    for _ in range(n):
        x = base.copy()
        flips = rng.uniform(0, 1, 25) < 0.05
        x[flips] = 1 - x[flips]
        x[0] = rng.uniform(0, 100)
        xs.append(x)
    return xs


def test_a_client_that_varies_one_field_is_not_a_coordinate_wise_search() -> None:
    # each query differs from the one before in one or two groups, as SimBA's do, but
    # always in the same one: it fired every such client within a dozen queries
    rng = np.random.default_rng(17)
    for _ in range(20):
        det = QueryNeighbours()
        assert _run(det, _one_field_client(rng, 300)) is None
        assert det.evidence()["longest_sparse_run"] >= 4  # the steps are sparse ones
    simba = QueryNeighbours()
    assert _run(simba, _simba_walk(np.random.default_rng(13), 40)) == 5


def test_a_few_numeric_features_make_no_noise_search_by_chance() -> None:
    # with 2 or 3 numbers per query (an amount, an age), one of a client's first
    # queries was the nearest of the next five by chance for about one client in a
    # thousand: a critical alert on an ordinary new client
    rng = np.random.default_rng(18)
    fired = 0
    for _ in range(6000):
        det = QueryNeighbours()
        for i in range(12):
            det.update(Event(ts=i * 30.0, model="m", model_version="1", client_id="c",
                             features={"amount": float(rng.lognormal(3, 1)),
                                       "age": float(rng.integers(18, 91))}))
        fired += det.detected
    assert fired == 0
    # a noise search over a wide input is still seen
    assert _run(QueryNeighbours(), _noise_ramp(np.random.default_rng(15), 10)) is not None


def _answered(i: int, x: np.ndarray, answer: str, confidence: float = 0.95,
              every_s: float = 10.0) -> Event:
    """An event whose model answer is logged (a class and its probability), one every
    ``every_s`` (a device's schedule)."""
    return Event(ts=1_700_000_000 + i * every_s, model="m", model_version="1", client_id="c",
                 request_id=f"r{i}", features={f"t{j:02d}": float(v) for j, v in enumerate(x)},
                 prediction=answer, confidence=confidence)


def _first_fired(det: QueryNeighbours, events: list[Event]) -> int | None:
    for i, event in enumerate(events):
        det.update(event)
        if det.detected:
            return i + 1
    return None


def _sliding_windows(rng: np.random.Generator, n: int, width: int = 32) -> list[np.ndarray]:
    """A sensor's queries: its last ``width`` readings of a slow signal with noise,
    each window the one before shifted by one reading."""
    signal = 45 + np.cumsum(rng.normal(0, 0.05, n + width)) + rng.normal(0, 0.2, n + width)
    return [signal[i:i + width] for i in range(n)]


def test_a_device_answered_the_same_each_time_is_not_a_search() -> None:
    # a sensor's sliding windows are near copies of each other, as a gradient
    # estimate's queries are: every such device was a critical alert at its 6th query
    rng = np.random.default_rng(19)
    windows = _sliding_windows(rng, 400)
    sure = [_answered(i, x, "normal") for i, x in enumerate(windows)]
    assert _first_fired(QueryNeighbours(), sure) is None
    # the same queries in a burst, as a search loop sends them (each as soon as the one
    # before is answered), are one
    burst = [_answered(i, x, "normal", every_s=0.5) for i, x in enumerate(windows)]
    assert _first_fired(QueryNeighbours(), burst) == 6
    assert _first_fired(QueryNeighbours(burst_s=0.4), burst) is None
    # near copies that the model answers otherwise, or unsurely, are the boundary a
    # query-based search probes; with no answer logged there is nothing to tell by
    flips = [_answered(i, x, "warn" if i % 7 == 6 else "normal") for i, x in enumerate(windows)]
    assert _first_fired(QueryNeighbours(), flips) == 7
    unsure = [_answered(i, x, "normal", confidence=0.55) for i, x in enumerate(windows)]
    assert _first_fired(QueryNeighbours(), unsure) == 6
    assert _run(QueryNeighbours(), windows) == 6
    assert _first_fired(QueryNeighbours(boundary_only=False), sure) == 6


def test_a_noise_search_is_seen_once_an_answer_changes() -> None:
    ramp = _noise_ramp(np.random.default_rng(15), 30)
    # answered the same, confidently, throughout: no boundary in sight
    same = [_answered(i, x, "3") for i, x in enumerate(ramp)]
    assert _first_fired(QueryNeighbours(), same) is None
    # the search ends where the answer flips: the star's run holds both answers
    flipped = [_answered(i, x, "3" if i < 8 else "8") for i, x in enumerate(ramp)]
    assert _first_fired(QueryNeighbours(), flipped) == 9


def test_a_huge_constant_field_does_not_hide_a_search() -> None:
    # a value past float16's range (an account number, a Unix time) made every sketch
    # infinite and every query far from the others: no search was ever seen
    xs = _gradient_estimate(np.random.default_rng(1), 50)
    for pad in (1e6, 1.7e9):
        assert _run(QueryNeighbours(), [np.append(x, pad) for x in xs]) == 6


def test_a_client_state_stored_before_the_answer_fields_restores() -> None:
    det = QueryNeighbours()
    _run(det, _gradient_estimate(np.random.default_rng(1), 10))
    stored = det.export_state()[:-3]  # _star_mixed, _window_patterns, _last_query_ts came later
    back = QueryNeighbours().restored(stored)
    assert (back._queries, back._star_mixed, back._window_patterns) == (10, 0, 0)
    assert back._last_query_ts == float("-inf")


def test_the_summary_names_only_the_patterns_of_the_current_incident() -> None:
    det = QueryNeighbours(window_s=60)
    _run(det, _simba_walk(np.random.default_rng(13), 8))
    assert "coordinate-wise" in det.summary({"client_id": "c"}, "m")
    det.tick(1_700_000_000 + 10_000)  # the walk's incident is over
    later = [_event(20_000 + i, x) for i, x in
             enumerate(_gradient_estimate(np.random.default_rng(1), 8))]
    for event in later:
        det.update(event)
    text = det.summary({"client_id": "c"}, "m")
    assert det.detected and "near copies" in text and "coordinate-wise" not in text


def test_class_ids_logged_as_numbers_are_answers() -> None:
    # a class id decodes as a float (1 -> 1.0): it names the answer as a string would;
    # only a fractional value (a regression's output) is no class
    windows = _sliding_windows(np.random.default_rng(19), 400)
    ids = [msgspec.structs.replace(_answered(i, x, "x"), prediction=2.0)
           for i, x in enumerate(windows)]
    assert _first_fired(QueryNeighbours(), ids) is None
    regression = [msgspec.structs.replace(e, prediction=2.5) for e in ids]
    assert _first_fired(QueryNeighbours(), regression) == 6
