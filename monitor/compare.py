"""Model-version comparison (champion vs challenger) on stored window summaries.

For a model with two or more versions live in the window (the newest against
the one before it), or for configured pairs: prediction distribution
divergence, confidence and latency percentiles, error rate when labels are
present, per-feature differences between the versions' traffic, and, for
requests scored by both (same ``request_id``: shadow traffic), their agreement
and the disagreeing classes. The verdict is one of ``no_difference``,
``worse``, ``better`` or ``unknown`` (too little data), always with the numbers
behind it; it is stored in ``reports`` (kind ``comparison``) and posted as a
``version_regression`` record.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from scipy.special import kolmogorov
from scipy.stats import norm

from detectors.reference import label
from monitor.config import CompareJobConfig
from monitor.store import Store, reports
from monitor.summaries import (
    CONF_BINS,
    OTHER,
    Sketch,
    Summary,
    load_buckets,
    merge_all,
    version_traffic,
)

if TYPE_CHECKING:
    from monitor.scheduler import JobContext

log = logging.getLogger(__name__)
# requests per version kept for the shadow-traffic match: the smallest hashes of
# request_id, so both versions keep the same requests when both scored them
SHADOW_SAMPLE = 20_000


# -- statistics on summaries ---------------------------------------------------------
def ks_sketch(a: Sketch, b: Sketch) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic from two sketches, and its asymptotic
    p-value (buckets are shared, so both CDFs are evaluated at the same points)."""
    va, ca = a.points()
    vb, cb = b.points()
    if not ca.size or not cb.size:
        return math.nan, math.nan
    grid = np.union1d(va, vb)
    cdf_a = np.concatenate([[0.0], np.cumsum(ca)])[np.searchsorted(va, grid, side="right")] / ca.sum()
    cdf_b = np.concatenate([[0.0], np.cumsum(cb)])[np.searchsorted(vb, grid, side="right")] / cb.sum()
    stat = float(np.max(np.abs(cdf_a - cdf_b)))
    n, m = ca.sum(), cb.sum()
    en = math.sqrt(n * m / (n + m))
    return stat, float(kolmogorov(en * stat)) if stat > 0 else 1.0


def psi_sketch(ref: Sketch, cur: Sketch, bins: int = 10) -> float:
    """Population stability index over the reference's deciles."""
    if not ref.n or not cur.n:
        return math.nan
    edges = np.unique([ref.quantile(q) for q in np.linspace(0, 1, bins + 1)[1:-1]])
    return psi_props(_binned(ref, edges), _binned(cur, edges))


def _binned(s: Sketch, edges: np.ndarray) -> np.ndarray:
    values, counts = s.points()
    return np.bincount(np.searchsorted(edges, values, side="right"), weights=counts,
                       minlength=len(edges) + 1)


