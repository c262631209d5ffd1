"""Window summaries: what the scheduled jobs read instead of re-reading Kafka.

Per (model, version, time bucket) a ``Summary`` holds the event count, a
log-bucketed quantile sketch per numeric feature (DDSketch-style, ~2 % relative
accuracy), value counts per categorical feature, predicted-class counts (or a
sketch for numeric predictions), a confidence histogram, a latency sketch,
label agreement when labels are present, and a bounded uniform sample of
events: the ``sample_size`` events with the smallest hash of their
``request_id`` (a bottom-k sample). Every part merges by addition (the sample:
union, keep the k smallest hashes), so replicas' and partitions' contributions
combine in any order, and a bottom-k sample of two versions keyed by the same
``request_id`` shows the requests both scored (shadow traffic).

The pipeline folds each polled batch into a per-partition *delta*; the
checkpoint merges the deltas into the partition's rows of ``window_summaries``
in the same transaction as the partition's offsets (see
``monitor.checkpoint``). After ``kill -9`` the un-checkpointed delta is lost
together with the offsets, the events are read again, and the stored counts
equal an uninterrupted run's.
"""

from __future__ import annotations

import heapq
import math
import pickle
import uuid
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain, islice
from numbers import Real
from operator import attrgetter, itemgetter
from typing import Any, cast

import msgspec
import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from detectors.event import Event
from detectors.reference import label, only_numbers, uniform_columns
from monitor.store import summary_batches, window_summaries

GAMMA = 1.04  # sketch bucket ratio: values within ~2 % of each other share a bucket
_LOG_GAMMA = math.log(GAMMA)
_MIN_ABS = 1e-9
_OFFSET = 1000  # keeps bucket keys of |x| >= 1e-9 positive; the sign is the key's sign
CONF_BINS = 100
OTHER = "__other__"
MAX_FEATURE_NAMES = 1000  # features a summary holds: the first names to fit, kept


_MAX_PENDING = 64  # batches of bucket keys a sketch holds before folding them into its dict


class Sketch:
    """A mergeable quantile sketch of one numeric quantity (bucket key -> count),
    plus the exact count, missing (null) count, sum, sum of squares, min and max.

    Bucket keys of added batches wait as arrays and are counted into ``buckets``
    when it is read (or every ``_MAX_PENDING`` batches): one ``np.unique`` per
    checkpoint instead of a dict update per key and batch.

    >>> s = Sketch(); s.add(np.arange(1.0, 101.0))
    >>> round(s.quantile(0.5)), s.n, round(s.mean, 1)
    (50, 100, 50.5)
    """

    __slots__ = ("_buckets", "_pending", "max", "min", "missing", "n", "sum", "sumsq")

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self._pending: list[np.ndarray] = []
        self.n = 0
        self.missing = 0
        self.sum = 0.0
        self.sumsq = 0.0
        self.min = math.inf
        self.max = -math.inf

    def __getstate__(self) -> tuple:
        return (self.buckets, self.n, self.missing, self.sum, self.sumsq, self.min, self.max)

    def __setstate__(self, state: tuple) -> None:
        (self._buckets, self.n, self.missing, self.sum, self.sumsq, self.min, self.max) = state
        self._pending = []

    @property
    def buckets(self) -> dict[int, int]:
        if self._pending:
            self._fold()
        return self._buckets

    def _fold(self) -> None:
        uniq, counts = np.unique(np.concatenate(self._pending), return_counts=True)
        self._pending = []
        b = self._buckets
        for k, c in zip(uniq.tolist(), counts.tolist(), strict=True):
            b[k] = b.get(k, 0) + c

    def add(self, values: np.ndarray, absent: int = 0) -> None:
        """Add values, NaN for null; ``absent`` of the NaNs stand for events without
        the value at all (not counted as missing)."""
        missing = np.isnan(values)
        self.missing += int(missing.sum()) - absent
        x = values[~missing]
        if x.size:
            self._add_present(bucket_keys(x), (x.size, float(x.sum()), float((x * x).sum()),
                                               float(x.min()), float(x.max())))

    def _add_present(self, keys: np.ndarray, stats: tuple[int, float, float, float, float]) -> None:
        """Values present: their bucket keys and (count, sum, sum of squares, min, max)."""
        n, total, sumsq, lo, hi = stats
        self.n += n
        self.sum += total
        self.sumsq += sumsq
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        self._pending.append(keys)
        if len(self._pending) >= _MAX_PENDING:
            self._fold()

    def merge(self, other: Sketch) -> None:
        b = self.buckets
        for k, c in other.buckets.items():
            b[k] = b.get(k, 0) + c
        self.n += other.n
        self.missing += other.missing
        self.sum += other.sum
        self.sumsq += other.sumsq
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n else math.nan

    @property
    def std(self) -> float:
        if self.n < 2:
            return math.nan
        var = (self.sumsq - self.sum * self.sum / self.n) / (self.n - 1)
        return math.sqrt(max(var, 0.0))

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """Bucket values (ascending) and their counts."""
        if not self.buckets:
            return np.zeros(0), np.zeros(0)
        keys = np.fromiter(self.buckets, dtype=np.int64, count=len(self.buckets))
        counts = np.fromiter(self.buckets.values(), dtype=float, count=len(self.buckets))
        values = _values(keys)
        order = np.argsort(values, kind="stable")
        return values[order], counts[order]

    def quantile(self, q: float) -> float:
        values, counts = self.points()
        if not counts.size:
            return math.nan
        cum = np.cumsum(counts)
        i = int(np.searchsorted(cum, q * cum[-1], side="left"))
        return float(np.clip(values[min(i, len(values) - 1)], self.min, self.max))


