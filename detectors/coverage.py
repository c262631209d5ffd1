"""Natural-data sweeps: a client that, within one window, asks about many inputs it
has never sent before, with answers spread over the model's classes, is
collecting a labelled transfer set (model extraction with natural data, MITRE
ATLAS AML.T0024.002: Knockoff Nets, Orekondy et al., CVPR 2019; Copycat CNN,
Correia-Silva et al., IJCNN 2018; membership-inference sweeps, AML.T0024.000).

Each such query looks like ordinary traffic, so no query-level test (near
copies, low confidence, out-of-range values) sees it; PRADA and the stateful
detectors of Chen et al. miss it by construction. What gives it away is the
shape of the client's stream over a window, three cheap figures per client:

- **volume**: at least ``min_queries`` queries within ``window_s`` of the
  window's first query (an ordinary client sends a fraction of that);
- **novelty**: the share of them that are distinct inputs, estimated by linear
  counting (Whang et al., TODS 1990) on a 2,048-bit bitmap of input hashes. An
  extraction attacker buys one label per input and never pays twice for the
  same one, so its share stays near 100%; clients that score what their
  business presents (the same customers, items or images again) repeat inputs;
- **class coverage**: the effective number of predicted classes (inverse
  Simpson index over the predictions, hashed into 16 buckets) is at least
  ``min_classes``: a surrogate model needs labels of every class, while most
  high-volume scorers see their own segment (one or two classes, or mostly the
  majority class).

What it does NOT separate: a high-volume client whose inputs are all distinct
and spread over the classes (a batch job that scores each record of a
representative data set once, a gateway that forwards many users' requests
under one key) looks exactly like a sweep: allow-list such clients
(``detectors.allow_clients``). An attacker evades it by staying under
``min_queries`` per ``window_s`` (slower extraction), splitting the sweep over
several keys, padding it with repeats (more queries per label) or skewing its
class mix (a worse surrogate); those cost it time or money, which the volume
rules (``detectors.rules``) then bound.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, ClassVar

from detectors.base import Detector, SlotState, subject_name
from detectors.event import Event
from detectors.queries import query_input

# bitmap of input hashes. Linear counting's standard error is 1.6% at 350 inputs (the
# share measured at the default min_queries), under 4% up to ~8,000. With 512 bits it
# was 3.5%: a sweep of only new inputs read below 0.95 at its first measure 8% of the
# time (bench.attacks missed one membership-inference run of 400 new inputs that way)
_BITS = 2048
_CLASS_BUCKETS = 16
_OFF = _BITS // 8  # class counts (uint16, saturating) follow the bitmap
_NEVER = float("-inf")


class QueryCoverage(SlotState, Detector):
    """Fires when a client sends ``min_queries`` queries within ``window_s``, of
    which a share of at least ``min_distinct`` are distinct inputs, with
    predictions spread over at least ``min_classes`` effective classes.

    Windows are the client's own: one starts with the first query after the
    previous one ended, so a sweep that starts a client is never split. A window
    only counts queries until it has ``min_queries // 8`` of them; then the 288-byte
    bitmap and class counts are allocated and the share and classes are measured
    on the queries from there on, every 8th query (an ordinary client never gets
    that far: its state is a few numbers). O(1) per event. Clears ``window_s`` after it last
    fired.

    >>> d = QueryCoverage(min_queries=50)
    >>> for i in range(60):  # 60 different inputs, answers over 10 classes
    ...     d.update(Event(ts=i, model="m", model_version="1", client_id="c",
    ...                    features={"x": float(i)}, prediction=str(i % 10)))
    >>> d.detected, d.evidence()["queries_in_window"]
    (True, 60)
    """

    name: ClassVar[str] = "extraction.query_coverage"
    kind: ClassVar[str] = "extraction"
    atlas: ClassVar[tuple[str, ...]] = ("AML.T0024.002", "AML.T0024.000")
    severity = "warning"

    __slots__ = ("_buf", "_count", "_fired_at", "_request_ids", "_start", "min_classes",
                 "min_distinct", "min_queries", "window_s")

    def __init__(
        self,
        *,
        window_s: float = 3600.0,
        min_queries: int = 400,
        min_distinct: float = 0.95,
        min_classes: float = 3.0,
    ) -> None:
        self.window_s = window_s
        self.min_queries = min_queries
        self.min_distinct = min_distinct
        self.min_classes = min_classes
        self._buf: bytearray | None = None  # bitmap and class counts, once a window is busy
        self._start = _NEVER  # the current window's first query
        self._count = 0  # queries in the current window
        self._fired_at = _NEVER  # -inf: not firing
        self._request_ids: tuple[str, ...] = ()

    def update(self, event: Event) -> None:
        ts = event.ts
        self.tick(ts)
        if ts - self._start >= self.window_s:
            self._start, self._count, self._buf = ts, 0, None
        self._count += 1
        buf = self._buf
        if buf is None:
            if self._count < max(1, self.min_queries // 8):
                return
            buf = self._buf = bytearray(_OFF + 2 * _CLASS_BUCKETS)
        query = query_input(event)
        if query is not None:
            h = query[1] % _BITS
            buf[h >> 3] |= 1 << (h & 7)
        if event.prediction is not None:
            b = _OFF + 2 * (zlib.crc32(str(event.prediction).encode()) % _CLASS_BUCKETS)
            c = buf[b] | buf[b + 1] << 8
            if c < 0xFFFF:
                c += 1
                buf[b], buf[b + 1] = c & 0xFF, c >> 8
        # measured on every 8th query: counting the bitmap's bits is the costly part
        if self._count >= self.min_queries and self._count % 8 == 0:
            measured, distinct, classes = self._figures()
            if distinct >= self.min_distinct * measured and classes >= self.min_classes:
                self._fired_at = ts
                if event.request_id is not None and len(self._request_ids) < 5:
                    self._request_ids += (event.request_id,)

    def _figures(self) -> tuple[int, float, float]:
        """Queries measured in this window, their estimated distinct inputs (linear
        counting) and the effective number of predicted classes (inverse Simpson)."""
        buf = self._buf
        if buf is None:
            return 0, 0.0, 0.0
        measured = self._count - max(1, self.min_queries // 8) + 1
        zeros = _BITS - int.from_bytes(buf[:_OFF], "little").bit_count()
        # a full bitmap: more distinct inputs than it can tell apart
        distinct = _BITS * math.log(_BITS / zeros) if zeros else float(measured)
        counts = [buf[i] | buf[i + 1] << 8 for i in range(_OFF, len(buf), 2)]
        total = sum(counts)
        classes = total * total / sum(c * c for c in counts) if total else 0.0
        return measured, min(distinct, float(measured)), classes

    def import_state(self, state: tuple[Any, ...]) -> None:
        super().import_state(state)
        buf = self._buf
        if buf is not None and len(buf) != _OFF + 2 * _CLASS_BUCKETS:
            # a bitmap of another size (an earlier release's): its hashes cannot be
            # placed in this one, so the window under way starts over
            self._start, self._count, self._buf = _NEVER, 0, None

    def tick(self, now: float) -> None:
        if self._fired_at != _NEVER and now - self._fired_at > self.window_s:
            self._fired_at = _NEVER
            self._request_ids = ()

    @property
    def detected(self) -> bool:
        return self._fired_at != _NEVER

    def evidence(self) -> dict[str, Any]:
        measured, distinct, classes = self._figures()
        return {
            "queries_in_window": self._count,
            "distinct_share": round(distinct / measured, 3) if measured else None,
            "effective_classes": round(classes, 2),
            "min_queries": self.min_queries,
            "min_distinct_share": self.min_distinct,
            "min_classes": self.min_classes,
            "window_s": self.window_s,
            "sample_request_ids": list(self._request_ids),
        }

    def summary(self, subject: dict[str, str], model: str) -> str:
        if not self.detected:  # the incident's resolution
            return (f"{subject_name(subject)} has sent no labelled-data sweep to {model} "
                    f"for {self.window_s:g}s since the last one was seen.")
        measured, distinct, classes = self._figures()
        share = distinct / measured if measured else 0.0
        return (
            f"{subject_name(subject)} sent {self._count} queries to {model} within "
            f"{self.window_s:g}s, {share:.0%} of them new inputs, answered across "
            f"{classes:.1f} effective classes: a labelled-data sweep (model extraction "
            f"with natural data); review the key, allow-list it if it is a known batch job."
        )
