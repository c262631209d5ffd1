"""Confidence anomalies: a model answering with less (or more) confidence, margin
or certainty than it used to, and, once labels arrive, less accurately.

Per model version, events are summed per ``bucket_s`` bucket of event time
(integers: values quantised to 2^-20), closed by the watermark. The first
``reference_events`` events (whole buckets) give the reference mean and standard
deviation of the confidence, the margin (top-1 minus top-2 probability) and the
normalised entropy of ``probabilities``. Each later bucket's mean, standardised
by the reference (in reference SDs, times 10), feeds one ADWIN per signal (Bifet and
Gavaldà 2007, river's implementation, checked every bucket); buckets with fewer than
``min_bucket_events`` answers are joined with the next ones until they hold that
many (``_gather_bucket``). The incident holds
while some signal's ADWIN estimate (the mean of its adaptive window) is at least
``min_effect`` reference SDs (an SD counts as at least ``_SD_FLOOR``, 0.02) and
``_MIN_SHIFT`` (0.01) away from the reference; ADWIN forgets the old
regime as soon as it detects the change, so the estimate follows a shift fast and
returns once it is over. With labels (the ``label`` field, compared with
``prediction`` as a class, ``reference.label``: 1, 1.0 and "1" are one class), the
first ``reference_labels`` labelled events give the reference accuracy and
calibration gap (mean confidence minus accuracy); every window of ``min_labels``
labelled events is tested with a two-proportion z-test and fires on a drop of at
least ``min_accuracy_drop`` with ``z <= -z_threshold``, and on a calibration gap
moved by at least ``min_calibration_shift`` with ``|z| >= z_threshold``.
The low-confidence rate is tested by the drift detector on the confidence
histogram (``@confidence``), with the features. The evidence also carries an
accuracy estimated from confidence alone (CBPE-style, see ``_estimated_accuracy``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from detectors.adwin import ADWIN
from detectors.base import Detector
from detectors.event import Event
from detectors.queries import row_sums
from detectors.reference import label, uniform_columns
from detectors.windows import TumblingWindows

_Q = 1 << 20
# ADWIN's bound has a range term that assumes values in [0, 1]: bucket means in
# reference SDs are fed at 10x so the variance term, which scales with them, decides.
_GAIN = 10.0
SIGNALS = ("confidence", "margin", "entropy")
# A signal's reference SD counts as at least this, 2% of its [0, 1] range: a model
# answering one-hot has none, and a floor of 1e-4 read a 0.001 change as 8 SDs.
_SD_FLOOR = 0.02
# A shift of a signal's mean smaller than this never counts, whatever ``min_effect``
# (in SDs) says: an absolute effect no one would act on.
_MIN_SHIFT = 0.01
# Buckets with fewer than ``min_bucket_events`` answers are joined with the next
# ones, over at most this many bucket widths (600 s of 10-s buckets, drift's
# ``max_window_s``): a group that cannot fill in that span is dropped.
_MAX_GATHER_BUCKETS = 60
_SUM_ROWS = 1 << 22  # q^2 < 2^40: 2^22 of them sum inside int64
_FOLD_ROWS = 2048


class _Sums:
    """Integer sums over answers. Answers wait in ``pending`` until ``fold`` adds them
    in one vectorised pass: at ``_FOLD_ROWS``, when the bucket closes, and before
    pickling (checkpoints hold sums only)."""

    __slots__ = ("correct", "labelled", "lconf", "lconf2", "lconf_ok", "n", "pending", "s1", "s2")

    def __init__(self) -> None:
        self.n = 0
        self.s1 = [0, 0, 0]  # per signal: sum of q
        self.s2 = [0, 0, 0]  # per signal: sum of q^2
        self.labelled = 0
        self.correct = 0
        self.lconf = 0  # sum of q(confidence) over labelled events
        self.lconf2 = 0  # sum of q(confidence)^2 over labelled events
        self.lconf_ok = 0  # sum of q(confidence) over correctly answered events
        self.pending: list[Event] = []  # answered events not summed yet

    def add(self, other: _Sums) -> None:
        other.fold()
        self.n += other.n
        for i in range(3):
            self.s1[i] += other.s1[i]
            self.s2[i] += other.s2[i]
        self.labelled += other.labelled
        self.correct += other.correct
        self.lconf += other.lconf
        self.lconf2 += other.lconf2
        self.lconf_ok += other.lconf_ok

    def fold(self) -> None:
        """Quantise the pending answers' signals to multiples of 2^-20 and sum them."""
        if not self.pending:
            return
        events, self.pending = self.pending, []
        q = np.rint(np.clip(signal_table(events), 0.0, 1.0) * _Q).astype(np.int64)
        q2 = q * q
        self.n += len(events)
        for i in range(3):
            self.s1[i] += _isum(q[:, i])
            self.s2[i] += _isum(q2[:, i])
        rows = [r for r, e in enumerate(events) if e.label is not None and e.prediction is not None]
        if rows:
            # as classes are counted everywhere (``reference.label``): a decoder reads
            # class 1 as 1.0, a label joiner may send "1"; str() would tell them apart
            ok = np.array([label(events[r].label) == label(events[r].prediction)
                           for r in rows])
            self.labelled += len(rows)
            self.correct += int(ok.sum())
            self.lconf += _isum(q[rows, 0])
            self.lconf2 += _isum(q2[rows, 0])
            self.lconf_ok += _isum(q[rows, 0][ok])

    def __getstate__(self) -> dict[str, Any]:
        self.fold()
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)