def bucket_keys(x: np.ndarray) -> np.ndarray:
    """Sketch bucket keys of values (0 for |x| < 1e-9; the sign is the key's sign)."""
    a = np.abs(x)
    small = a < _MIN_ABS
    with np.errstate(divide="ignore"):
        idx = np.ceil(np.log(np.where(small, 1.0, a)) / _LOG_GAMMA).astype(np.int64) + _OFFSET
    return np.where(small, 0, np.where(x < 0, -idx, idx))


def add_rows(sketches: Sequence[Sketch], xt: np.ndarray, absent: Sequence[int]) -> None:
    """Add row ``j`` of ``xt`` (features x events, C order) to ``sketches[j]``: the
    rows without NaN in one numpy pass (row sums are the same pairwise sums as
    ``Sketch.add``'s), the others one by one."""
    nan = np.isnan(xt).any(axis=1)
    if nan.any():
        for j in np.flatnonzero(nan).tolist():
            sketches[j].add(xt[j], absent[j])
        keep = np.flatnonzero(~nan)
        xt = xt[keep]
        sketches = [sketches[j] for j in keep.tolist()]
    if not sketches:
        return
    n = xt.shape[1]
    stats = zip([n] * len(sketches), xt.sum(axis=1).tolist(), (xt * xt).sum(axis=1).tolist(),
                xt.min(axis=1).tolist(), xt.max(axis=1).tolist(), strict=True)
    for sk, keys, st in zip(sketches, bucket_keys(xt), stats, strict=True):
        sk._add_present(keys, st)


def _values(keys: np.ndarray) -> np.ndarray:
    mag = 2.0 * GAMMA ** (np.abs(keys) - _OFFSET) / (GAMMA + 1.0)
    return np.where(keys == 0, 0.0, np.sign(keys) * mag)


_EMPTY: dict[str, Any] = {}


def _feature_names(feats: Sequence[dict[str, Any]]) -> tuple[list[str], dict[str, int], list | None]:
    """The sorted feature names of a batch, per name how many events lack it, and
    when every event has the same names (the common case), their values in rows."""
    m = len(feats[0])
    if m > 1 and min(map(len, feats)) == max(map(len, feats)):
        names = sorted(feats[0])
        try:
            return names, {}, list(map(itemgetter(*names), feats))
        except KeyError:
            pass
    present = Counter(chain.from_iterable(feats))
    n = len(feats)
    return sorted(present), {k: n - c for k, c in present.items() if c < n}, None