def psi_props(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    r = (ref_counts + 0.5) / (ref_counts + 0.5).sum()
    c = (cur_counts + 0.5) / (cur_counts + 0.5).sum()
    return float(((c - r) * np.log(c / r)).sum())


def _aligned(a: dict[str, int], b: dict[str, int]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Both count tables over one list of categories. A table that lists only its
    most frequent categories (the rest counted under ``OTHER``: a summary's cap, a
    reference's top-k) cannot tell a category it did not list from one it never saw,
    so the other table's counts of those go to ``OTHER`` too."""
    a, b = _folded(a, b) if OTHER in b else a, _folded(b, a) if OTHER in a else b
    keys = sorted(set(a) | set(b))
    return keys, np.array([a.get(k, 0) for k in keys], float), np.array([b.get(k, 0) for k in keys],
                                                                        float)


def _folded(counts: dict[str, int], listed: dict[str, int]) -> dict[str, int]:
    """``counts`` with the categories ``listed`` does not name counted as ``OTHER``."""
    out: dict[str, int] = {}
    for k, v in counts.items():
        key = k if k in listed else OTHER
        out[key] = out.get(key, 0) + v
    return out


def js_distance(a: dict[str, int], b: dict[str, int]) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) of two count tables."""
    _, x, y = _aligned(a, b)
    if not x.sum() or not y.sum():
        return math.nan
    p, q = x / x.sum(), y / y.sum()
    m = (p + q) / 2

    def kl(u: np.ndarray) -> float:
        mask = u > 0
        return float((u[mask] * np.log2(u[mask] / m[mask])).sum())

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def psi_counts(ref: dict[str, int], cur: dict[str, int]) -> float:
    _, x, y = _aligned(ref, cur)
    return psi_props(x, y) if x.sum() and y.sum() else math.nan


def confidence_stats(hist: np.ndarray) -> dict[str, float | None]:
    n = int(hist.sum())
    if not n:
        return {"n": 0, "mean": None, "p10": None, "p50": None}
    centers = (np.arange(CONF_BINS) + 0.5) / CONF_BINS
    cum = np.cumsum(hist)

    def q(p: float) -> float:
        return round(float(centers[int(np.searchsorted(cum, p * n))]), 3)

    return {"n": n, "mean": round(float((hist * centers).sum() / n), 4), "p10": q(0.1),
            "p50": q(0.5)}


def confidence_sketch(hist: np.ndarray) -> Sketch:
    """The confidence histogram as a sketch (for KS), bin centres as values."""
    s = Sketch()
    centers = (np.arange(CONF_BINS) + 0.5) / CONF_BINS
    s.add(np.repeat(centers, hist.astype(np.int64)))
    return s


def latency_stats(s: Sketch) -> dict[str, float | None]:
    if not s.n:
        return {"n": 0, "p50": None, "p95": None, "p99": None}
    return {"n": s.n, "p50": round(s.quantile(0.5), 2), "p95": round(s.quantile(0.95), 2),
            "p99": round(s.quantile(0.99), 2)}


def feature_differences(ref: Summary, cur: Summary, top: int = 10) -> list[dict[str, Any]]:
    """Per feature present on both sides: PSI, KS (numeric) or JS (categorical), and the
    mean shift in reference standard deviations; most different first."""
    out: list[dict[str, Any]] = []
    for name in sorted(set(ref.features) & set(cur.features)):
        r, c = ref.features[name], cur.features[name]
        if not r.n or not c.n:
            continue
        ks, p = ks_sketch(r, c)
        std = r.std if r.std and r.std > 0 else 1.0
        out.append({"feature": name, "type": "numeric", "psi": _r(psi_sketch(r, c)),
                    "ks": _r(ks), "p_value": _r(p, 6), "mean_ref": _r(r.mean),
                    "mean_cur": _r(c.mean), "shift_sd": _r((c.mean - r.mean) / std)})
    for name in sorted(set(ref.categories) & set(cur.categories)):
        r_c, c_c = ref.categories[name], cur.categories[name]
        out.append({"feature": name, "type": "categorical", "psi": _r(psi_counts(r_c, c_c)),
                    "js": _r(js_distance(r_c, c_c))})
    out.sort(key=lambda f: -float(f["psi"] if f["psi"] is not None else -1))
    return out[:top] if top else out


def _r(x: float, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def shadow_agreement(a: Summary, b: Summary) -> dict[str, Any]:
    """Requests both versions scored (same request_id in both bottom-k samples)."""
    pa = {s[1]: label(s[4]) for s in a.sample if s[1] is not None}
    pb = {s[1]: label(s[4]) for s in b.sample if s[1] is not None}
    shared = pa.keys() & pb.keys()
    if not shared:
        return {"shared_requests": 0}
    agree = sum(1 for r in shared if pa[r] == pb[r])
    pairs = Counter(f"{pa[r]} -> {pb[r]}" for r in shared if pa[r] != pb[r])
    return {"shared_requests": len(shared), "agreement": round(agree / len(shared), 4),
            "disagreements": dict(pairs.most_common(5))}


def compare_summaries(model: str, baseline: str, candidate: str, base: Summary, cand: Summary,
                      *, cfg: CompareJobConfig) -> dict[str, Any]:
    """The verdict of ``candidate`` against ``baseline`` with the numbers behind it."""
    numbers: dict[str, Any] = {
        "events": {baseline: base.n, candidate: cand.n},
        "confidence": {baseline: confidence_stats(base.confidence),
                       candidate: confidence_stats(cand.confidence)},
        "latency_ms": {baseline: latency_stats(base.latency),
                       candidate: latency_stats(cand.latency)},
    }
    result: dict[str, Any] = {"model": model, "baseline": baseline, "candidate": candidate,
                              "numbers": numbers, "reasons": [], "notes": []}
    short = [v for v, s in ((baseline, base), (candidate, cand)) if s.n < cfg.min_events]
    if short:
        result["verdict"] = "unknown"
        result["reasons"] = [f"{v} has {numbers['events'][v]} event(s), fewer than "
                             f"{cfg.min_events}" for v in short]
        return result
    worse: list[str] = []
    better: list[str] = []
    notes: list[str] = []
    # latency
    lb, lc = numbers["latency_ms"][baseline], numbers["latency_ms"][candidate]
    if lb["p95"] and lc["p95"]:
        rel = lc["p95"] / lb["p95"] - 1
        numbers["latency_p95_change"] = round(rel, 4)
        if abs(rel) > cfg.latency_tolerance:
            (worse if rel > 0 else better).append(
                f"latency p95 {lb['p95']:g} -> {lc['p95']:g} ms ({rel:+.0%})")
    # confidence
    cb, cc = numbers["confidence"][baseline], numbers["confidence"][candidate]
    if cb["mean"] is not None and cc["mean"] is not None:
        d = cc["mean"] - cb["mean"]
        ks, p = ks_sketch(confidence_sketch(base.confidence), confidence_sketch(cand.confidence))
        numbers["confidence_change"] = {"mean": round(d, 4), "ks": _r(ks), "p_value": _r(p, 6)}
        if abs(d) > cfg.confidence_tolerance and p < 0.01:
            (worse if d < 0 else better).append(
                f"mean confidence {cb['mean']:.3f} -> {cc['mean']:.3f}")
    # error rate, when labels are present
    labels_decide = False
    if base.labelled >= 30 and cand.labelled >= 30:
        eb, ec = 1 - base.correct / base.labelled, 1 - cand.correct / cand.labelled
        pooled = (base.labelled + cand.labelled - base.correct - cand.correct) / (
            base.labelled + cand.labelled)
        se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / base.labelled + 1 / cand.labelled))
        p = float(2 * norm.sf(abs(ec - eb) / se))
        numbers["error_rate"] = {baseline: round(eb, 4), candidate: round(ec, 4),
                                 "labelled": {baseline: base.labelled, candidate: cand.labelled},
                                 "p_value": _r(p, 6)}
        if abs(ec - eb) > cfg.error_rate_tolerance and p < 0.01:
            labels_decide = True
            (worse if ec > eb else better).append(f"error rate {eb:.2%} -> {ec:.2%}")
    # predictions
    if base.predicts_classes() and cand.predicts_classes():
        js = js_distance(base.classes, cand.classes)
        total_b, total_c = sum(base.classes.values()), sum(cand.classes.values())
        numbers["prediction"] = {
            "js_distance": _r(js),
            baseline: {k: round(v / total_b, 4) for k, v in sorted(base.classes.items())},
            candidate: {k: round(v / total_c, 4) for k, v in sorted(cand.classes.items())},
        }
        if js > cfg.max_prediction_js:
            (notes if labels_decide else worse).append(
                f"predicted classes differ (Jensen-Shannon distance {js:.3f})")
    elif base.prediction.n and cand.prediction.n:
        ks, p = ks_sketch(base.prediction, cand.prediction)
        numbers["prediction"] = {"ks": _r(ks), "p_value": _r(p, 6),
                                 "mean": {baseline: _r(base.prediction.mean),
                                          candidate: _r(cand.prediction.mean)}}
        if ks > cfg.max_prediction_js and p < 0.01:
            (notes if labels_decide else worse).append(f"predictions differ (KS {ks:.3f})")
    # shadow traffic
    shadow = shadow_agreement(base, cand)
    numbers["shadow"] = shadow
    if shadow["shared_requests"] >= 30 and shadow["agreement"] < cfg.min_agreement:
        (notes if labels_decide else worse).append(
            f"the versions agree on {shadow['agreement']:.1%} of "
            f"{shadow['shared_requests']} shared requests")
    # inputs: the two versions should see the same traffic
    feats = feature_differences(base, cand, top=5)
    numbers["features"] = feats
    moved = [f["feature"] for f in feats if f["psi"] is not None and f["psi"] >= 0.1]
    if moved:
        notes.append(f"the versions' inputs differ ({', '.join(moved)}): traffic is not split "
                     "at random, so the comparison may be confounded")
    result["verdict"] = "worse" if worse else "better" if better else "no_difference"
    result["reasons"] = worse or better
    result["notes"] = notes
    return result


def headline(result: dict[str, Any]) -> str:
    m, b, c, v = result["model"], result["baseline"], result["candidate"], result["verdict"]
    why = "; ".join(result["reasons"]) or "no significant change in latency, confidence or " \
        "predictions"
    words = {"worse": "looks WORSE than", "better": "looks better than",
             "no_difference": "shows no difference from", "unknown": "cannot be compared with"}
    return f"{m} {c} {words[v]} {b}: {why}."


# -- jobs ------------------------------------------------------------------------------
def choose_pairs(store: Store, cfg: CompareJobConfig, since: float, until: float,
                 model: str | None = None) -> list[tuple[str, str, str]]:
    """(model, baseline, candidate): configured pairs, else the two newest versions of
    every model live in the window (newest = first seen latest)."""
    if cfg.pairs:
        return [(p["model"], p["champion"], p["challenger"]) for p in cfg.pairs
                if model is None or p["model"] == model]
    traffic = version_traffic(store.engine, since, until)
    everywhere = version_traffic(store.engine, float("-inf"), until)
    pairs = []
    for m, versions in sorted(traffic.items()):
        if (model is not None and m != model) or len(versions) < 2:
            continue
        order = sorted(versions, key=lambda v: (everywhere[m][v]["first"], v))
        pairs.append((m, order[-2], order[-1]))
    return pairs


def compare_stored(store: Store, cfg: CompareJobConfig, model: str, baseline: str,
                   candidate: str, *, since: float, until: float) -> dict[str, Any]:
    sides = {}
    for version in (baseline, candidate):
        buckets = load_buckets(store.engine, model, since, until, version=version,
                               sample_size=SHADOW_SAMPLE)
        sides[version] = merge_all((b.summary for b in buckets), sample_size=SHADOW_SAMPLE)
    result = compare_summaries(model, baseline, candidate, sides[baseline], sides[candidate],
                               cfg=cfg)
    result["since"], result["until"] = since, until
    result["headline"] = headline(result)
    return result


def save_comparison(store: Store, result: dict[str, Any], now: float) -> None:
    from datetime import UTC, datetime

    with store.engine.begin() as conn:
        conn.execute(reports.insert().values(
            kind="comparison", model=result["model"], created_at=datetime.fromtimestamp(now, UTC),
            payload=json.dumps(result, sort_keys=True, default=str), verdict=result["verdict"],
            period_start=result.get("since"), period_end=result.get("until")))


def list_comparisons(store: Store, model: str | None = None, limit: int = 20) -> list[dict]:
    q = (sa.select(reports.c.payload, reports.c.created_at).where(reports.c.kind == "comparison")
         .order_by(reports.c.id.desc()).limit(limit))
    if model is not None:
        q = q.where(reports.c.model == model)
    with store.engine.connect() as conn:
        return [json.loads(r.payload) | {"created_at": r.created_at.isoformat()}
                for r in conn.execute(q)]


def run_comparisons(ctx: JobContext, now: float, *, model: str | None = None,
                    pairs: list[tuple[str, str, str]] | None = None,
                    since: float | None = None, post: bool = True) -> list[dict[str, Any]]:
    cfg = ctx.config.jobs.compare
    until = now
    since = now - cfg.window_h * 3600 if since is None else since
    chosen = pairs is None  # by the job's rules, not by hand (compare --baseline/--candidate)
    if pairs is None:
        pairs = choose_pairs(ctx.store, cfg, since, until, model)
    results = []
    for m, b, c in pairs:
        result = compare_stored(ctx.store, cfg, m, b, c, since=since, until=until)
        save_comparison(ctx.store, result, now)
        if post:
            _post(ctx, result)
        results.append(result)
    if post and chosen:  # a pair compared by hand supersedes nothing
        _resolve_superseded(ctx, pairs, since, until, model)
    return results


def _resolve_superseded(ctx: JobContext, pairs: list[tuple[str, str, str]], since: float,
                        until: float, model: str | None) -> None:
    """Resolve the regressions of pairs no longer compared: a newer pair of the model
    was compared instead (a third version shipped), or the worse version serves no
    more traffic (rolled back). A worse version that now serves alone stays firing:
    nothing says it got better."""
    traffic = version_traffic(ctx.store.engine, since, until)
    for alert in ctx.firing_alerts("jobs.version_comparison"):
        m, subject = alert.model, alert.subject
        b, c = subject.get("baseline"), subject.get("candidate")
        if (model is not None and m != model) or (m, b, c) in pairs:
            continue
        newer = [(b2, c2) for m2, b2, c2 in pairs if m2 == m]
        if newer:
            why = f"{m} {newer[0][1]} is compared with {newer[0][0]} now"
        elif c not in traffic.get(m, {}):
            why = f"{m} {c} served no traffic in this period"
        else:
            continue
        ctx.emit(detector="jobs.version_comparison", kind="version_regression",
                 severity="info", model=m, model_version=alert.model_version,
                 subject=subject, summary=f"{m} {c} is no longer compared with {b}: {why}.",
                 evidence={"superseded_by": newer[0] if newer else None},
                 status="resolved", keep=True)


def _post(ctx: JobContext, result: dict[str, Any]) -> None:
    verdict = result["verdict"]
    if verdict == "unknown":
        return  # too little data: one line in the job's message, nothing to post
    subject = {"baseline": result["baseline"], "candidate": result["candidate"]}
    fp_firing = _firing(ctx, result["model"], subject)
    evidence = {k: result[k] for k in ("verdict", "reasons", "notes")}
    evidence["numbers"] = result["numbers"]
    evidence["window"] = {"since": result["since"], "until": result["until"]}
    if verdict == "worse":
        ctx.emit(detector="jobs.version_comparison", kind="version_regression",
                 severity="warning", model=result["model"], model_version=result["candidate"],
                 subject=subject, summary=result["headline"], evidence=evidence, keep=True)
    else:
        ctx.emit(detector="jobs.version_comparison", kind="version_regression",
                 severity="info", model=result["model"], model_version=result["candidate"],
                 subject=subject, summary=result["headline"], evidence=evidence,
                 status="resolved" if fp_firing else "firing", keep=fp_firing)


def _firing(ctx: JobContext, model: str, subject: dict[str, str]) -> bool:
    from alerts.model import fingerprint

    return ctx.firing_alert(fingerprint("jobs.version_comparison", model, subject)) is not None


def compare_job(ctx: JobContext, now: float) -> str:
    cfg = ctx.config.jobs.compare
    lines = []
    if cfg.released_versions:
        lines.append(versions_job(ctx, now))
    results = run_comparisons(ctx, now)
    if not results:
        lines.append(f"compare: no model had two versions live in the last {cfg.window_h:g}h")
    lines += [r["headline"] for r in results]
    return "\n".join(lines)


def versions_job(ctx: JobContext, now: float) -> str:
    """Alert (once per version) on a version serving traffic that is not released;
    resolve it once the version is released, or serves no more traffic."""
    released = ctx.config.jobs.compare.released_versions
    traffic = version_traffic(ctx.store.engine, now - 86_400, now + 86_400)
    from alerts.model import fingerprint

    for alert in ctx.firing_alerts("jobs.unannounced_version"):
        version = alert.subject.get("model_version", "")
        if alert.model in released and version not in released[alert.model] \
                and version in traffic.get(alert.model, {}):
            continue  # still unannounced and serving
        why = ("is now released" if version in released.get(alert.model, ())
               else "is no longer watched" if alert.model not in released
               else "served no traffic in the last day")
        ctx.emit(detector="jobs.unannounced_version", kind="version_regression",
                 severity="info", model=alert.model, model_version=version,
                 subject=alert.subject, summary=f"Version {version} of {alert.model} {why}.",
                 evidence={"released": released.get(alert.model, [])},
                 status="resolved", keep=True)
    new = []
    for model, versions in sorted(traffic.items()):
        if model not in released:
            continue
        for version, seen in sorted(versions.items()):
            if version in released[model]:
                continue
            subject = {"model_version": version}
            if ctx.firing_alert(fingerprint("jobs.unannounced_version", model, subject)):
                continue
            ctx.emit(detector="jobs.unannounced_version", kind="version_regression",
                     severity="warning", model=model, model_version=version, subject=subject,
                     summary=(f"Unannounced version {version} of {model} is serving traffic "
                              f"({seen['n']:,} events in the last day); released: "
                              f"{', '.join(released[model]) or 'none'}."),
                     evidence={"events": seen["n"], "released": released[model],
                               "first_bucket": seen["first"]}, keep=True)
            new.append(f"{model} {version}")
    if not new:
        return "versions: no unannounced model version"
    return f"versions: unannounced {', '.join(new)}"
