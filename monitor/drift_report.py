"""The weekly drift report: per model, a week of stored window summaries against the
model's reference, as one HTML page an ML engineer reads on Monday morning.

The page (``index.html``, with ``summary.json`` holding the same figures) says
what drifted, how much and since when: drift share, the top drifting features
with PSI, KS and mean shift, prediction and confidence drift, a trend chart of
drift per feature per day (inline SVG), the week's alerts, and whether the
newest version is better or worse than the one before. Next to it, Evidently's
data-drift report (``evidently.html`` and ``evidently.json``) on the sampled
events. A ``reports/index.html`` lists every report.

The reference is the model's stored reference (``inferwatch reference build``)
when there is one, else the model's earliest stored traffic
(``jobs.drift_report.reference_span_s`` of it); the page says which.
Evidently is imported here only, never on the daemon's hot path.
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
import sqlalchemy as sa

from detectors.reference import CONFIDENCE, PREDICTION, label
from monitor.compare import (
    compare_stored,
    confidence_sketch,
    confidence_stats,
    feature_differences,
    js_distance,
    ks_sketch,
    psi_counts,
    psi_sketch,
)
from monitor.config import Config
from monitor.store import Store, alerts, reports
from monitor.summaries import (
    CONF_BINS,
    OTHER,
    Bucket,
    Sketch,
    Summary,
    bucket_keys,
    first_bucket,
    load_buckets,
    merge_all,
    version_traffic,
)

if TYPE_CHECKING:
    from monitor.scheduler import JobContext

log = logging.getLogger(__name__)
COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def _iso(ts: float, tz: ZoneInfo | None = None) -> str:
    return datetime.fromtimestamp(ts, tz or UTC).strftime("%Y-%m-%d %H:%M %Z")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "model"


# -- the reference ----------------------------------------------------------------------
def stored_reference(store: Store, model: str, version: str = "") -> Any:
    """The model's newest stored reference (``monitor.reference``: built from a file, a
    pinned period, or automatically from a version's first events), or None."""
    try:
        from monitor.reference import load_reference
    except ImportError:
        return None
    try:
        return load_reference(store, model, version)
    except Exception as exc:  # a broken stored reference must not stop the report
        log.warning("stored reference of %s unreadable (%s); using early traffic", model, exc)
        return None


_SPREAD = 16  # points per reference bin: its count spread evenly across the bin


def summary_from_reference(ref: Any) -> Summary:
    """A stored reference (cell counts on fixed bins, plus a sample of rows) as a
    ``Summary``: each bin's count spread evenly over the bin, so PSI over the
    reference's own (equal-frequency) bins is exact and KS is close."""
    lay = ref.layout
    cells = np.asarray(ref.counts.cells)
    cells = cells[0] if cells.ndim == 2 else cells
    offs = lay.offsets
    s = Summary()
    s.n = int(ref.n)
    for j, name in enumerate(lay.features):
        c = cells[offs[j]:offs[j + 1]].astype(float)
        if j < len(lay.numeric):
            e = np.asarray(lay.edges[j], dtype=float)
            if name == CONFIDENCE:
                _spread_confidence(s, e, c)
                continue
            sk = s.prediction if name == PREDICTION else s.features.setdefault(name, Sketch())
            _spread_sketch(sk, e, c, lay.center[j], lay.scale[j])
        else:
            cats = dict(zip(lay.categories[j - len(lay.numeric)], c[:-3].tolist(), strict=True))
            if c[-3] + c[-2]:
                cats[OTHER] = c[-3] + c[-2]
            if name == PREDICTION:
                s.classes = cats
            else:
                s.categories[name] = cats
    for i, row in enumerate(ref.sample):
        feats = {k: v for k, v in row.items() if not str(k).startswith("@")}
        s.sample.append((i, None, 0.0, feats, row.get(PREDICTION), row.get(CONFIDENCE), None))
    return s