def _numeric_matrix(feats: Sequence[dict[str, Any]], names: list[str],
                    rows: list | None) -> np.ndarray | None:
    """``names`` x events as floats (missing and None as NaN), C order; None when a
    value is not a number, a string such as ``"3.5"`` included (then the columns are
    read one by one). ``rows``: the values of ``names`` per event, when already read."""
    if rows is None:
        get = itemgetter(*names)
        try:
            rows = list(map(get, feats))
        except KeyError:  # shaped as itemgetter's: a value per event for one name
            rows = ([tuple(f.get(n) for n in names) for f in feats] if len(names) > 1
                    else [f.get(names[0]) for f in feats])
    if not only_numbers(chain.from_iterable(rows) if len(names) > 1 else rows):
        return None  # numpy would read numeric strings as numbers
    try:
        if len(names) > 1:  # all present: straight into an array
            x = np.fromiter(chain.from_iterable(rows), dtype=float, count=len(rows) * len(names))
        else:
            x = np.array(rows, dtype=float)
    except TypeError:  # None becomes NaN here, not in fromiter
        x = np.array(rows, dtype=float)
    return np.ascontiguousarray(x.reshape(len(feats), len(names)).T)


def _numeric_prefix(values: Sequence[Any]) -> int:
    """How many leading ``values`` are numbers or None: the first string (``"3.5"``
    too) makes the feature categorical, as the drift reference decides."""
    for i, v in enumerate(values):
        if v is not None and not isinstance(v, Real):
            return i
    return len(values)


def _count_into(target: dict[str, int], counts: dict[Any, int], cap: int) -> None:
    for v, c in counts.items():
        key = label(v)  # the category drift counts it under
        if key not in target and len(target) >= cap:
            key = OTHER
        target[key] = target.get(key, 0) + c