def _gap(s: _Sums) -> tuple[float, float]:
    """Mean and variance of (confidence - correct) over labelled events."""
    n = s.labelled
    mean = (s.lconf / _Q - s.correct) / n
    sq = (s.lconf2 / (_Q * _Q) - 2 * s.lconf_ok / _Q + s.correct) / n
    return mean, max(sq - mean * mean, 0.0)


def answered(event: Event) -> bool:
    """Whether the event carries an answer: probabilities (two or more) or a confidence."""
    probs = event.probabilities
    return event.confidence is not None or (probs is not None and len(probs) >= 2)


def signal_table(events: list[Event]) -> np.ndarray:
    """(confidence, margin, normalised entropy) of each ``answered`` event, one row
    each. Vectorised, with the same bits for an answer whatever batch it is in:
    elementwise numpy, and sums over a row taken term by term in order
    (``queries.row_sums``), never numpy's pairwise sums, whose grouping depends on
    the array's shape. An answer without probabilities is binary: (c, 2c - 1, 0).

    >>> e = Event(ts=0, model="m", model_version="1", probabilities=[0.5, 0.25, 0.25])
    >>> signal_table([e, Event(ts=0, model="m", model_version="1", confidence=0.8)]).round(3)
    array([[0.5  , 0.25 , 0.946],
           [0.8  , 0.6  , 0.   ]])
    """
    by_size: dict[int, tuple[list[int], Any]] = {}
    binary: list[int] = []
    first = events[0].probabilities if events else None
    uniform = uniform_columns([e.probabilities for e in events], list(first)) if (
        isinstance(first, dict) and len(first) >= 2) else None
    if uniform is not None:  # one model's answers, its classes in one order: one pass
        by_size[len(first)] = (list(range(len(events))), uniform[0])  # type: ignore[arg-type]
    else:
        for i, e in enumerate(events):
            probs = e.probabilities
            values = list(probs.values()) if isinstance(probs, dict) else list(probs or ())
            if len(values) >= 2:
                rows, table = by_size.setdefault(len(values), ([], []))
                rows.append(i)
                table.append(values)
            else:
                binary.append(i)
    out = np.empty((len(events), 3))
    for k, (rows, table) in by_size.items():
        p = np.asarray(table, dtype=float)
        ranked = np.sort(p, axis=1)
        total = row_sums(p)
        total[total == 0.0] = 1.0
        share = p / total[:, None]
        logs = np.log(share, out=np.zeros_like(share), where=p > 0)
        ent = -row_sums(share * logs)
        conf = [events[i].confidence for i in rows]
        out[rows, 0] = [ranked[r, -1] if c is None else c for r, c in enumerate(conf)]
        out[rows, 1] = ranked[:, -1] - ranked[:, -2]
        out[rows, 2] = ent / math.log(k)
    if binary:
        c = np.array([events[i].confidence for i in binary], dtype=float)
        out[binary] = np.column_stack([c, 2 * c - 1, np.zeros(len(binary))])
    return out


