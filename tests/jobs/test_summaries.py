"""Window summaries: collected by the pipeline, stored with the checkpoint, merged
by addition, and exact after a crash."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest
import sqlalchemy as sa

from detectors.event import Event
from monitor.checkpoint import Checkpointer
from monitor.pipeline import Pipeline, Record
from monitor.store import Store
from monitor.summaries import Summary, load_buckets, merge_all
from tests.jobs.seeded import MONDAY, config, stream
from tests.lost_answer import AnswerLostStore


def _stored(url: str) -> dict:
    store = Store(url)
    buckets = load_buckets(store.engine, None, 0, 2e10)
    store.close()
    return {(b.model, b.version, b.start): (b.summary.n, dict(b.summary.classes),
                                            {k: (v.n, dict(v.buckets)) for k, v in
                                             b.summary.features.items()},
                                            [s[1] for s in b.summary.sample])
            for b in buckets}


def _uninterrupted(tmp_path: Path, batches: list[tuple[tuple[str, int], list[Record]]]) -> str:
    """The URL of a store holding the summaries of ``batches`` processed and saved
    once, without a fault."""
    url = f"sqlite:///{tmp_path / 'straight.db'}"
    store = Store(url)
    store.migrate()
    p = Pipeline(config(url, str(tmp_path)))
    for pid, records in batches:
        p.process(pid, records)
    Checkpointer(store, p, group="g", producer="a").save()
    store.close()
    return url


def test_summaries_after_a_crash_equal_an_uninterrupted_run(tmp_path: Path) -> None:
    events = list(stream(model="m", version="1", start=MONDAY, hours=3, per_hour=800, seed=1))
    records = [Record(i, msgspec.json.encode(e)) for i, e in enumerate(events)]
    pid = ("logs", 0)

    straight_url = f"sqlite:///{tmp_path / 'straight.db'}"
    cfg = config(straight_url, str(tmp_path))
    store = Store(straight_url)
    store.migrate()
    p = Pipeline(cfg)
    cp = Checkpointer(store, p, group="g", producer="a")
    cp.restore([pid])
    for i in range(0, len(records), 500):
        p.process(pid, records[i:i + 500])
        cp.save()

    crash_url = f"sqlite:///{tmp_path / 'crash.db'}"
    cfg2 = config(crash_url, str(tmp_path))
    store2 = Store(crash_url)
    store2.migrate()
    first = Pipeline(cfg2)
    Checkpointer(store2, first, group="g", producer="a").restore([pid])
    first.process(pid, records[:1000])
    Checkpointer(store2, first, group="g", producer="a").save()
    first.process(pid, records[1000:1700])  # processed, never checkpointed: kill -9
    second = Pipeline(cfg2)
    resume = Checkpointer(store2, second, group="g", producer="a").restore([pid])
    assert resume == {pid: 1000}
    second.process(pid, records[1000:])
    Checkpointer(store2, second, group="g", producer="a").save()

    straight, crashed = _stored(straight_url), _stored(crash_url)
    assert sum(v[0] for v in straight.values()) == len(events)
    assert crashed == straight  # counts, sketches and the bottom-k sample


def test_a_checkpoint_whose_commit_went_unacknowledged_is_not_counted_twice(
    store_url: str, tmp_path: Path,
) -> None:
    events = list(stream(model="m", version="1", start=MONDAY, hours=2, per_hour=800, seed=3))
    records = [Record(i, msgspec.json.encode(e)) for i, e in enumerate(events)]
    pid = ("logs", 0)
    store = AnswerLostStore(store_url)
    store.migrate()
    p = Pipeline(config(store_url, str(tmp_path)))
    cp = Checkpointer(store, p, group="g", producer="a")
    cp.restore([pid])
    p.process(pid, records[:500])
    cp.save()
    p.process(pid, records[500:900])
    store.lose_next = True
    with pytest.raises(sa.exc.OperationalError):
        cp.save()  # stored, but the checkpointer cannot know it
    p.process(pid, records[900:1300])
    cp.save()
    p.process(pid, records[1300:])
    cp.save()
    store.close()

    stored = _stored(store_url)
    assert sum(v[0] for v in stored.values()) == len(events)
    # counts, sketches and the bottom-k sample
    assert stored == _stored(_uninterrupted(tmp_path, [(pid, records)]))


def test_a_repeated_checkpoint_counts_nothing_twice_after_the_compaction(
    store_url: str, tmp_path: Path,
) -> None:
    """The answer of a checkpoint's commit is lost, and before the next save repeats
    it, the daily compaction merges its buckets' partition rows into one: the repeat
    must still recognise the batch as merged."""
    from monitor.summaries import compact
    from tests.jobs.seeded import DAY

    events = list(stream(model="m", version="1", start=MONDAY, hours=2, per_hour=800, seed=5))
    records = [Record(i, msgspec.json.encode(e)) for i, e in enumerate(events)]
    pids = [("logs", 0), ("logs", 1)]
    cfg = config(store_url, str(tmp_path))
    store = AnswerLostStore(store_url)
    store.migrate()
    p = Pipeline(cfg)
    cp = Checkpointer(store, p, group="g", producer="a")
    cp.restore(pids)
    cuts = [(0, 400), (400, 800), (800, 1000), (1000, 1200), (1200, 1400), (1400, 1600)]
    for n, (a, b) in enumerate(cuts):
        p.process(pids[n % 2], records[a:b])
        if n == 3:
            store.lose_next = True
            with pytest.raises(sa.exc.OperationalError):
                cp.save()  # stored, but the checkpointer cannot know it
            assert compact(store.engine, MONDAY + DAY, cfg.jobs.summaries.sample_size) > 0
        elif n % 2:
            cp.save()
    cp.save()
    store.close()

    stored = _stored(store_url)
    expected = _stored(_uninterrupted(
        tmp_path, [(pids[n % 2], records[a:b]) for n, (a, b) in enumerate(cuts)]))
    assert sum(v[0] for v in stored.values()) == len(events)
    # counts and sketches; the compaction kept only a bottom-k of the merged samples,
    # but no sampled event is there twice
    assert {k: v[:3] for k, v in stored.items()} == {k: v[:3] for k, v in expected.items()}
    for *_, sample in stored.values():
        assert len(sample) == len(set(sample))


def test_summaries_merge_by_addition_in_any_order() -> None:
    events = [msgspec.convert(e, type=Event) for e in
              stream(model="m", version="1", start=MONDAY, hours=1, per_hour=3000, seed=2)]
    whole = Summary()
    whole.add_events(events, sample_size=100, max_categories=10)
    parts = [Summary() for _ in range(3)]
    for i, part in enumerate(parts):
        part.add_events(events[i::3], sample_size=100, max_categories=10)
    merged = merge_all(reversed(parts), sample_size=100)
    assert merged.n == whole.n == 3000
    assert merged.classes == whole.classes
    assert merged.features["amount"].buckets == whole.features["amount"].buckets
    assert merged.categories == whole.categories == {"country": {"de": 1000, "fr": 1000,
                                                                 "us": 1000}}
    assert np.array_equal(merged.confidence, whole.confidence)
    assert [s[1] for s in merged.sample] == [s[1] for s in whole.sample]
    # the sketch answers quantiles within its ~2 % relative accuracy
    amounts = np.array([e.features["amount"] for e in events])
    for q in (0.1, 0.5, 0.9):
        exact = float(np.quantile(amounts, q))
        assert abs(merged.features["amount"].quantile(q) - exact) <= 0.03 * abs(exact) + 0.01


def test_cleanup_drops_expired_buckets_and_merges_partition_rows(store_url: str,
                                                                  tmp_path: Path) -> None:
    from monitor.scheduler import JobService
    from monitor.store import window_summaries
    from tests.jobs.seeded import DAY, ingest

    cfg = config(store_url, str(tmp_path), summaries={"retention_days": 3,
                                                      "compact_after_s": 3600})
    events = list(stream(model="m", version="1", start=MONDAY, hours=5 * 24, per_hour=20,
                         seed=4))
    ingest(cfg, events, partitions=3, every=700)
    now = MONDAY + 5 * DAY
    store = Store(store_url)
    before = {b.start: b.summary.n for b in load_buckets(store.engine, "m", 0, now)}
    assert sum(before.values()) == len(events)

    result = JobService(cfg, store, instance_id="t").run_job("cleanup", now=now)
    assert result.ok and result.message.startswith("cleanup: removed ")

    with store.engine.connect() as conn:
        rows = conn.execute(window_summaries.select()).all()
    kept = {b.start: b.summary.n for b in load_buckets(store.engine, "m", 0, now)}
    assert min(kept) >= now - 3 * DAY  # retention
    assert kept == {t: n for t, n in before.items() if t >= now - 3 * DAY}  # nothing lost
    old = [r for r in rows if r.bucket_start < now - 3600]
    assert {r.scope for r in old} == {"*"}  # one merged row per closed bucket
    assert len(old) == len({r.bucket_start for r in old})

    # a late event for a merged bucket still counts once
    late = [dict(events[-100], request_id="late", ts=now - 2 * DAY + 1)]
    ingest(cfg, late, partitions=1)
    after = {b.start: b.summary.n for b in load_buckets(store.engine, "m", 0, now)}
    bucket = now - 2 * DAY
    assert after[bucket] == kept[bucket] + 1
    store.close()


def test_a_partition_moving_to_another_replica_is_counted_once(tmp_path: Path) -> None:
    """Replica A loses partition 1 without a fresh checkpoint (the store was down at
    the revoke); replica B re-reads it from the stored offset. The fleet's stored
    summaries equal one uninterrupted reader's."""
    events = list(stream(model="m", version="1", start=MONDAY, hours=2, per_hour=1500, seed=8))
    parts = {0: [], 1: []}
    for e in events:
        parts[int(e["client_id"][1:]) % 2].append(e)
    recs = {p: [Record(i, msgspec.json.encode(e)) for i, e in enumerate(evs)]
            for p, evs in parts.items()}
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    cfg = config(url, str(tmp_path))
    store = Store(url)
    store.migrate()
    p0, p1 = ("logs", 0), ("logs", 1)

    a = Pipeline(cfg)
    cp_a = Checkpointer(store, a, group="g", producer="a")
    cp_a.restore([p0, p1])
    a.process(p0, recs[0][:800])
    a.process(p1, recs[1][:800])
    cp_a.save()
    a.process(p1, recs[1][800:1200])  # then the revoke's checkpoint fails
    a.release(p1)
    b = Pipeline(cfg)
    cp_b = Checkpointer(store, b, group="g", producer="b")
    assert cp_b.restore([p1]) == {p1: 800}
    b.process(p1, recs[1][800:])
    cp_b.save()
    a.process(p0, recs[0][800:])
    cp_a.save()

    stored = merge_all(b.summary for b in load_buckets(store.engine, "m", 0, 2e10))
    whole = Summary()
    whole.add_events([msgspec.convert(e, type=Event) for e in events], sample_size=10_000,
                     max_categories=50)
    assert stored.n == whole.n == len(events)
    assert stored.classes == whole.classes
    assert stored.features["amount"].buckets == whole.features["amount"].buckets
    store.close()