class Summary:
    """Everything the jobs need about one (model, version, bucket); merges by addition."""

    __slots__ = ("categories", "classes", "confidence", "correct", "features", "first_ts",
                 "labelled", "last_ts", "latency", "n", "prediction", "sample")

    def __init__(self) -> None:
        self.n = 0
        self.features: dict[str, Sketch] = {}
        self.categories: dict[str, dict[str, int]] = {}
        self.classes: dict[str, int] = {}
        self.prediction = Sketch()  # numeric predictions (regression)
        self.confidence = np.zeros(CONF_BINS, dtype=np.int64)
        self.latency = Sketch()
        self.labelled = 0
        self.correct = 0
        self.first_ts = math.inf
        self.last_ts = -math.inf
        # bottom-k: (hash, request_id, ts, features, prediction, confidence, latency_ms)
        self.sample: list[tuple] = []

    def __getstate__(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state: dict) -> None:
        for k in self.__slots__:
            setattr(self, k, state[k])

    # -- collection -----------------------------------------------------------------
    def add_events(self, events: Sequence[Event], *, sample_size: int,
                   max_categories: int) -> None:
        """Fold a batch of one (model, version, bucket)'s events in, mostly in numpy."""
        if not events:
            return
        self.n += len(events)
        ts = [e.ts for e in events]
        self.first_ts = min(self.first_ts, *ts)
        self.last_ts = max(self.last_ts, *ts)
        feats = [e.features or _EMPTY for e in events]
        names = self._room(sorted(feats[0]))
        numeric = [n for n in names if n not in self.categories]
        uniform = uniform_columns(feats, numeric) if numeric else None
        if uniform is not None:  # the common case: one C-level pass over every value
            flat, columns = uniform
            absent: dict[str, int] = {}
            table = flat if columns is None else flat[:, columns]
            matrix: np.ndarray | None = np.ascontiguousarray(table.T)
        else:
            every, absent, rows = _feature_names(feats)
            names = self._room(every)
            if len(names) < len(every):
                rows = None  # read again: the values of the names kept
            numeric = [n for n in names if n not in self.categories]
            matrix = _numeric_matrix(feats, numeric, rows if len(numeric) == len(names) else None
                                     ) if numeric else None
        if matrix is not None:
            add_rows([self._sketch(n) for n in numeric], matrix, [absent.get(n, 0) for n in numeric])
        for name in names:
            if matrix is not None and name not in self.categories:
                continue
            values = [f.get(name) for f in feats]
            if name not in self.categories:
                k = _numeric_prefix(values)
                if k == len(values):
                    self._sketch(name).add(np.array(values, dtype=float), absent.get(name, 0))
                    continue
                # numbers up to the first value that is not one; from there on the
                # feature is categorical, as it would be fed one event at a time
                if k:
                    self._sketch(name).add(np.array(values[:k], dtype=float),
                                           sum(name not in f for f in feats[:k]))
                values = values[k:]
            counts = Counter(values)
            counts.pop(None, None)
            _count_into(self.categories.setdefault(name, {}), counts, max_categories)
        self._add_predictions([e.prediction for e in events], max_categories)
        conf = np.array([e.confidence for e in events], dtype=float)
        conf = conf[~np.isnan(conf)]
        if conf.size:
            idx = np.clip((conf * CONF_BINS).astype(np.int64), 0, CONF_BINS - 1)
            self.confidence += np.bincount(idx, minlength=CONF_BINS)
        self.latency.add(np.array([e.latency_ms for e in events], dtype=float))
        labelled = [label(e.label) == label(e.prediction) for e in events
                    if e.label is not None and e.prediction is not None]
        self.labelled += len(labelled)
        self.correct += sum(labelled)
        self._sample(events, sample_size)

    def _room(self, names: list[str]) -> list[str]:
        """``names`` without the new ones that do not fit under ``MAX_FEATURE_NAMES``
        (a feature map keyed by an open vocabulary, such as token counts, would
        otherwise hold one sketch per name ever seen)."""
        free = MAX_FEATURE_NAMES - len(self.features) - len(self.categories)
        if len(names) <= free:  # the common case
            return names
        kept = []
        for name in names:
            if name in self.features or name in self.categories:
                kept.append(name)
            elif free > 0:
                kept.append(name)
                free -= 1
        return kept

    def _sketch(self, name: str) -> Sketch:
        sketch = self.features.get(name)
        if sketch is None:
            sketch = self.features[name] = Sketch()
        return sketch

    def _add_predictions(self, predictions: list[Any], max_categories: int) -> None:
        counts = Counter(predictions)
        counts.pop(None, None)
        if all(type(p) is str for p in counts):  # class labels only (the common case)
            _count_into(self.classes, counts, max_categories)
            return
        # numbers go to the numeric sketch (a regression's output); labels and whole
        # numbers to the classes (class ids: a JSON decoder reads class 1 as 1.0), so
        # class ids count as classes, as the drift detectors count them
        numbers = [p for p in counts.elements()
                   if isinstance(p, int | float) and not isinstance(p, bool)]
        if numbers:
            self.prediction.add(np.asarray(numbers, dtype=float))
        _count_into(self.classes, {p: c for p, c in counts.items()
                                   if not (isinstance(p, float) and not p.is_integer())},
                    max_categories)

    def predicts_classes(self) -> bool:
        """Whether the predictions are classes (labels or class ids) rather than a
        regression's numbers: the classes hold at least as many predictions as the
        numeric sketch (a regression's whole-numbered outputs are a few)."""
        return bool(self.classes) and sum(self.classes.values()) >= self.prediction.n

    def _sample(self, events: Sequence[Event], k: int) -> None:
        if k <= 0:
            return
        crc = zlib.crc32
        ids = [e.request_id for e in events]
        hashes = (list(map(crc, map(str.encode, cast(list[str], ids)))) if None not in ids else
                  [crc(e.request_id.encode()) if e.request_id is not None
                   else crc(msgspec.json.encode(e)) for e in events])
        # the sample is sorted by (hash, ts): its last has the largest hash, and only an
        # event that hashes no higher can displace it
        limit = self.sample[-1][0] if len(self.sample) >= k else 1 << 32
        candidates = np.flatnonzero(np.asarray(hashes, dtype=np.int64) <= limit).tolist()
        if not candidates:
            return
        merged = self.sample + sorted([(hashes[i], e.request_id, e.ts, e.features, e.prediction,
                                        e.confidence, e.latency_ms)
                                       for i in candidates for e in (events[i],)], key=_SAMPLE_KEY)
        merged.sort(key=_SAMPLE_KEY)  # two sorted runs: one merge, stable (the sample first)
        self.sample = merged[:k]

    # -- merging --------------------------------------------------------------------
    def merge(self, other: Summary, *, sample_size: int | None = None) -> Summary:
        """Add ``other`` into this summary (in place) and return it."""
        self.n += other.n
        for name in self._room(list(other.features)):
            mine = self.features.get(name)
            if mine is None:
                mine = self.features[name] = Sketch()
            mine.merge(other.features[name])
        for name in self._room(list(other.categories)):
            cats = other.categories[name]
            mine_c = self.categories.setdefault(name, {})
            for v, c in cats.items():
                mine_c[v] = mine_c.get(v, 0) + c
        for v, c in other.classes.items():
            self.classes[v] = self.classes.get(v, 0) + c
        self.prediction.merge(other.prediction)
        self.confidence = self.confidence + other.confidence
        self.latency.merge(other.latency)
        self.labelled += other.labelled
        self.correct += other.correct
        self.first_ts = min(self.first_ts, other.first_ts)
        self.last_ts = max(self.last_ts, other.last_ts)
        if sample_size == 0:
            self.sample = []
        else:
            merged = heapq.merge(self.sample, other.sample, key=_SAMPLE_KEY)
            self.sample = list(islice(merged, sample_size))
        return self

    # -- storage --------------------------------------------------------------------
    def encode(self) -> bytes:
        return zlib.compress(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL), 1)

    @staticmethod
    def decode(payload: bytes) -> Summary:
        obj = pickle.loads(zlib.decompress(payload))
        assert isinstance(obj, Summary)
        return obj