def _spread_sketch(sk: Sketch, edges: np.ndarray, c: np.ndarray, center: float,
                   scale: float) -> None:
    below, bins, above, missing = c[0], c[1:-2], c[-2], c[-1]
    values = [np.array([edges[0]]), np.array([edges[-1]])]
    weights = [np.array([below]), np.array([above])]
    for i, count in enumerate(bins):
        if count:
            values.append(np.linspace(edges[i], edges[i + 1], _SPREAD))
            weights.append(np.full(_SPREAD, count / _SPREAD))
    v, w = np.concatenate(values), np.concatenate(weights)
    keep = w > 0
    keys = bucket_keys(v[keep])
    for k, wt in zip(keys.tolist(), w[keep].tolist(), strict=True):
        sk.buckets[k] = sk.buckets.get(k, 0) + wt
    n = float(c[:-1].sum())
    sk.n = round(n)
    sk.missing = int(missing)
    sk.sum = center * n
    sk.sumsq = n * (scale * scale + center * center)
    sk.min, sk.max = float(edges[0]), float(edges[-1])


def _spread_confidence(s: Summary, edges: np.ndarray, c: np.ndarray) -> None:
    """The reference's confidence bins spread over the summary's finer histogram:
    each bin's count split evenly over the slots it covers, the remainder one each
    to its first slots, so every counted answer is kept (rounding a share per slot
    lost a bin of 3 answers over 50 slots). Confidence is validated into [0, 1]:
    the below-min and above-max cells stay empty."""
    for i, count in enumerate(c[1:-2]):
        lo, hi = int(edges[i] * CONF_BINS), max(int(edges[i + 1] * CONF_BINS), int(edges[i] *
                                                                                   CONF_BINS) + 1)
        hi = min(hi, CONF_BINS)
        lo = min(lo, hi - 1)
        share, extra = divmod(round(count), hi - lo)
        s.confidence[lo:hi] += share
        s.confidence[lo:lo + extra] += 1


def reference_summary(store: Store, config: Config, model: str, since: float,
                      ) -> tuple[Summary, dict[str, Any], float]:
    """(reference summary, how it was chosen, start of the period to report).

    The newest version's stored reference when there is one; else the model's
    earliest stored traffic, and the report period starts after it when they
    would overlap."""
    cfg = config.jobs.drift_report
    traffic = version_traffic(store.engine, since, float("inf")).get(model, {})
    newest = max(traffic, key=lambda v: (traffic[v]["first"], v), default="")
    ref = stored_reference(store, model, newest)
    if ref is not None and ref.n >= cfg.min_events:
        span = (f", {_iso(ref.start)} to {_iso(ref.end)}" if ref.start is not None
                and ref.end is not None else "")
        return summary_from_reference(ref), {
            "source": f"stored:{ref.source}", "model_version": ref.model_version,
            "events": ref.n, "description": (
                f"the stored reference of {model}{' ' + ref.model_version if ref.model_version else ''}"
                f" ({ref.source}{span}, {ref.n:,} events)")}, since
    first = first_bucket(store.engine, model)
    if first is None:
        return Summary(), {"source": "none"}, since
    end = first + cfg.reference_span_s
    buckets = load_buckets(store.engine, model, first, end, sample_size=cfg.max_rows)
    ref = merge_all((b.summary for b in buckets), sample_size=cfg.max_rows)
    info = {"source": "early_traffic", "since": first, "until": end, "events": ref.n,
            "description": (f"no stored reference: the model's earliest stored traffic, "
                            f"{_iso(first)} to {_iso(end)} ({ref.n:,} events)")}
    return ref, info, max(since, end)


