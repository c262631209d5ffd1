"""Version comparison details on stored summaries of seeded version pairs: the error
rate from labelled events, shadow-traffic agreement and the disagreeing classes,
per-feature differences between the versions' traffic, and configured pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitor.compare import compare_job, list_comparisons, run_comparisons
from monitor.scheduler import JobContext
from monitor.store import Store
from tests.jobs.seeded import DAY, FEATURES, MONDAY, config, ingest, stream

T0 = MONDAY + 2 * DAY
NOW = T0 + DAY + 3600  # every seeded event (t0 .. t0 + 24 h) is in [T0, NOW)
OTHER = {"fraud": "legit", "legit": "fraud"}


def _n(event: dict[str, Any]) -> int:
    return int(event["request_id"].rsplit("-", 1)[1])


def _labelled(events: list[dict[str, Any]], wrong_every: int) -> list[dict[str, Any]]:
    """Every event labelled: the prediction, except every ``wrong_every``-th request."""
    return [e | {"label": OTHER[e["prediction"]] if _n(e) % wrong_every == 0
                 else e["prediction"]} for e in events]


def _scaled(events: list[dict[str, Any]], feature: str, k: float) -> list[dict[str, Any]]:
    return [e | {"features": e["features"] | {feature: round(k * e["features"][feature], 4)}}
            for e in events]


def _error_rate(events: list[dict[str, Any]]) -> float:
    return sum(e["label"] != e["prediction"] for e in events) / len(events)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Models, each with versions 1.0 and 2.0 over the same 24 h:
    "labels"  the same traffic and predictions; 2.0's labelled error rate is 20 %, 1.0's 5 %;
    "shadow"  2.0 scores the same requests as 1.0 but flips every 8th prediction;
    "inputs"  ``amount`` has sd 2, and in 2.0's traffic it is shifted by 3 (1.5 sd);
    "paired"  2.0 (first seen an hour *before* 1.0) is twice as fast and errs less."""
    tmp = tmp_path_factory.mktemp("compare_details")
    url = f"sqlite:///{tmp / 'store.db'}"
    per_hour = 60
    common = {"start": T0, "hours": 24, "per_hour": per_hour}
    labels_1 = _labelled(list(stream(model="labels", version="1.0", seed=11, **common)), 20)
    labels_2 = _labelled(list(stream(model="labels", version="2.0", seed=11, rid_prefix="b",
                                     **common)), 5)
    shadow_1 = list(stream(model="shadow", version="1.0", seed=12, **common))
    shadow_2 = [e | {"prediction": OTHER[e["prediction"]]} if _n(e) % 8 == 0 else e
                for e in stream(model="shadow", version="2.0", seed=12, **common)]
    inputs_1 = _scaled(list(stream(model="inputs", version="1.0", seed=13, **common)),
                       "amount", 2.0)
    inputs_2 = _scaled(list(stream(model="inputs", version="2.0", seed=13, rid_prefix="b",
                                   drift_from=T0, shift=1.5, **common)), "amount", 2.0)
    # the challenger 2.0 starts first: the two-newest rule alone would make 1.0 the candidate
    paired_2 = _labelled(list(stream(model="paired", version="2.0", seed=14, start=T0,
                                     hours=24, per_hour=per_hour, latency_scale=3.0,
                                     rid_prefix="b")), 25)
    paired_1 = _labelled(list(stream(model="paired", version="1.0", seed=14, start=T0 + 3600,
                                     hours=23, per_hour=per_hour, latency_scale=6.0)), 6)
    ingest(config(url, str(tmp)), labels_1 + labels_2 + shadow_1 + shadow_2 + inputs_1
           + inputs_2 + paired_1 + paired_2)
    return {"url": url, "tmp": str(tmp), "labels": (labels_1, labels_2),
            "shadow": (shadow_1, shadow_2), "paired": (paired_1, paired_2)}


def _ctx(url: str, tmp: str, **jobs: object) -> JobContext:
    store = Store(url)
    store.migrate()
    return JobContext(config(url, tmp, **jobs), store, "test")


def _compare(seeded: dict[str, Any], model: str) -> dict[str, Any]:
    ctx = _ctx(seeded["url"], seeded["tmp"])
    [result] = run_comparisons(ctx, NOW, model=model, since=T0, post=False)
    assert (result["baseline"], result["candidate"]) == ("1.0", "2.0")
    return result


