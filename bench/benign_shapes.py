"""Benign devices and apps whose queries look like a search: how many raise a
per-client attack alert through the real pipeline, with the default configuration
and with the query-neighbours rule as it was before commit 1da8bd8.

    .venv/bin/python -m bench.benign_shapes [--scale 1.0] [--no-write]

A device whose readings drift slowly sends near copies of its earlier queries, as a
gradient estimate does: a sensor's sliding window (each query the previous window
shifted by one reading), a sensor that sends summary statistics of its last minutes,
a thermostat, machine telemetry, a health check that fills in the hour or a rolling
sequence number. A QA replay of such streams (throwaway generators, not committed)
found nearly every one of them raised a critical ``evasion.query_neighbours`` alert
within its first 6-200 queries, and commit 1da8bd8 made near copies and noise
searches count only in a burst (a distinct query within ``burst_s``, 3 s, of the one
before) or at the decision boundary (a near copy answered otherwise, or an answer
under 0.6 confidence) when answers are logged (``detectors.neighbours.boundary_only``).
Also here: a mobile app fleet (many installs, a few sessions a day, a profile with a
tenure in days that outweighs every other feature), under an offer model whose answers
follow the session and under one that answers every install alike, with screen
refreshes 4 s and 2 s apart; and, as a control, the sensors' windows re-sent by a
backfill 5 a second, which the burst rule must still see.

Every shape is generated here with a fixed seed, encoded as inference-log records with
the model's answers (``prediction`` and ``probabilities``), and run through
``Pipeline`` (``bench.attacks.run_pipeline``) under ``build_config({})`` and under
the same with ``detectors.neighbours.boundary_only: false``. Figures per shape: the
clients that raised any per-client alert (by the detector of their first one), and
the median query (of that client's own) on which the first came; and how many
clients ever answered unsure or changed their answer (where the rule now looks), and
how many alerted on the first such answer. Model-wide alerts
(drift, confidence) are not counted. The figures are alert counts, deterministic
whatever the machine's load.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from bench.attacks import run_pipeline
from bench.report import write_section
from monitor.config import Config, build_config
from monitor.pipeline import Record

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
MINUTE, HOUR, DAY = 60.0, 3_600.0, 86_400.0
SETTINGS: dict[str, dict[str, Any]] = {
    "now": {},
    "before 1da8bd8": {"detectors": {"neighbours": {"boundary_only": False}}},
}


@dataclass
class Client:
    name: str
    ts: np.ndarray  # (n,) event times, each client's at least 0.2 s apart
    rows: np.ndarray  # (n, features) the values sent
    probs: np.ndarray  # (n, classes) the model's answers


@dataclass
class Shape:
    label: str
    model: str
    features: list[str]
    classes: list[str]
    clients: list[Client] = field(default_factory=list)
    control: bool = False  # a search-like shape the rule should still flag


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# -- sensors ---------------------------------------------------------------------------
SENSOR_CLASSES = ["normal", "warn", "fault"]


def sensor_signal(rng: np.random.Generator, n: int) -> np.ndarray:
    """A slow temperature, one reading per 10 s: a level of 30-60 C, a random walk,
    a slow swing of +-3 C and reading noise."""
    i = np.arange(n)
    return (rng.uniform(30, 60) + np.cumsum(rng.normal(0, 0.05, n)) + 3 * np.sin(i / 200)
            + rng.normal(0, 0.2, n))


def sensor_answers(level: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A normal / warn / fault classifier of a level (normal below about 0.8, warn
    above; most devices sit at 0.2-0.7), with a little noise in its logits; the
    probabilities logged to 4 decimals."""
    z = np.stack([np.full(len(level), 3.0), 15 * (level - 0.6), 24 * (level - 0.85)], axis=1)
    return np.round(softmax(z + rng.normal(0, 0.3, z.shape)), 4)