# -- the report -----------------------------------------------------------------------------
def build_report(store: Store, config: Config, model: str, since: float, until: float, *,
                 now: float, out_dir: Path | None = None) -> dict[str, Any]:
    """Write the report files; returns its summary (``path`` set), or a summary with
    only a one-line ``message`` when there is too little to say."""
    cfg = config.jobs.drift_report
    tz = ZoneInfo(config.jobs.timezone)
    ref, ref_info, start = reference_summary(store, config, model, since)
    buckets = load_buckets(store.engine, model, start, until, sample_size=cfg.max_rows)
    cur = merge_all((b.summary for b in buckets), sample_size=cfg.max_rows)
    base = {"model": model, "since": start, "until": until, "events": cur.n,
            "reference": ref_info}
    if cur.n < cfg.min_events or ref.n < cfg.min_events:
        why = (f"{cur.n:,} event(s) from {_iso(start, tz)} to {_iso(until, tz)}"
               if cur.n < cfg.min_events else f"a reference of only {ref.n:,} event(s)")
        return base | {"message": f"drift report {model}: {why}; too little data for a report "
                                  f"(needs {cfg.min_events})"}
    feats = feature_differences(ref, cur, top=0)
    for f in feats:
        f["drifted"] = f["psi"] is not None and f["psi"] >= cfg.psi_threshold
    drifted = [f for f in feats if f["drifted"]]
    trend = _trend(ref, buckets, feats, start=start, until=until, tz=tz,
                   threshold=cfg.psi_threshold)
    for f in feats:
        f["drifting_since"] = trend["since"].get(f["feature"])
    traffic = version_traffic(store.engine, start, until).get(model, {})
    summary: dict[str, Any] = base | {
        "generated_at": now,
        "timezone": config.jobs.timezone,
        "versions": {v: s["n"] for v, s in traffic.items()},
        # the one that appeared last (not the busiest: a canary is the newest)
        "newest_version": max(traffic, key=lambda v: (traffic[v]["first"], v), default=""),
        "features_tested": len(feats),
        "drifted_features": [f["feature"] for f in drifted],
        "drift_share": round(len(drifted) / len(feats), 4) if feats else 0.0,
        "psi_threshold": cfg.psi_threshold,
        "top_features": feats[: cfg.top_features],
        "prediction": _prediction_drift(ref, cur),
        "confidence": _confidence_drift(ref, cur),
        "trend": {k: v for k, v in trend.items() if k != "since"},
        "alerts": _alerts_of(store, model, start, until),
        "comparison": _comparison(store, config, model, start, until),
    }
    out = Path(out_dir or config.jobs.reports_dir)
    folder = out / "drift" / slug(model) / (
        f"{datetime.fromtimestamp(start, UTC):%Y%m%dT%H%M}--"
        f"{datetime.fromtimestamp(until, UTC):%Y%m%dT%H%M}")
    folder.mkdir(parents=True, exist_ok=True)
    summary["evidently"] = _evidently(ref, cur, folder) if cfg.evidently else None
    summary["path"] = str(folder / "index.html")
    summary["headline"] = headline(summary)
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True,
                                                    default=str), encoding="utf-8")
    (folder / "index.html").write_text(render(summary, tz), encoding="utf-8")
    write_index(out)
    with store.engine.begin() as conn:
        conn.execute(reports.insert().values(
            kind="drift", model=model, created_at=datetime.fromtimestamp(now, UTC),
            path=summary["path"], payload=json.dumps(summary, sort_keys=True, default=str),
            verdict="drift" if drifted else "no_drift", period_start=start, period_end=until))
    return summary


def headline(s: dict[str, Any]) -> str:
    n, total = len(s["drifted_features"]), s["features_tested"]
    if not n:
        text = f"{s['model']}: no input feature drifted ({total} tested)"
    else:
        top = ", ".join(f"{f['feature']} (PSI {f['psi']:.2f})" for f in s["top_features"]
                        if f["drifted"])
        text = f"{s['model']}: {n} of {total} input features drifted: {top}"
    pred = s["prediction"]
    if pred.get("drifted"):
        text += "; predictions drifted"
    if s["confidence"].get("drifted"):
        text += "; confidence drifted"
    comp = s.get("comparison")
    if comp and comp.get("verdict") not in (None, "unknown"):
        text += f"; {comp['candidate']} vs {comp['baseline']}: {comp['verdict'].replace('_', ' ')}"
    return text