_SAMPLE_KEY = itemgetter(0, 2)  # (hash, ts): the bottom-k order, the same in every merge


def merge_all(summaries: Iterable[Summary], *, sample_size: int | None = None) -> Summary:
    """One summary of many; the sample is the ``sample_size`` smallest hashes of all
    (selected once at the end, not merge by merge)."""
    out = Summary()
    samples = []
    for s in summaries:
        samples.append(s.sample)
        out.merge(s, sample_size=0)
    everything = chain.from_iterable(samples)
    out.sample = (sorted(everything, key=_SAMPLE_KEY) if sample_size is None
                  else heapq.nsmallest(sample_size, everything, key=_SAMPLE_KEY))
    return out


Key = tuple[str, str, float]  # (model, version, bucket_start)
# a partition's deltas as checkpoints take them, in order: (the batch's token, deltas)
Batches = list[tuple[str, dict[Key, Summary]]]
_MODEL_VERSION = attrgetter("model", "model_version")
_TS = attrgetter("ts")


class SummaryCollector:
    """Per-partition deltas since the last checkpoint, folded once per batch."""

    def __init__(self, *, bucket_s: float, sample_size: int, max_categories: int,
                 enabled: bool = True) -> None:
        self.bucket_s = bucket_s
        self.sample_size = sample_size
        self.max_categories = max_categories
        self.enabled = enabled
        self.deltas: dict[Any, dict[Key, Summary]] = {}
        self.unsaved: dict[Any, Batches] = {}  # taken by checkpoints not yet committed

    def add(self, pid: Any, events: Sequence[Event]) -> None:
        if not self.enabled or not events:
            return
        width = self.bucket_s
        versions = list(map(_MODEL_VERSION, events))
        ts = np.fromiter(map(_TS, events), dtype=float, count=len(events))
        starts = (ts // width * width).tolist()
        groups: dict[tuple[tuple[str, str], float], Sequence[Event]]
        if versions.count(versions[0]) == len(versions) and starts.count(starts[0]) == len(starts):
            groups = {(versions[0], starts[0]): events}  # the common case: one version, one bucket
        else:  # events of each (version, bucket) in batch order, via a stable sort of group codes
            keys = list(zip(versions, starts, strict=True))
            code = {k: i for i, k in enumerate(dict.fromkeys(keys))}
            codes = np.fromiter(map(code.__getitem__, keys), dtype=np.int64, count=len(keys))
            order = np.argsort(codes, kind="stable").tolist()
            ends = np.cumsum(np.bincount(codes)).tolist()
            groups = {k: [events[i] for i in order[a:b]]
                      for k, a, b in zip(code, [0, *ends], ends, strict=False)}
        deltas = self.deltas.setdefault(pid, {})
        for ((model, version), start), evs in groups.items():
            key = (model, version, start)
            s = deltas.get(key)
            if s is None:
                s = deltas[key] = Summary()
            s.add_events(evs, sample_size=self.sample_size, max_categories=self.max_categories)

    def take(self, pids: Iterable[Any]) -> dict[Any, Batches]:
        """For a checkpoint, the deltas of ``pids``: per partition, batches of (a token
        of the batch, deltas). They are detached (later events go to new deltas) and
        taken again by every checkpoint until one is ``committed``: a save whose commit
        went through unacknowledged must not have them merged twice (``write_deltas``)."""
        pids = list(pids)
        for pid in pids:
            deltas = self.deltas.pop(pid, None)
            if deltas:
                self.unsaved.setdefault(pid, []).append((uuid.uuid4().hex, deltas))
        return {pid: list(self.unsaved[pid]) for pid in pids if self.unsaved.get(pid)}

    def committed(self, taken: dict[Any, Batches]) -> None:
        for pid, batches in taken.items():
            left = self.unsaved.get(pid)
            if left is not None:
                del left[:len(batches)]  # the first ones: later takes append
                if not left:
                    del self.unsaved[pid]

    def release(self, pid: Any) -> None:
        """Forget a partition's unsaved deltas (its next owner re-reads those events)."""
        self.deltas.pop(pid, None)
        self.unsaved.pop(pid, None)


def write_deltas(conn: Connection, scopes: dict[Any, str], taken: dict[Any, Batches],
                 bucket_s: float, sample_size: int) -> None:
    """Merge deltas into their partition rows, inside the checkpoint's transaction.

    A row is updated only at the revision read (optimistic concurrency with the
    compaction in ``cleanup``): when the row vanished meanwhile, the delta is
    inserted on its own, so nothing is counted twice. Each partition's merged batch
    tokens are stored too (``summary_batches``), so a save that repeats a batch (its
    commit went through unacknowledged) skips it, whether or not the compaction
    merged its rows since. A partition keeps the tokens of its latest save only:
    the batches before it were acknowledged and are never taken again."""
    t, done = window_summaries, summary_batches
    now = datetime.now(UTC)
    for pid, batches in taken.items():
        scope = scopes[pid]
        tokens = [token for token, _ in batches]
        merged_already = set(conn.execute(
            sa.select(done.c.token).where(done.c.scope == scope)).scalars())
        conn.execute(done.delete().where(done.c.scope == scope, done.c.token.not_in(tokens)))
        for token, deltas in batches:
            if token in merged_already:
                continue
            for (model, version, bucket), delta in deltas.items():
                row = conn.execute(
                    sa.select(t.c.id, t.c.rev, t.c.payload).where(
                        t.c.model == model, t.c.model_version == version,
                        t.c.bucket_start == bucket, t.c.scope == scope)
                ).first()
                if row is not None:
                    merged = Summary.decode(row.payload).merge(delta, sample_size=sample_size)
                    updated = conn.execute(
                        t.update().where(t.c.id == row.id, t.c.rev == row.rev).values(
                            payload=merged.encode(), n=merged.n, rev=row.rev + 1,
                            updated_at=now)
                    ).rowcount
                    if updated:
                        continue
                conn.execute(t.insert().values(
                    model=model, model_version=version, bucket_start=bucket, bucket_s=bucket_s,
                    scope=scope, n=delta.n, rev=0, payload=delta.encode(), updated_at=now))
            conn.execute(done.insert().values(scope=scope, token=token))


# -- reading --------------------------------------------------------------------------
@dataclass(frozen=True)
class Bucket:
    model: str
    version: str
    start: float
    summary: Summary


def load_buckets(engine: sa.Engine, model: str | None, since: float, until: float,
                 *, version: str | None = None, sample_size: int | None = None) -> list[Bucket]:
    """Merged summaries per (model, version, bucket) of the buckets that overlap
    [since, until) (``overlapping``)."""
    t = window_summaries
    q = sa.select(t.c.model, t.c.model_version, t.c.bucket_start, t.c.payload).where(
        *overlapping(since, until))
    if model is not None:
        q = q.where(t.c.model == model)
    if version is not None:
        q = q.where(t.c.model_version == version)
    merged: dict[tuple[str, str, float], Summary] = {}
    with engine.connect() as conn:
        for r in conn.execute(q):
            key = (r.model, r.model_version, r.bucket_start)
            s = Summary.decode(r.payload)
            if key in merged:
                merged[key].merge(s, sample_size=sample_size)
            else:
                merged[key] = s
    return [Bucket(m, v, b, s) for (m, v, b), s in sorted(merged.items())]


def overlapping(since: float, until: float) -> tuple[sa.ColumnElement[bool], ...]:
    """The summary rows whose bucket overlaps [since, until): a period that starts
    inside a bucket (the last 24 h from a cron run at 07:00:00.05) keeps that bucket
    rather than dropping its hour."""
    t = window_summaries
    return (t.c.bucket_start + t.c.bucket_s > since, t.c.bucket_start < until)


def version_traffic(engine: sa.Engine, since: float, until: float) -> dict[str, dict[str, dict]]:
    """Per model, per version: events, first and last bucket start, in a time range."""
    t = window_summaries
    q = (sa.select(t.c.model, t.c.model_version, sa.func.sum(t.c.n).label("n"),
                   sa.func.min(t.c.bucket_start).label("first"),
                   sa.func.max(t.c.bucket_start).label("last"))
         .where(*overlapping(since, until))
         .group_by(t.c.model, t.c.model_version))
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    with engine.connect() as conn:
        for r in conn.execute(q):
            out[r.model][r.model_version] = {"n": int(r.n or 0), "first": float(r.first),
                                             "last": float(r.last)}
    return dict(out)


def first_bucket(engine: sa.Engine, model: str) -> float | None:
    t = window_summaries
    with engine.connect() as conn:
        v = conn.execute(sa.select(sa.func.min(t.c.bucket_start)).where(t.c.model == model)).scalar()
    return None if v is None else float(v)


def delete_before(engine: sa.Engine, cutoff: float) -> int:
    t = window_summaries
    with engine.begin() as conn:
        return int(conn.execute(t.delete().where(t.c.bucket_start < cutoff)).rowcount or 0)


def compact(engine: sa.Engine, before: float, sample_size: int) -> int:
    """Merge the partition rows of each closed bucket (start < ``before``) into one row
    (scope ``*``). Rows changed meanwhile by a checkpoint abort that bucket's merge;
    the next run retries it. Returns the number of rows removed."""
    t = window_summaries
    with engine.connect() as conn:
        keys = conn.execute(
            sa.select(t.c.model, t.c.model_version, t.c.bucket_start, t.c.bucket_s)
            .where(t.c.bucket_start < before)
            .group_by(t.c.model, t.c.model_version, t.c.bucket_start, t.c.bucket_s)
            .having(sa.func.count() > 1)
        ).all()
    removed = 0
    for model, version, bucket, bucket_s in keys:
        try:
            with engine.begin() as conn:
                rows = conn.execute(sa.select(t.c.id, t.c.rev, t.c.payload).where(
                    t.c.model == model, t.c.model_version == version,
                    t.c.bucket_start == bucket)).all()
                merged = merge_all((Summary.decode(r.payload) for r in rows),
                                   sample_size=sample_size)
                for r in rows:
                    if not conn.execute(t.delete().where(t.c.id == r.id, t.c.rev == r.rev)).rowcount:
                        raise _ChangedError
                conn.execute(t.insert().values(
                    model=model, model_version=version, bucket_start=bucket, bucket_s=bucket_s,
                    scope="*", n=merged.n, rev=0, payload=merged.encode(),
                    updated_at=datetime.now(UTC)))
                removed += len(rows) - 1
        except _ChangedError:
            continue
    return removed


class _ChangedError(Exception):
    pass