def _isum(a: np.ndarray) -> int:
    """Exact sum of non-negative int64 values below 2^40 (in chunks that cannot overflow)."""
    return sum(int(a[lo:lo + _SUM_ROWS].sum()) for lo in range(0, len(a), _SUM_ROWS))


class ConfidenceDrift(Detector):
    """Mean confidence, margin and entropy through ADWIN on standardised bucket
    means, and accuracy drift once labels arrive.

    >>> d = ConfidenceDrift(bucket_s=10, reference_events=300)
    >>> for t in range(3000):
    ...     c = (0.9 if t < 2000 else 0.75) + (t % 7) * 0.01
    ...     d.update(Event(ts=t, model="m", model_version="1", confidence=c,
    ...                    probabilities={"a": c, "b": 1 - c}))
    ...     d.tick(t)
    >>> d.detected, [(s["signal"], s["current_mean"]) for s in d.evidence()["shifted"]][:2]
    (True, [('margin', 0.5601), ('confidence', 0.78)])
    """

    name = "confidence.adwin"
    kind = "confidence"

    def __init__(
        self,
        *,
        bucket_s: float = 10.0,
        lateness_s: float = 5.0,
        reference_events: int = 2000,
        delta: float = 0.002,
        min_effect: float = 0.5,
        min_bucket_events: int = 5,
        reference_labels: int = 500,
        min_labels: int = 200,
        z_threshold: float = 4.0,
        min_accuracy_drop: float = 0.05,
        min_calibration_shift: float = 0.1,
    ) -> None:
        self.bucket_s = bucket_s
        self.lateness_s = lateness_s
        self.reference_events = reference_events
        self.delta = delta
        self.min_effect = min_effect
        self.min_bucket_events = min_bucket_events
        self.reference_labels = reference_labels
        self.min_labels = min_labels
        self.z_threshold = z_threshold
        self.min_accuracy_drop = min_accuracy_drop
        self.min_calibration_shift = min_calibration_shift
        self._buckets: TumblingWindows[_Sums] = TumblingWindows(bucket_s, lateness_s, _Sums)
        self._ref = _Sums()
        self._ref_ready = False
        self._ref_until = math.nan
        self._mean = [0.0, 0.0, 0.0]
        self._sd = [1.0, 1.0, 1.0]
        self._adwins = [ADWIN(delta=delta, clock=1) for _ in SIGNALS]
        self._lab_ref = _Sums()  # labelled reference (first reference_labels)
        self._lab_win = _Sums()
        self._lab_start = math.nan
        self._accuracy_alarm = False
        self._calibration_alarm = False
        self._accuracy: dict[str, Any] = {}
        self._last_bucket: dict[str, Any] = {}
        self._detected = False
        self._decided: float | None = None
        self._last: dict[str, Any] = {}
        self._labels_as_classes = True  # absent from state stored before (see __setstate__)
        self._gather: _Sums | None = None  # closed buckets short of min_bucket_events
        self._gather_start = math.nan

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if "_labels_as_classes" not in state:
            # stored by a release that compared str(label) with str(prediction): a
            # labelled reference it never found right (labels "1", predictions 1.0) is
            # that mismatch, not the model: it is learnt again, comparing classes
            ref = state.get("_lab_ref")
            if ref is not None and ref.labelled and not ref.correct:
                state.update(_lab_ref=_Sums(), _lab_win=_Sums(), _lab_start=math.nan,
                             _accuracy={}, _accuracy_alarm=False, _calibration_alarm=False)
            state["_labels_as_classes"] = True
        state.setdefault("_gather", None)  # stored before short buckets were joined
        state.setdefault("_gather_start", math.nan)
        sd = state.get("_sd")
        if sd is not None and min(sd) < _SD_FLOOR:  # stored before the floor: 1e-4
            state["_sd"] = [max(v, _SD_FLOOR) for v in sd]
            adwins = list(state["_adwins"])  # what they hold is on the old scale
            for i, v in enumerate(sd):
                if v < _SD_FLOOR:
                    adwins[i] = ADWIN(delta=state["delta"], clock=1)
            state["_adwins"] = adwins
        self.__dict__.update(state)

    def update(self, event: Event) -> None:
        self.update_many([event])

    def update_many(self, events: list[Event]) -> None:
        """Add the answered events to their buckets (summed in bulk, see ``_Sums``)."""
        answers = [e for e in events if answered(e)]
        if not answers:
            return
        for acc, rows in self._buckets.add_many([e.ts for e in answers]):
            acc.pending.extend(map(answers.__getitem__, rows))
            if len(acc.pending) >= _FOLD_ROWS:
                acc.fold()

    def tick(self, now: float) -> None:
        for start, b in self._buckets.close_until(now):
            self._close(start, start + self.bucket_s, b)

    def _close(self, start: float, end: float, b: _Sums) -> None:
        b.fold()
        self._labels(start, end, b)
        if not self._ref_ready:
            self._ref.add(b)
            self._ref_until = end
            if self._ref.n >= self.reference_events:
                self._ref_ready = True
                n = self._ref.n
                for i in range(3):
                    m = self._ref.s1[i] / _Q / n
                    var = self._ref.s2[i] / (_Q * _Q) / n - m * m
                    self._mean[i] = m
                    self._sd[i] = max(math.sqrt(max(var, 0.0)), _SD_FLOOR)
            return
        self._gather_bucket(start, end, b)
        self._decide(end)

    def _gather_bucket(self, start: float, end: float, b: _Sums) -> None:
        """Feed ADWIN the mean of each group of closed buckets holding at least
        ``min_bucket_events`` answers: a bucket alone when it has them, else joined
        with the following ones (at 0.4 answers/s no 10-s bucket has 5, and none was
        ever seen). The groups follow from the closed buckets alone, whatever the
        batches; a group still short after ``_MAX_GATHER_BUCKETS`` bucket widths is
        dropped, so each ADWIN value stays a local mean, and the state is one sum."""
        g = self._gather
        if g is not None and end - self._gather_start > _MAX_GATHER_BUCKETS * self.bucket_s:
            g = None  # too few answers to fill a group in the span: dropped
        if g is None:
            g, self._gather_start = _Sums(), start
        g.add(b)
        if g.n < self.min_bucket_events:
            self._gather = g
            return
        self._gather = None
        means = [g.s1[i] / _Q / g.n for i in range(3)]
        for i, a in enumerate(self._adwins):
            a.update(_GAIN * (means[i] - self._mean[i]) / self._sd[i])
        self._last_bucket = {"bucket_start": self._gather_start, "bucket_end": end,
                             "events": g.n, **{f"{s}_mean": round(means[i], 4)
                                               for i, s in enumerate(SIGNALS)}}

    def _labels(self, start: float, end: float, b: _Sums) -> None:
        if not b.labelled:
            return
        if self._lab_ref.labelled < self.reference_labels:
            self._lab_ref.add(b)
            return
        if math.isnan(self._lab_start):
            self._lab_start = start
        self._lab_win.add(b)
        if self._lab_win.labelled < self.min_labels:
            return
        r, w = self._lab_ref, self._lab_win
        p_r, p_w = r.correct / r.labelled, w.correct / w.labelled
        pooled = (r.correct + w.correct) / (r.labelled + w.labelled)
        se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / r.labelled + 1 / w.labelled))
        z = (p_w - p_r) / se
        gap_r, var_r = _gap(r)
        gap_w, var_w = _gap(w)
        z_gap = (gap_w - gap_r) / math.sqrt(max(var_r / r.labelled + var_w / w.labelled, 1e-12))
        self._accuracy_alarm = z <= -self.z_threshold and p_r - p_w >= self.min_accuracy_drop
        self._calibration_alarm = (abs(z_gap) >= self.z_threshold
                                   and abs(gap_w - gap_r) >= self.min_calibration_shift)
        self._accuracy = {"window_start": self._lab_start, "window_end": end,
                          "labelled": w.labelled, "accuracy": round(p_w, 4),
                          "reference_accuracy": round(p_r, 4), "z": round(z, 3),
                          "calibration_gap": round(gap_w, 4),
                          "reference_calibration_gap": round(gap_r, 4),
                          "calibration_z": round(z_gap, 3)}
        self._lab_win = _Sums()
        self._lab_start = math.nan

    def _decide(self, end: float) -> None:
        shifted: list[dict[str, Any]] = []
        for i, a in enumerate(self._adwins):
            est = a.estimation / _GAIN
            if (a.width >= 3 and abs(est) >= self.min_effect
                    and abs(est) * self._sd[i] >= _MIN_SHIFT):
                shifted.append({"signal": SIGNALS[i], "shift_sd": round(est, 3),
                                "reference_mean": round(self._mean[i], 4),
                                "current_mean": round(self._mean[i] + est * self._sd[i], 4),
                                "adwin_width_buckets": int(a.width)})
        shifted.sort(key=lambda s: (-abs(s["shift_sd"]), s["signal"]))
        self._detected = bool(shifted) or self._accuracy_alarm or self._calibration_alarm
        self._decided = end
        self._last = {
            "decided_at": end, "reference_events": self._ref.n,
            "estimated_accuracy": self._estimated_accuracy(),
            "reference_until": self._ref_until, "min_effect_sd": self.min_effect,
            "adwin_delta": self.delta, "shifted": shifted, "last_bucket": self._last_bucket,
        }
        if self._accuracy:
            self._last["accuracy"] = dict(self._accuracy) | {
                "firing": self._accuracy_alarm, "z_threshold": self.z_threshold,
                "min_accuracy_drop": self.min_accuracy_drop,
                "calibration_firing": self._calibration_alarm,
                "min_calibration_shift": self.min_calibration_shift}

    def _estimated_accuracy(self) -> float | None:
        """Accuracy expected from confidence alone (NannyML's CBPE idea): the mean
        confidence of ADWIN's current window, minus the calibration gap measured on
        the reference's labels when there are any. Valid while the model stays
        calibrated as it was; shown next to confidence drift, never alerted on."""
        a = self._adwins[0]
        if not self._ref_ready or a.width < 1:
            return None
        conf = self._mean[0] + a.estimation / _GAIN * self._sd[0]
        if self._lab_ref.labelled >= self.reference_labels:
            r = self._lab_ref
            conf -= r.lconf / _Q / r.labelled - r.correct / r.labelled
        return round(min(max(conf, 0.0), 1.0), 4)

    @property
    def detected(self) -> bool:
        return self._detected

    def next_decision(self) -> float | None:
        return self._buckets.next_close()

    @property
    def decided_at(self) -> float | None:
        return self._decided

    def evidence(self) -> dict[str, Any]:
        return dict(self._last)

    def summary(self, subject: dict[str, str], model: str) -> str:
        e = self._last
        parts = []
        for s in e.get("shifted", [])[:2]:
            direction = "rose" if s["shift_sd"] > 0 else "dropped"
            parts.append(f"mean {s['signal']} {direction} from {s['reference_mean']:.3f} to "
                         f"{s['current_mean']:.3f}")
        acc = e.get("accuracy")
        if acc and acc.get("firing"):
            parts.append(f"accuracy fell from {acc['reference_accuracy']:.1%} to "
                         f"{acc['accuracy']:.1%}")
        if acc and acc.get("calibration_firing"):
            parts.append(f"confidence minus accuracy moved from "
                         f"{acc['reference_calibration_gap']:+.3f} to {acc['calibration_gap']:+.3f}")
        if not parts:
            return f"Confidence of {model} is back to its reference."
        return f"{model}: {'; '.join(parts)}: check inputs and the model version."
