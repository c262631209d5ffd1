"""Confidence anomalies: a model answering with less (or more) confidence than it
used to, per model version, on tumbling event-time windows."""

from __future__ import annotations

import math
from typing import Any

from detectors.base import Detector
from detectors.event import Event
from detectors.windows import TumblingWindows


class _Moments:
    __slots__ = ("low", "n", "total")

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.low = 0


class ConfidenceShift(Detector):
    """Mean confidence of a window against the model's own reference period.

    The first ``reference_events`` (or more) events, in whole closed windows,
    become the reference (mean and standard deviation of confidence, rate of
    answers below ``low_threshold``). Each later window of ``window_s`` with at
    least ``min_events`` is compared with a two-sided z-test on its mean
    (Welch-style standard error from the reference spread); it fires when
    ``|z| >= z_threshold`` and the mean moved by at least ``min_effect``, and
    clears after a window that passes. Windows close on the watermark (``tick``).

    >>> d = ConfidenceShift(window_s=10, reference_events=50, min_events=5)
    >>> for t in range(200):
    ...     c = 0.9 if t < 100 else 0.6
    ...     d.update(Event(ts=t, model="m", model_version="1", confidence=c + (t % 5) * 0.01))
    ...     d.tick(t)
    >>> d.detected, round(d.evidence()["window_mean"], 2)
    (True, 0.62)
    """

    name = "confidence.mean_shift"
    kind = "confidence"

    def __init__(
        self,
        *,
        window_s: float = 60.0,
        lateness_s: float = 5.0,
        reference_events: int = 2000,
        min_events: int = 100,
        z_threshold: float = 5.0,
        min_effect: float = 0.05,
        low_threshold: float = 0.5,
    ) -> None:
        self.window_s = window_s
        self.lateness_s = lateness_s
        self.reference_events = reference_events
        self.min_events = min_events
        self.z_threshold = z_threshold
        self.min_effect = min_effect
        self.low_threshold = low_threshold
        self._windows: TumblingWindows[list[float]] = TumblingWindows(
            window_s, lateness_s, list
        )
        self._ref_n = 0
        self._ref_sum = 0.0
        self._ref_sq = 0.0
        self._ref_low = 0
        self._ref_until = float("nan")
        self._detected = False
        self._last: dict[str, Any] = {}

    def update(self, event: Event) -> None:
        if event.confidence is None:
            return
        acc = self._windows.add(event.ts)
        if acc is not None:
            acc.append(event.confidence)

    def tick(self, now: float) -> None:
        for start, values in self._windows.close_until(now):
            self._close(start, values)

    @property
    def reference_ready(self) -> bool:
        return self._ref_n >= self.reference_events

    def _close(self, start: float, values: list[float]) -> None:
        if not self.reference_ready:
            # fsum is exactly rounded: the result does not depend on arrival order
            self._ref_n += len(values)
            self._ref_sum += math.fsum(values)
            self._ref_sq += math.fsum(v * v for v in values)
            self._ref_low += sum(v < self.low_threshold for v in values)
            self._ref_until = start + self.window_s
            return
        n = len(values)
        if n < self.min_events:
            return
        ref_mean = self._ref_sum / self._ref_n
        ref_var = max(self._ref_sq / self._ref_n - ref_mean * ref_mean, 1e-12)
        mean = math.fsum(values) / n
        z = (mean - ref_mean) / math.sqrt(ref_var / n + ref_var / self._ref_n)
        low_rate = sum(v < self.low_threshold for v in values) / n
        self._detected = abs(z) >= self.z_threshold and abs(mean - ref_mean) >= self.min_effect
        self._last = {
            "window_start": start,
            "window_end": start + self.window_s,
            "window_events": n,
            "window_mean": mean,
            "reference_mean": ref_mean,
            "reference_events": self._ref_n,
            "reference_until": self._ref_until,
            "z": round(z, 3),
            "z_threshold": self.z_threshold,
            "min_effect": self.min_effect,
            "low_confidence_rate": round(low_rate, 4),
            "reference_low_confidence_rate": round(self._ref_low / self._ref_n, 4),
        }

    @property
    def detected(self) -> bool:
        return self._detected

    def next_decision(self) -> float | None:
        return self._windows.next_close()

    @property
    def decided_at(self) -> float | None:
        return self._last.get("window_end")

    def evidence(self) -> dict[str, Any]:
        return dict(self._last)

    def summary(self, subject: dict[str, str], model: str) -> str:
        e = self._last
        if not e:
            return f"Confidence of {model} is back to its reference."
        direction = "dropped" if e["window_mean"] < e["reference_mean"] else "rose"
        return (
            f"Mean confidence of {model} {direction} from {e['reference_mean']:.3f} to "
            f"{e['window_mean']:.3f} (z={e['z']:.1f}): check inputs and the model version."
        )