def _prediction_drift(ref: Summary, cur: Summary) -> dict[str, Any]:
    if ref.predicts_classes() and cur.predicts_classes():
        psi = psi_counts(ref.classes, cur.classes)
        tr, tc = sum(ref.classes.values()), sum(cur.classes.values())
        return {"type": "classes", "psi": _r(psi), "js": _r(js_distance(ref.classes, cur.classes)),
                "reference": {k: round(v / tr, 4) for k, v in sorted(ref.classes.items())},
                "current": {k: round(v / tc, 4) for k, v in sorted(cur.classes.items())},
                "drifted": bool(psi >= 0.1)}
    if ref.prediction.n and cur.prediction.n:
        psi = psi_sketch(ref.prediction, cur.prediction)
        ks, p = ks_sketch(ref.prediction, cur.prediction)
        return {"type": "numeric", "psi": _r(psi), "ks": _r(ks), "p_value": _r(p, 6),
                "drifted": bool(psi >= 0.1)}
    return {"type": "none"}


def _confidence_drift(ref: Summary, cur: Summary) -> dict[str, Any]:
    r, c = confidence_stats(ref.confidence), confidence_stats(cur.confidence)
    if not r["n"] or not c["n"]:
        return {"reference": r, "current": c}
    rs, cs = confidence_sketch(ref.confidence), confidence_sketch(cur.confidence)
    ks, p = ks_sketch(rs, cs)
    psi = psi_sketch(rs, cs)
    return {"reference": r, "current": c, "ks": _r(ks), "p_value": _r(p, 6), "psi": _r(psi),
            "drifted": bool(psi >= 0.1)}