def _windows(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` windows of 32 readings, each the one before shifted by one reading."""
    return np.round(sliding_window_view(sensor_signal(rng, n + 31), 32), 2)


def sliding_window_sensors(devices: int, hours: float) -> Shape:
    """Sensors sending their last 32 raw readings, one query per 10 s."""
    rng = np.random.default_rng(1)
    shape = Shape("sliding-window sensors (32 readings, 1 query / 10 s)", "sensor-raw32",
                  [f"t{j}" for j in range(32)], SENSOR_CLASSES)
    n = int(hours * HOUR / 10)
    for k in range(devices):
        start = T0 + rng.uniform(0, 1800)
        rows = _windows(rng, n)
        probs = sensor_answers((rows.mean(axis=1) - 20) / 60, rng)
        shape.clients.append(Client(f"dev-raw-{k}", start + 10 * np.arange(n), rows, probs))
    return shape


def summary_sensors(devices: int, hours: float) -> Shape:
    """Sensors sending summary statistics of their last 60 readings (mean, SD, min,
    max, slope, last) and two constants of the device (zone, calibration), one query
    per 10 s."""
    rng = np.random.default_rng(2)
    shape = Shape("summary-statistics sensors (8 features, 1 query / 10 s)", "sensor-stats",
                  ["mean", "std", "min", "max", "slope", "last", "zone", "calib"],
                  SENSOR_CLASSES)
    n = int(hours * HOUR / 10)
    x = np.arange(60) - 29.5
    for k in range(devices):
        start = T0 + rng.uniform(0, 1800)
        win = sliding_window_view(sensor_signal(rng, n + 59), 60)
        zone, calib = float(rng.integers(1, 5)), rng.uniform(0, 1)
        rows = np.column_stack([
            win.mean(axis=1), win.std(axis=1), win.min(axis=1), win.max(axis=1),
            (win @ x) / (x @ x), win[:, -1], np.full(n, zone), np.full(n, calib)])
        probs = sensor_answers((rows[:, 0] - 20) / 60, rng)
        shape.clients.append(Client(f"dev-stats-{k}", start + 10 * np.arange(n),
                                    np.round(rows, 3), probs))
    return shape


def thermostats(devices: int, hours: float) -> Shape:
    """Thermostats sending temperature, humidity, set point and outdoor temperature
    once a minute, standardised over the fleet; each reading a slow random walk, the
    set point fixed."""
    rng = np.random.default_rng(3)
    shape = Shape("thermostats (4 readings, 1 query / min)", "thermostat",
                  ["temp", "hum", "setpoint", "outdoor"], SENSOR_CLASSES)
    n = int(hours * HOUR / MINUTE)
    centre, scale = np.array([21, 45, 20.5, 5]), np.array([2, 10, 1.2, 6])
    for k in range(devices):
        start = T0 + rng.uniform(0, 600)
        first = np.array([rng.uniform(18, 24), rng.uniform(30, 60),
                          rng.choice([19, 20, 21, 22]), rng.uniform(-5, 15)])
        readings = first + np.cumsum(rng.normal(0, [0.05, 0.2, 0, 0.02], (n, 4)), axis=0)
        probs = sensor_answers((readings[:, 0] - 10) / 20, rng)
        shape.clients.append(Client(f"dev-thermo-{k}", start + MINUTE * np.arange(n),
                                    np.round((readings - centre) / scale, 3), probs))
    return shape


def machine_telemetry(devices: int, hours: float) -> Shape:
    """Machines sending 12 standardised readings (speed, temperatures, pressures...)
    every 30 s, each a slowly mean-reverting walk (AR(1), 0.98)."""
    rng = np.random.default_rng(4)
    shape = Shape("machine telemetry (12 readings, 1 query / 30 s)", "machine-telemetry",
                  [f"m{j}" for j in range(12)], SENSOR_CLASSES)
    n = int(hours * HOUR / 30)
    for k in range(devices):
        start = T0 + rng.uniform(0, 600)
        m = rng.normal(0, 1, 12)
        noise = rng.normal(0, 0.05, (n, 12))
        rows = np.empty((n, 12))
        for i in range(n):
            m = 0.98 * m + noise[i]
            rows[i] = m
        probs = sensor_answers(0.3 + 0.05 * rows[:, 0], rng)
        shape.clients.append(Client(f"dev-mach-{k}", start + 30 * np.arange(n),
                                    np.round(rows, 3), probs))
    return shape


def backfill(devices: int, hours: float) -> Shape:
    """The control: the sliding-window sensors' windows of a past period re-sent by a
    backfill job, 5 a second: near copies sent as fast as a search loop sends them."""
    rng = np.random.default_rng(6)
    shape = Shape("control: backfill of sensor windows, 5 a second", "sensor-raw32",
                  [f"t{j}" for j in range(32)], SENSOR_CLASSES, control=True)
    n = int(hours * HOUR / 10)
    for k in range(devices):
        start = T0 + k * 120 + rng.uniform(0, 60)
        rows = _windows(rng, n)
        probs = sensor_answers((rows.mean(axis=1) - 20) / 60, rng)
        shape.clients.append(Client(f"backfill-{k}", start + 0.2 * np.arange(n), rows, probs))
    return shape


# -- health checks ---------------------------------------------------------------------
FRAUD_FEATURES = ["amount", "age", "account_age_days", "n_tx_24h", "avg_amount_30d",
                  "distance_km", "hour", "is_foreign",
                  "country_US", "country_DE", "country_FR", "country_GB", "country_other",
                  "channel_web", "channel_app", "channel_pos",
                  "mcc_grocery", "mcc_fuel", "mcc_travel", "mcc_electronics",
                  "mcc_restaurants", "mcc_online"]


def fraud_payload(rng: np.random.Generator) -> np.ndarray:
    """One plausible US card transaction for a fraud model (22 features, one-hot
    country, channel and merchant category)."""
    row = dict.fromkeys(FRAUD_FEATURES, 0.0)
    row.update(amount=round(rng.lognormal(3.5, 1.1), 2), age=float(rng.integers(18, 85)),
               account_age_days=float(rng.integers(1, 3000)), n_tx_24h=float(rng.poisson(3)),
               avg_amount_30d=round(rng.lognormal(3.5, 0.8), 2),
               distance_km=round(rng.exponential(20), 1), hour=float(rng.integers(0, 24)),
               is_foreign=float(rng.uniform() < 0.08), country_US=1.0)
    row[f"channel_{rng.choice(['web', 'app', 'pos'])}"] = 1.0
    row[f"mcc_{rng.choice(['grocery', 'fuel', 'travel', 'electronics', 'restaurants', 'online'])}"] = 1.0
    return np.array([row[f] for f in FRAUD_FEATURES])


def fraud_answer(row: np.ndarray) -> np.ndarray:
    """The fraud model's (legit, fraud) probabilities: a logistic score of the amount
    against the account's average, distance, foreign, account age, activity and
    merchant category (the hour plays no part)."""
    f = dict(zip(FRAUD_FEATURES, row.tolist(), strict=True))
    z = (-3.0 + 0.9 * (np.log1p(f["amount"]) - np.log1p(f["avg_amount_30d"]))
         + 0.02 * f["distance_km"] + 1.2 * f["is_foreign"] - 0.0006 * f["account_age_days"]
         + 0.15 * f["n_tx_24h"] + 0.6 * f["mcc_online"] + 0.5 * f["mcc_electronics"]
         + 0.1)  # the score's noise term, one fixed draw: the same input, the same answer
    p = 1 / (1 + np.exp(-z))
    return np.array([1 - p, p])


def hour_health_checks(devices: int, hours: float) -> Shape:
    """Health checks of a fraud model: one fixed transaction every 20-45 s (each
    check its own period, +-0.5 s), its ``hour`` field filled in from the clock (UTC), so
    the query changes once an hour and is resent unchanged in between."""
    rng = np.random.default_rng(7)
    shape = Shape("health checks, hour from the clock (1 query / 20-45 s)", "fraud-canary",
                  FRAUD_FEATURES, ["legit", "fraud"])
    hour = FRAUD_FEATURES.index("hour")
    for k in range(devices):
        payload = fraud_payload(rng)
        period = rng.uniform(20, 45)
        steps = period + rng.normal(0, 0.5, int(hours * HOUR / period))
        ts = T0 + rng.uniform(0, 60) + np.concatenate([[0.0], np.cumsum(steps[:-1])])
        rows = np.repeat(payload[None, :], len(ts), axis=0)
        rows[:, hour] = ((ts - T0) % DAY) // HOUR
        probs = np.round(np.repeat(fraud_answer(payload)[None, :], len(ts), axis=0), 4)
        shape.clients.append(Client(f"canary-hour-{k}", ts, rows, probs))
    return shape


def sequence_health_checks(devices: int, hours: float) -> Shape:
    """Synthetic-monitoring probes of a 4-class model of 20 standardised features:
    a fixed input whose first feature is a rolling sequence number (0.00, 0.01, ...
    0.99, 0.00), one every 10, 15, 30 or 60 s."""
    rng = np.random.default_rng(8)
    weights = rng.normal(0, 1, (4, 20))
    shape = Shape("health checks, rolling sequence number (1 query / 10-60 s)", "tab20",
                  [f"f{j:02d}" for j in range(20)], ["a", "b", "c", "d"])
    for k in range(devices):
        period = float(rng.choice([10, 15, 30, 60]))
        n = int(hours * HOUR / period)
        rows = np.repeat(rng.normal(0, 1, 20)[None, :], n, axis=0)
        rows[:, 0] = np.arange(n) % 100 / 100
        rows = np.round(rows, 4)
        ts = T0 + rng.uniform(0, 30) + period * np.arange(n)
        shape.clients.append(Client(f"canary-seq-{k}", ts, rows,
                                    np.round(softmax(rows @ weights.T), 4)))
    return shape


# -- a mobile app ----------------------------------------------------------------------
MOBILE_FEATURES = ["tenure_days", "age", "plan_free", "plan_basic", "plan_pro", "plan_family",
                   "device_ios", "device_android", "device_web",
                   "screen_min", "taps", "battery", "local_hour"]


# fleet-wide centre and scale of each feature, as the offer model standardises them
MOBILE_CENTRE = np.array([1000, 48, 0, 0, 0, 0, 0, 0, 0, 12, 40, 53, 15])
MOBILE_SCALE = np.array([577, 18.5, 1, 1, 1, 1, 1, 1, 1, 12, 6.3, 27, 4.6])
OFFERS = ["none", "discount", "upgrade", "bundle", "trial"]


def offer_answers(x: np.ndarray, model: str) -> np.ndarray:
    """The next-best-offer model's answers to the rows ``x``: ``"session"``, a softmax
    over the standardised features (the offer follows the profile and the session;
    median confidence about 0.77); ``"one offer"``, as in the QA replay, a softmax over
    ``log1p`` of the raw values, which tenure dominates: every install gets the
    same offer, at 0.95 or more."""
    if model == "session":
        weights = np.random.default_rng(10).normal(0, 1.5, (len(OFFERS), x.shape[1]))
        return softmax(((x - MOBILE_CENTRE) / MOBILE_SCALE) @ weights.T)
    weights = np.random.default_rng(10).normal(0, 0.3, (len(OFFERS), x.shape[1]))
    return softmax(2 * np.log1p(x) @ weights.T)


def mobile_fleet(installs: int, days: int, refresh_s: float, model: str) -> Shape:
    """A next-best-offer model called by every install of a mobile app, 1-5 sessions
    a day between 07:00 and 23:00. An install's profile is constant but for its
    tenure (days since sign-up, 0-2000: it outweighs every other feature in a
    query's norm); the session's features vary (screen minutes, taps, battery, local
    hour); one session in five refreshes its screen and sends 1-2 more requests
    ``refresh_s`` apart, its counters moved on a little. The same installs whatever
    ``refresh_s`` and ``model`` (``offer_answers``)."""
    rng = np.random.default_rng(9)
    what = {"session": "offers follow the session",
            "one offer": "one confident offer for every install"}[model]
    shape = Shape(f"mobile app fleet, {what} (refresh {refresh_s:g} s later)", "offer-model",
                  MOBILE_FEATURES, OFFERS)
    for k in range(installs):
        profile = np.zeros(9)
        profile[0], profile[1] = rng.integers(0, 2000), rng.integers(16, 80)
        profile[2 + rng.choice(4, p=[0.5, 0.25, 0.15, 0.1])] = 1
        profile[6 + rng.choice(3, p=[0.45, 0.45, 0.1])] = 1
        ts: list[float] = []
        rows: list[np.ndarray] = []
        for day in range(days):
            if day:
                profile[0] += 1  # tenure_days
            for t in np.sort(rng.uniform(7 * HOUR, 23 * HOUR, int(rng.integers(1, 6)))):
                repeats = 1 if rng.uniform() < 0.8 else int(rng.integers(2, 4))
                screen, taps = round(rng.exponential(12), 1), rng.poisson(40)
                battery = rng.integers(5, 101)
                for r in range(repeats):
                    session = [round(screen + 0.2 * r, 1), taps + 3 * r, battery, t // HOUR]
                    ts.append(T0 + day * DAY + t + refresh_s * r)
                    rows.append(np.concatenate([profile, session]))
        x = np.array(rows)
        shape.clients.append(Client(f"app-{k}", np.round(np.array(ts), 3), x,
                                    np.round(offer_answers(x, model), 4)))
    return shape


# -- the run ---------------------------------------------------------------------------
def records(shape: Shape, size: int = 2000) -> Iterator[list[Record]]:
    """The shape's events as inference-log records, in event-time order, in batches."""
    ts = np.concatenate([c.ts for c in shape.clients])
    who = np.concatenate([np.full(len(c.ts), i) for i, c in enumerate(shape.clients)])
    at = np.concatenate([np.arange(len(c.ts)) for c in shape.clients])
    order = np.argsort(ts, kind="stable")
    enc = msgspec.json.encode
    for start in range(0, len(order), size):
        batch = []
        for offset, j in enumerate(order[start:start + size], start):
            c, i = shape.clients[who[j]], at[j]
            p = c.probs[i]
            batch.append(Record(offset, enc({  # offsets in order: the pipeline skips a lower one
                "ts": round(float(ts[j]), 3), "model": shape.model, "model_version": "1",
                "client_id": c.name, "request_id": f"r{j}",
                "features": dict(zip(shape.features, c.rows[i].tolist(), strict=True)),
                "prediction": shape.classes[int(p.argmax())],
                "probabilities": dict(zip(shape.classes, p.tolist(), strict=True)),
            })))
        yield batch


@dataclass
class Outcome:
    alerted: int
    detectors: Counter[str]
    queries: list[int]  # per alerted client: its query on which the first alert came
    seconds: list[float]  # the same, in seconds since its first query
    on_first_unsure: int  # alerted on the client's first unsure or changed answer
    examples: dict[str, dict] = field(default_factory=dict)  # one first alert per detector


def unsure_or_changed(c: Client) -> np.ndarray:
    """Per query of ``c``: answered under 0.6 confidence (``low_confidence``), or with
    another class than the query before (the boundary as the rule sees it, roughly:
    the rule compares with the query's near copies, not only the one before)."""
    pred = c.probs.argmax(axis=1)
    return (c.probs.max(axis=1) < 0.6) | np.concatenate([[False], pred[1:] != pred[:-1]])


def score(shape: Shape, alerts: list[dict]) -> Outcome:
    first: dict[str, dict] = {}
    for a in alerts:
        if a["status"] == "firing" and "client_id" in a["subject"]:
            first.setdefault(a["subject"]["client_id"], a)
    clients = {c.name: c for c in shape.clients}
    out = Outcome(len(first), Counter(), [], [], 0)
    unsure = {c.name: unsure_or_changed(c) for c in shape.clients}
    for name, a in first.items():
        c = clients[name]
        t = datetime.fromisoformat(a["first_seen"]).timestamp()
        # first_seen has millisecond precision; a client's queries are >= 0.2 s apart
        q = int(np.searchsorted(c.ts, t + 0.01, side="right"))
        out.queries.append(q)
        out.on_first_unsure += bool(unsure[name].any() and unsure[name].argmax() == q - 1)
        out.seconds.append(t - float(c.ts[0]))
        out.detectors[a["detector"]] += 1
        out.examples.setdefault(a["detector"], a)
    return out


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 2 * HOUR else f"{seconds / HOUR:.1f} h"


def cells(shape: Shape, out: Outcome) -> list[str]:
    by = ", ".join(f"{d.split('.', 1)[1]} {n}" for d, n in out.detectors.most_common())
    alerted = f"{out.alerted:,} of {len(shape.clients):,}" + (f" ({by})" if by else "")
    first = (f"query {np.median(out.queries):.0f} ({duration(float(np.median(out.seconds)))})"
             if out.queries else "-")
    return [alerted, first]


def evidence_line(a: dict) -> str:
    e = a["evidence"]
    keys = ["queries", "first_hit_query", "exact_repeats", "max_near_copies",
            "longest_sparse_run", "longest_star_run", "longest_bisection_run", "share",
            "low_confidence_queries", "window_queries"]
    fields = ", ".join(f"{k} {e[k]}" for k in keys if k in e)
    return f"    {a['subject']['client_id']}: {fields}\n      {a['summary']}"


def shapes(scale: float) -> list[Callable[[], Shape]]:
    def n(count: int) -> int:
        return max(1, round(count * scale))

    return [
        lambda: sliding_window_sensors(n(150), 4),
        lambda: summary_sensors(n(150), 4),
        lambda: thermostats(n(100), 8),
        lambda: machine_telemetry(n(100), 8),
        lambda: hour_health_checks(n(20), 24),
        lambda: sequence_health_checks(n(20), 6),
        lambda: mobile_fleet(n(10_000), 2, refresh_s=4, model="session"),
        lambda: mobile_fleet(n(10_000), 2, refresh_s=4, model="one offer"),
        lambda: mobile_fleet(n(10_000), 2, refresh_s=2, model="one offer"),
        lambda: backfill(n(10), 24),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="devices / installs per shape (1.0: the sizes in the table)")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args()

    configs: dict[str, Config] = {k: build_config(v, env={}) for k, v in SETTINGS.items()}
    started = time.monotonic()
    rows: list[list[str]] = []
    controls: list[list[str]] = []
    total_events = 0
    for make in shapes(args.scale):
        shape = make()
        batches = list(records(shape))
        events = sum(len(b) for b in batches)
        total_events += events
        per_client = int(np.median([len(c.ts) for c in shape.clients]))
        unsure = sum(bool(unsure_or_changed(c).any()) for c in shape.clients)
        confidence = float(np.median(np.concatenate([c.probs.max(axis=1) for c in shape.clients])))
        row = [shape.label, f"{len(shape.clients):,}", f"{per_client:,}", f"{unsure:,}"]
        for setting, config in configs.items():
            alerts, cpu, _ = run_pipeline(config, batches)
            out = score(shape, alerts)
            alerted, first = cells(shape, out)
            row += ([alerted, f"{out.on_first_unsure:,}", first] if setting == "now"
                    else [alerted, first])
            print(f"{shape.label} [{setting}]: {events:,} events, {cpu:.0f} s CPU, median "
                  f"confidence {confidence:.2f}; "
                  f"alerted {' / '.join(cells(shape, out))}", flush=True)
            if setting == "now" and out.alerted:
                print(f"    {out.on_first_unsure} of {out.alerted} alerted on their first "
                      "answer under 0.6 or changed", flush=True)
                for a in out.examples.values():
                    print(evidence_line(a), flush=True)
        (controls if shape.control else rows).append(row)
    elapsed = time.monotonic() - started

    header = ["shape", "clients", "queries each", "ever unsure or changed", "alerted now",
              "of which on the first unsure or changed answer", "first alert",
              "alerted before 1da8bd8", "first alert"]
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                      + ["| " + " | ".join(r) + " |" for r in rows + controls])
    body = f"""
Benign devices and apps whose queries look like the steps of a search, each generated
with a fixed seed and run through `Pipeline` with the default configuration ("now")
and with `detectors.neighbours.boundary_only: false` ("before 1da8bd8": near copies
and noise searches counted wherever they came; the float16 clip of that commit stays).
Events carry the model's answers (`prediction`, `probabilities`). The shapes: sensors
sending a sliding window of their last 32 raw readings (each query the one before
shifted by one reading) or 8 summary statistics of their last 60 readings; thermostats
and machine telemetry (slow random walks, standardised); health checks resending one
fixed input with its `hour` field filled in from the clock, or a rolling sequence
number in its first feature; a mobile app fleet (one client per install, 1-5
sessions a day, a profile whose tenure in days outweighs the other features, one
session in five refreshing 4 or 2 s later) under two offer models: one whose offer
follows the profile and the session (median confidence 0.77), and one that gives
every install the same offer at 0.95 or more (the QA replay's model was close to it).
The last row is a control, not a false-alarm rate: the sensors' windows of a day
re-sent by a backfill 5 a second, near copies sent as fast as a search loop sends
them, which the burst rule (`burst_s`, 3 s) still flags.

Columns: *queries each* is the median per client; *ever unsure or changed* counts the
clients with at least one answer under 0.6 confidence or of another class than the
query before (roughly the boundary as the rule sees it); *alerted* counts the clients
that raised any per-client alert (model-wide drift and confidence alerts are not
counted), by the detector of their first alert, and *of which on the first unsure or
changed answer* those whose first alert came on exactly that query; *first alert* is
the median, over the alerted clients, of the client's own query on which its first
alert came (and the time since its first query). {total_events:,} events per setting,
{elapsed / 60:.1f} minutes for the whole run.

{table}

Reading: the slowly drifting devices that still alert are those whose model answers
unsure even once. A sensor is already a cluster of near copies, so one answer under
0.6 makes a hit: each of the 9 sliding-window and 9 summary sensors still alerted
fired on its first answer under 0.6 (several gave no other in 1,440 queries), and no
sensor that never answered so did. A health check whose fixed input scores near 0.5
(0.51-0.52, the same answer every time) alerts once its hour field has taken six
values. For the mobile fleet the rule depends on the model and the client's pace:
with a confident model and refreshes 4 s apart no install alerts; with refreshes 2 s
apart the burst rule counts them and 19 installs alert (21 before); with offers that
follow the session, near copies answered otherwise count, and 11 alert (the tenure in
days makes an install's queries near copies of each other: standardise it, or send
it in years).
"""
    print(body)
    if not args.no_write:
        write_section("benign_shapes", "Benign shapes that look like a search "
                      "(bench/benign_shapes.py)", ".venv/bin/python -m bench.benign_shapes", body)


if __name__ == "__main__":
    main()