def test_error_rate_from_labelled_events_makes_the_candidate_worse(
        seeded: dict[str, Any]) -> None:
    """No status field in the event contract: the error rate is label vs prediction."""
    base_events, cand_events = seeded["labels"]
    result = _compare(seeded, "labels")
    errors = result["numbers"]["error_rate"]
    assert errors["labelled"] == {"1.0": len(base_events), "2.0": len(cand_events)}
    assert errors["1.0"] == pytest.approx(_error_rate(base_events), abs=1e-4)
    assert errors["2.0"] == pytest.approx(_error_rate(cand_events), abs=1e-4)
    assert 0.04 < errors["1.0"] < 0.06 and 0.19 < errors["2.0"] < 0.21
    assert errors["p_value"] < 1e-6
    # predictions, confidence and latency are the same: the labels alone decide
    assert result["verdict"] == "worse"
    assert result["reasons"] == [f"error rate {errors['1.0']:.2%} -> {errors['2.0']:.2%}"]
    assert "error rate" in result["headline"] and "looks WORSE than 1.0" in result["headline"]


def test_shadow_traffic_agreement_and_disagreeing_classes(seeded: dict[str, Any]) -> None:
    base_events, cand_events = seeded["shadow"]
    flipped = [(a["prediction"], b["prediction"]) for a, b in
               zip(base_events, cand_events, strict=True) if a["prediction"] != b["prediction"]]
    assert len(flipped) == len(base_events) // 8  # every 8th request: 12.5 %
    result = _compare(seeded, "shadow")
    shadow = result["numbers"]["shadow"]
    assert shadow["shared_requests"] == len(base_events)
    assert shadow["agreement"] == pytest.approx(1 - len(flipped) / len(base_events), abs=1e-4)
    assert shadow["agreement"] == 0.875
    expected = {f"{a} -> {b}": flipped.count((a, b)) for a, b in set(flipped)}
    assert set(expected) == {"fraud -> legit", "legit -> fraud"}
    assert shadow["disagreements"] == expected
    assert result["verdict"] == "worse"
    assert any(f"agree on 87.5% of {len(base_events)} shared requests" in r
               for r in result["reasons"])


def test_the_feature_that_shifted_between_versions_is_named_first(
        seeded: dict[str, Any]) -> None:
    result = _compare(seeded, "inputs")
    features = result["numbers"]["features"]
    top = features[0]
    assert top["feature"] == "amount" and top["type"] == "numeric"
    assert top["shift_sd"] == pytest.approx(1.5, abs=0.15)
    assert top["mean_cur"] - top["mean_ref"] == pytest.approx(3.0, abs=0.3)
    assert top["psi"] > 1.0 and top["ks"] > 0.4 and top["p_value"] < 1e-9
    rest = {f["feature"]: f for f in features[1:]}
    assert set(rest) == {*FEATURES[1:], "country"}
    assert all(f["psi"] < 0.01 for f in rest.values())
    assert any("inputs differ (amount)" in n for n in result["notes"])


def test_configured_pair_gets_a_better_verdict(seeded: dict[str, Any], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'copy.db'}"
    (tmp_path / "copy.db").write_bytes(Path(seeded["url"].removeprefix("sqlite:///"))
                                       .read_bytes())
    champion, challenger = seeded["paired"]
    ctx = _ctx(url, str(tmp_path), compare={
        "window_h": 26, "pairs": [{"model": "paired", "champion": "1.0", "challenger": "2.0"}]})
    message = compare_job(ctx, NOW)
    # only the configured pair, with its roles (not the two-newest rule, not other models)
    assert message == next(r["headline"] for r in list_comparisons(ctx.store))
    assert message.startswith("paired 2.0 looks better than 1.0: ")
    [stored] = list_comparisons(ctx.store)
    assert (stored["model"], stored["baseline"], stored["candidate"], stored["verdict"]) == (
        "paired", "1.0", "2.0", "better")
    latency = stored["numbers"]["latency_ms"]
    assert latency["2.0"]["p95"] < 0.6 * latency["1.0"]["p95"]
    errors = stored["numbers"]["error_rate"]
    assert errors["1.0"] == pytest.approx(_error_rate(champion), abs=1e-4)
    assert errors["2.0"] == pytest.approx(_error_rate(challenger), abs=1e-4)
    assert any(r.startswith("latency p95") for r in stored["reasons"])
    assert any(r.startswith("error rate") for r in stored["reasons"])
    assert all(r.startswith(("latency p95", "error rate")) for r in stored["reasons"])