def _r(x: float, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def _periods(start: float, until: float, tz: ZoneInfo) -> tuple[str, list[float]]:
    """Trend period starts: local days over two days or more, else hours, else minutes."""
    span = until - start
    if span >= 2 * 86400:
        day = datetime.fromtimestamp(start, tz).replace(hour=0, minute=0, second=0, microsecond=0)
        out = []
        while day.timestamp() < until:
            out.append(max(day.timestamp(), start))
            day = (day + timedelta(days=1, hours=2)).replace(hour=0)
        return "day", out
    step = 3600.0 if span >= 2 * 3600 else 60.0 * max(1, int(span / 60 / 12))
    first = math.floor(start / step) * step
    return ("hour" if step == 3600 else f"{step / 60:g} min"), [
        max(first + i * step, start) for i in range(math.ceil((until - first) / step))]


def _trend(ref: Summary, buckets: list[Bucket], feats: list[dict[str, Any]], *, start: float,
           until: float, tz: ZoneInfo, threshold: float) -> dict[str, Any]:
    unit, starts = _periods(start, until, tz)
    names = [f["feature"] for f in feats[:6] if f["type"] == "numeric"]
    per: list[Summary] = [Summary() for _ in starts]
    import bisect

    for b in buckets:
        i = bisect.bisect_right(starts, b.start) - 1
        if i >= 0:
            per[i].merge(b.summary, sample_size=0)
    series: dict[str, list[float | None]] = {n: [] for n in names}
    for s in per:
        for n in names:
            sk = s.features.get(n)
            series[n].append(_r(psi_sketch(ref.features[n], sk)) if sk and sk.n >= 30 else None)
    since: dict[str, str] = {}
    for n, values in series.items():
        first = None
        for i, v in enumerate(values):
            if v is not None and v >= threshold:
                first = i if first is None else first
            elif v is not None:
                first = None
        if first is not None:
            since[n] = _iso(starts[first], tz)
    return {"unit": unit, "periods": [_iso(t, tz) for t in starts], "psi": series,
            "since": since}


def _alerts_of(store: Store, model: str, start: float, until: float) -> list[dict[str, Any]]:
    q = (sa.select(alerts.c.record).where(alerts.c.model == model, alerts.c.last_seen >= start,
                                          alerts.c.first_seen < until)
         .order_by(alerts.c.first_seen).limit(50))
    with store.engine.connect() as conn:
        rows = [msgspec.json.decode(r.record) for r in conn.execute(q)]
    return [{k: r.get(k) for k in ("kind", "severity", "status", "summary", "first_seen",
                                   "last_seen", "count", "model_version")} for r in rows]


def _comparison(store: Store, config: Config, model: str, start: float,
                until: float) -> dict[str, Any] | None:
    """The newest version against the one before it, over the report's period."""
    from monitor.compare import choose_pairs

    cfg = config.jobs.compare
    pairs = choose_pairs(store, cfg.model_copy(update={"pairs": []}), start, until, model)
    if not pairs:
        return None
    m, b, c = pairs[0]
    live = version_traffic(store.engine, start, until).get(m, {})
    both = max((live[v]["first"] for v in (b, c) if v in live), default=start)
    result = compare_stored(store, cfg, m, b, c, since=both, until=until)  # both live
    return {k: result[k] for k in ("baseline", "candidate", "verdict", "reasons", "notes",
                                   "headline")}


# -- Evidently ---------------------------------------------------------------------------------
def _frame(s: Summary, numeric: list[str], categorical: list[str]) -> Any:
    import pandas as pd

    rows = []
    for _h, _rid, _ts, values, pred, conf, _lat in s.sample:
        feats = values or {}
        row = {n: feats.get(n) for n in numeric + categorical}
        row["prediction"] = None if pred is None else label(pred)  # class 1 read as 1.0 too
        row["confidence"] = conf
        rows.append(row)
    df = pd.DataFrame(rows, columns=[*numeric, *categorical, "prediction", "confidence"])
    for n in [*numeric, "confidence"]:
        df[n] = pd.to_numeric(df[n], errors="coerce")
    for n in [*categorical, "prediction"]:
        df[n] = df[n].astype("string")
    return df


def _evidently(ref: Summary, cur: Summary, folder: Path) -> dict[str, Any]:
    """Evidently's data-drift preset on the sampled events; its failure is reported,
    never fatal (the page stands on inferwatch's own figures)."""
    numeric = sorted(set(ref.features) & set(cur.features))
    categorical = sorted(set(ref.categories) & set(cur.categories))
    try:
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        ref_df, cur_df = _frame(ref, numeric, categorical), _frame(cur, numeric, categorical)
        # Evidently refuses a column empty on either side (a training file has no
        # confidence, a regression model no classes, a feature was not sampled)
        present = [c for c in ref_df.columns if ref_df[c].notna().any() and cur_df[c].notna().any()]
        ref_df, cur_df = ref_df[present], cur_df[present]
        definition = DataDefinition(
            numerical_columns=[c for c in [*numeric, "confidence"] if c in present],
            categorical_columns=[c for c in [*categorical, "prediction"] if c in present])
        snapshot = Report([DataDriftPreset()]).run(
            current_data=Dataset.from_pandas(cur_df, data_definition=definition),
            reference_data=Dataset.from_pandas(ref_df, data_definition=definition))
        snapshot.save_html(str(folder / "evidently.html"))
        raw = snapshot.json()
        (folder / "evidently.json").write_text(raw, encoding="utf-8")
        drifted = []
        share = None
        for m in json.loads(raw).get("metrics", []):
            cfg = m.get("config", {})
            if cfg.get("type", "").endswith("DriftedColumnsCount"):
                share = m["value"].get("share")
            elif cfg.get("type", "").endswith("ValueDrift"):
                thr = cfg.get("threshold")
                value = m.get("value")
                if isinstance(value, int | float) and thr is not None and (
                        ("p_value" in cfg.get("method", "").lower() and value < thr)
                        or ("p_value" not in cfg.get("method", "").lower() and value >= thr)):
                    drifted.append(cfg.get("column"))
        return {"html": "evidently.html", "json": "evidently.json",
                "rows": {"reference": len(ref_df), "current": len(cur_df)},
                "drift_share": share, "drifted_columns": drifted}
    except Exception as exc:  # Evidently is an extra view, never a reason to fail
        log.warning("Evidently report failed: %s", exc)
        return {"error": f"{type(exc).__name__}: {exc}"}


# -- HTML ---------------------------------------------------------------------------------------
_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:980px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border-bottom:1px solid #ddd;padding:3px 8px;
text-align:left}th{background:#f5f5f5}.drift{color:#b00;font-weight:600}.muted{color:#777}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}"""


def _e(x: object) -> str:
    return html.escape("" if x is None else str(x))


def svg_trend(trend: dict[str, Any], threshold: float, width: int = 720, height: int = 220) -> str:
    """A small line chart of PSI per period for the top features, with the threshold."""
    periods = trend["periods"]
    series = trend["psi"]
    values = [v for vs in series.values() for v in vs if v is not None]
    if not periods or not values:
        return "<p class='muted'>no trend: too few events per period</p>"
    top = max(*values, threshold * 2) * 1.1
    left, right, top_pad, bottom = 40, 160, 10, 30
    w, h = width - left - right, height - top_pad - bottom

    def x(i: int) -> float:
        return left + (w * i / max(1, len(periods) - 1))

    def y(v: float) -> float:
        return top_pad + h * (1 - v / top)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="PSI per feature per {_e(trend["unit"])}">',
             f'<line x1="{left}" y1="{y(0):.1f}" x2="{left + w}" y2="{y(0):.1f}" stroke="#999"/>',
             f'<line x1="{left}" y1="{y(threshold):.1f}" x2="{left + w}" y2="{y(threshold):.1f}" '
             f'stroke="#b00" stroke-dasharray="4 3"/>',
             f'<text x="{left - 4}" y="{y(threshold) + 4:.1f}" font-size="10" '
             f'text-anchor="end">{threshold:g}</text>',
             f'<text x="{left - 4}" y="{y(top) + 10:.1f}" font-size="10" '
             f'text-anchor="end">{top:.2f}</text>']
    for i in (0, len(periods) - 1):
        parts.append(f'<text x="{x(i):.1f}" y="{height - 8}" font-size="10" '
                     f'text-anchor="{"start" if i == 0 else "end"}">{_e(periods[i])}</text>')
    for k, (name, vs) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(vs) if v is not None)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>')
        parts.append(f'<text x="{left + w + 8}" y="{top_pad + 14 * (k + 1)}" font-size="11" '
                     f'fill="{colour}">{_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render(s: dict[str, Any], tz: ZoneInfo) -> str:
    rows = []
    for f in s["top_features"]:
        cls = " class='drift'" if f["drifted"] else ""
        stat = (f"KS {f.get('ks')} (p {f.get('p_value')})" if f["type"] == "numeric"
                else f"JS {f.get('js')}")
        shift = (f"{f.get('mean_ref')} → {f.get('mean_cur')} ({f.get('shift_sd')} SD)"
                 if f["type"] == "numeric" else "")
        rows.append(f"<tr{cls}><td>{_e(f['feature'])}</td><td>{_e(f['psi'])}</td>"
                    f"<td>{_e(stat)}</td><td>{_e(shift)}</td>"
                    f"<td>{_e(f.get('drifting_since') or '')}</td></tr>")
    pred, conf = s["prediction"], s["confidence"]
    pred_text = ("no predictions in the events" if pred["type"] == "none" else
                 f"PSI {pred.get('psi')}, " + (
                     f"JS {pred.get('js')}; reference {pred.get('reference')}, "
                     f"this period {pred.get('current')}" if pred["type"] == "classes"
                     else f"KS {pred.get('ks')}"))
    conf_text = (f"mean {conf['reference'].get('mean')} → {conf['current'].get('mean')}, "
                 f"p10 {conf['reference'].get('p10')} → {conf['current'].get('p10')}, "
                 f"PSI {conf.get('psi')}, KS {conf.get('ks')}")
    comp = s.get("comparison")
    comp_html = ("<p>One model version in this period: " + _e(", ".join(s["versions"])) + "</p>"
                 if not comp else f"<p><b>{_e(comp['verdict'].replace('_', ' '))}</b>: "
                 f"{_e(comp['headline'])}</p>"
                 + "".join(f"<p class='muted'>{_e(n)}</p>" for n in comp.get("notes", [])))
    alert_rows = "".join(
        f"<tr><td>{_e(a['first_seen'])}</td><td>{_e(a['kind'])}</td><td>{_e(a['severity'])}</td>"
        f"<td>{_e(a['status'])}</td><td>{_e(a['summary'])}</td><td>{_e(a['count'])}</td></tr>"
        for a in s["alerts"]) or "<tr><td colspan=6 class='muted'>no alerts</td></tr>"
    ev = s.get("evidently") or {}
    ev_html = (f"<p><a href='{_e(ev['html'])}'>Evidently data-drift report</a> "
               f"(<a href='{_e(ev['json'])}'>JSON</a>) on {ev['rows']['current']:,} sampled "
               f"events against {ev['rows']['reference']:,}; Evidently's drift share "
               f"{_e(ev.get('drift_share'))}.</p>" if "html" in ev else
               f"<p class='muted'>Evidently report not available: {_e(ev.get('error', 'off'))}"
               "</p>")
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Drift report: {_e(s['model'])}</title><style>{_CSS}</style></head><body>
<p><a href="../../../index.html">all reports</a></p>
<h1>Drift report: {_e(s['model'])}</h1>
<p>{_e(_iso(s['since'], tz))} to {_e(_iso(s['until'], tz))} · {s['events']:,} events ·
versions {_e(', '.join(f'{v} ({n:,})' for v, n in s['versions'].items()))}</p>
<p><b>{_e(s['headline'])}</b></p>
<p>Drift share: <b>{s['drift_share']:.0%}</b> of {s['features_tested']} features
(PSI ≥ {s['psi_threshold']:g}). Reference: {_e(s['reference'].get('description'))}.</p>
<h2>Top features</h2>
<table><tr><th>feature</th><th>PSI</th><th>test</th><th>mean (reference → now)</th>
<th>drifting since</th></tr>{''.join(rows)}</table>
<h2>Drift per {_e(s['trend']['unit'])} (PSI against the reference)</h2>
{svg_trend(s['trend'], s['psi_threshold'])}
<h2>Predictions and confidence</h2>
<p>Predictions: {_e(pred_text)}{' <b class="drift">drifted</b>' if pred.get('drifted') else ''}</p>
<p>Confidence: {_e(conf_text)}{' <b class="drift">drifted</b>' if conf.get('drifted') else ''}</p>
<h2>Newest version against the one before</h2>{comp_html}
<h2>Alerts in this period</h2>
<table><tr><th>first seen</th><th>kind</th><th>severity</th><th>status</th><th>summary</th>
<th>count</th></tr>{alert_rows}</table>
<h2>Evidently</h2>{ev_html}
<p class="muted">Generated {_e(_iso(s['generated_at'], tz))} by inferwatch.</p>
</body></html>
"""


def write_index(out: Path) -> Path:
    """``reports/index.html``: every report under ``out``, newest first."""
    entries = []
    for path in out.glob("drift/*/*/summary.json"):
        try:
            s = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        entries.append((s.get("until", 0), s, path.parent.relative_to(out)))
    entries.sort(key=lambda e: (-e[0], e[1].get("model", "")))
    rows = "".join(
        f"<tr><td>{_e(_iso(s['since']))} to {_e(_iso(s['until']))}</td><td>{_e(s['model'])}</td>"
        f"<td>{s.get('drift_share', 0):.0%}</td><td>{_e(s.get('headline'))}</td>"
        f"<td><a href='{_e(rel.as_posix())}/index.html'>report</a></td></tr>"
        for _, s, rel in entries)
    index = out / "index.html"
    index.write_text(f"""<!doctype html><html><head><meta charset="utf-8">
<title>inferwatch reports</title><style>{_CSS}</style></head><body><h1>inferwatch drift reports</h1>
<table><tr><th>period</th><th>model</th><th>drift share</th><th>summary</th><th></th></tr>
{rows or "<tr><td colspan=5>no reports yet</td></tr>"}</table></body></html>
""", encoding="utf-8")
    return index


# -- the job ------------------------------------------------------------------------------------
def report_url(config: Config, path: str) -> str:
    base = config.jobs.report_url
    if not base:
        return path
    try:
        rel = Path(path).resolve().relative_to(Path(config.jobs.reports_dir).resolve())
    except ValueError:  # written elsewhere (``--out``): not under the served directory
        return path
    return base.rstrip("/") + "/" + rel.as_posix()


def report_job(ctx: JobContext, now: float, *, model: str | None = None,
               since: float | None = None, until: float | None = None,
               out_dir: Path | None = None, post: bool = True) -> str:
    """One report per model with traffic in the period; one line per model."""
    cfg = ctx.config.jobs.drift_report
    until = now if until is None else until
    since = until - cfg.days * 86400 if since is None else since
    models = [model] if model else sorted(version_traffic(ctx.store.engine, since, until))
    if not models:
        return (f"drift report: no traffic between {_iso(since)} and {_iso(until)}; "
                "nothing to report")
    lines = []
    for m in models:
        s = build_report(ctx.store, ctx.config, m, since, until, now=now, out_dir=out_dir)
        if "path" not in s:
            lines.append(s["message"])
            continue
        url = report_url(ctx.config, s["path"])
        lines.append(f"drift report {m}: {s['headline']} → {url}")
        if post:
            ctx.emit(detector="jobs.drift_report", kind="drift",
                     severity="warning" if s["drifted_features"] else "info", model=m,
                     model_version=s["newest_version"],
                     subject={"report": f"{_iso(s['since'])}/{_iso(s['until'])}"},
                     summary=f"Drift report {_iso(s['since'])} to {_iso(s['until'])}: "
                             f"{s['headline']}. Report: {url}",
                     evidence={"report": url, "drift_share": s["drift_share"],
                               "drifted_features": s["drifted_features"][:10],
                               "reference": s["reference"].get("source"),
                               "events": s["events"]})
    return "\n".join(lines)


def demo_report(workdir: Path, model: str, since: float, until: float) -> str:
    """The drift report at the end of ``inferwatch demo``: the first ten minutes of
    traffic are the reference, the rest is reported; one line to print."""
    from monitor.config import build_config
    from monitor.scheduler import JobContext

    config = build_config({
        "store": {"url": f"sqlite:///{workdir / 'inferwatch.db'}"},
        "jobs": {"enabled": False, "reports_dir": str(workdir / "reports"),
                 "drift_report": {"reference_span_s": 600}},
    }, env={})
    store = Store(config.store.url.get_secret_value())
    try:
        store.migrate()
        ctx = JobContext(config, store, "demo")
        return "\n" + report_job(ctx, until, model=model, since=since, until=until, post=False)
    except Exception as exc:  # the demo's verdict stands on its alerts
        log.warning("demo drift report failed", exc_info=True)
        return f"\ndrift report failed: {type(exc).__name__}: {exc}"
    finally:
        store.close()
