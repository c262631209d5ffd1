"""A model version building its drift reference holds its first events raw; a
checkpoint stores only the rows added since the previous one, and a restart gets
every row back (``monitor.row_chunks``), on SQLite and on PostgreSQL."""

from __future__ import annotations

import pickle
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import sqlalchemy as sa

from detectors.drift import DistributionDrift
from detectors.raw_rows import RawRows
from monitor import row_chunks
from monitor.checkpoint import Checkpointer
from monitor.config import build_config
from monitor.pipeline import Pipeline, Record
from monitor.row_chunks import ChunkError, RowChunks
from monitor.store import Store
from tests.lost_answer import AnswerLostStore

PID = ("logs", 0)
VERSIONS = 3
CONFIG = build_config({}, env={})


def _records(start: int, n: int, seed: int) -> list[Record]:
    """``n`` events from offset ``start``, one a second, over ``VERSIONS`` versions
    of one model, 25 float features each."""
    rng = np.random.default_rng(seed)
    return [Record(i, msgspec.json.encode({
        "ts": 1_767_225_600.0 + i, "model": "m", "model_version": str(i % VERSIONS),
        "client_id": f"c{i % 7}", "features": {f"f{j:02d}": float(rng.normal()) for j in range(25)},
        "prediction": int(rng.integers(10)), "confidence": float(rng.random())}))
        for i in range(start, start + n)]


def _warming(p: Pipeline) -> dict[str, list[dict[str, Any]]]:
    """Each drift detector's warm-up rows, by model version."""
    return {key[1]: slot.detector._ref_rows.values()
            for keyed in p.models.detectors for key, slot in keyed.slots.items()
            if isinstance(slot.detector, DistributionDrift)}


def _chunks(store: Store) -> list[Any]:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT rows_id, seq, first_row, length(rows) AS size FROM state_chunks "
            "ORDER BY rows_id, seq")).all()


def _chunk_counts(store: Store) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in _chunks(store):
        counts[c.rows_id] = counts.get(c.rows_id, 0) + 1
    return counts


def _model_blob(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT length(state) FROM checkpoints WHERE scope LIKE 'models:%'")).scalar_one())


def _restored(store: Store) -> Pipeline:
    p = Pipeline(CONFIG)
    Checkpointer(store, p, group="g", producer="a").restore([PID])
    return p


def _saved(store: Store, n: int, seed: int) -> tuple[Pipeline, Checkpointer]:
    """A pipeline that read ``n`` events (``_records``) into a migrated ``store`` and
    saved them, with its checkpointer."""
    store.migrate()
    p = Pipeline(CONFIG)
    cp = Checkpointer(store, p, group="g", producer="a")
    p.process(PID, _records(0, n, seed=seed))
    p.advance()
    cp.save()
    return p, cp


def test_a_checkpoint_writes_only_the_warm_up_rows_added_since_the_last_and_a_restart_gets_all(
    store_url: str,
) -> None:
    store = Store(store_url)
    p, cp = _saved(store, 3000, seed=1)
    warming = _warming(p)
    assert len(warming) == VERSIONS and all(len(r) > 900 for r in warming.values())
    first = _chunks(store)
    assert len(first) == VERSIONS and all(c.first_row == 0 for c in first)
    assert _model_blob(store) < sum(c.size for c in first) / 10, "rows pickled with the state"

    offset = 3000
    for _ in range(row_chunks.MIN_CHUNKS + row_chunks.SPREAD):  # a quiet stretch: a few events
        # a checkpoint
        p.process(PID, _records(offset, 30, seed=offset))
        offset += 30
        p.advance()
        before = {(c.rows_id, c.seq) for c in _chunks(store)}
        cp.save()
        added = [c for c in _chunks(store) if (c.rows_id, c.seq) not in before]
        # 10 new rows a version, in ~3 KB, not the ~1,000 rows (~250 KB) each holds;
        # except when an id's chunks are written again as one
        assert all(c.first_row == 0 or c.size < 8_000 for c in added), added
        # an id's rows are written again as one at its own chunk limit: versions in step
        # do not all rewrite at one checkpoint
        assert all(c.seq % (row_chunks.chunk_limit(c.rows_id) - 1) == 0
                   for c in added if c.first_row == 0 and c.seq > 0), added
        assert all(n <= row_chunks.chunk_limit(r) for r, n in _chunk_counts(store).items())
        assert _warming(_restored(store)) == _warming(p)
    assert any(c.first_row == 0 and c.seq > 0 for c in _chunks(store)), "never written again"
    store.close()


def test_ids_spread_their_rewrites_over_every_limit() -> None:
    limits = Counter(row_chunks.chunk_limit(uuid.uuid4().hex) for _ in range(3200))
    assert sorted(limits) == list(range(row_chunks.MIN_CHUNKS,
                                        row_chunks.MIN_CHUNKS + row_chunks.SPREAD))
    assert max(limits.values()) < 3 * min(limits.values())


def test_the_chunks_go_once_the_reference_is_built_and_a_restart_goes_on_from_them(
    store_url: str,
) -> None:
    store = Store(store_url)
    p, _ = _saved(store, 9000, seed=2)
    assert len(_chunks(store)) == VERSIONS
    resumed = Pipeline(CONFIG)
    cp = Checkpointer(store, resumed, group="g", producer="a")
    cp.restore([PID])
    rest = _records(9000, 9000, seed=3)
    for q in (p, resumed):
        q.process(PID, rest)
        q.advance()
    assert not any(_warming(p).values()), "the references were not built"
    assert _states(resumed) == _states(p)
    cp.save()
    assert _chunks(store) == []
    store.close()


def test_chunks_a_state_no_longer_refers_to_go_with_the_next_save_of_its_scope(
    store_url: str,
) -> None:
    store = Store(store_url)
    store.migrate()
    records = _records(0, 3000, seed=6)
    for _ in range(2):  # two processes, one after the other, neither restoring
        p = Pipeline(CONFIG)
        p.process(PID, records)
        p.advance()
        Checkpointer(store, p, group="g", producer="a").save()
        assert len(_chunks(store)) == VERSIONS, "the first process's rows stayed"
    assert _warming(_restored(store)) == _warming(p)
    store.close()


def _states(p: Pipeline) -> list[Any]:
    """Each model-wide detector's evidence, and a drift detector's reference."""
    found = []
    for keyed in p.models.detectors:
        for slot in keyed.slots.values():
            det = slot.detector
            ref = det.reference if isinstance(det, DistributionDrift) else None
            found.append((det.evidence(), ref and (ref.layout, ref.counts)))
    return found


def test_a_failed_checkpoint_leaves_its_rows_to_the_next_one(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    p, cp = _saved(store, 1500, seed=4)
    p.process(PID, _records(1500, 600, seed=5))
    p.advance()
    with store.engine.begin() as conn:  # the store refuses the chunks: the save fails whole
        conn.execute(sa.text("ALTER TABLE state_chunks RENAME TO away"))
    with pytest.raises(sa.exc.OperationalError):
        cp.save()
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE away RENAME TO state_chunks"))
    assert _restored(store).partitions[PID].offset == 1500
    cp.save()
    assert _warming(_restored(store)) == _warming(p)
    store.close()


def test_a_save_whose_commit_was_not_acknowledged_is_written_again_and_leaves_nothing_behind(
    store_url: str,
) -> None:
    store = AnswerLostStore(store_url)
    p, cp = _saved(store, 1500, seed=8)
    p.process(PID, _records(1500, 1500, seed=9))  # a fourth version's rows start too
    p.process(PID, [Record(r.offset, r.value.replace(b'"model_version":"0"', b'"model_version":"3"'))
                    for r in _records(3000, 300, seed=10)])
    p.advance()
    store.lose_next = True
    with pytest.raises(sa.exc.OperationalError):
        cp.save()  # stored, but the checkpointer cannot know it
    assert len(_chunk_counts(store)) == VERSIONS + 1
    cp.save()  # the same chunks again, and the new version's rows under a new id
    assert sorted(_chunk_counts(store).values()) == [1, 2, 2, 2], "unacknowledged rows stayed"
    assert _warming(_restored(store)) == _warming(p)
    store.close()


def test_a_state_of_format_5_with_its_rows_inside_is_read_and_its_rows_then_stored_apart(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    p, _ = _saved(store, 3000, seed=7)
    with store.engine.begin() as conn:  # as the release of format 5 stored it
        conn.execute(sa.text("DELETE FROM state_chunks"))
        conn.execute(sa.text("UPDATE checkpoints SET state = :s WHERE scope LIKE 'models:%'"),
                     {"s": pickle.dumps((5, p.models))})
    resumed = Pipeline(CONFIG)
    cp = Checkpointer(store, resumed, group="g", producer="a")
    cp.restore([PID])
    assert _warming(resumed) == _warming(p)
    cp.save()
    assert len(_chunks(store)) == VERSIONS
    assert _warming(_restored(store)) == _warming(p)
    store.close()


def test_rows_met_twice_are_stored_once_and_chunks_that_miss_rows_are_refused() -> None:
    rows = RawRows()
    rows.extend([({"x": 1.0}, 1, 0.5), ({"x": 2.0}, 0, 0.7)])
    chunks = RowChunks()
    blob, writes = chunks.dump("s", {"a": rows, "b": [rows]})
    assert len(writes.add) == 1
    stored = [(r, q, f, b) for _, r, q, f, b in writes.add]
    got = RowChunks().load("s", blob, stored)
    assert got["a"] is got["b"][0] and got["a"].values() == rows.values()
    chunks.committed()
    rows.extend([({"x": 3.0}, 1, 0.1)])
    blob, writes = chunks.dump("s", rows)
    newer = [(r, q, f, b) for _, r, q, f, b in writes.add]
    assert [f for _, _, f, _ in newer] == [2], "only the new row"
    assert RowChunks().load("s", blob, stored + newer).values() == rows.values()
    with pytest.raises(ChunkError, match="2 stored, the state holds 3"):
        RowChunks().load("s", blob, stored)  # the newer chunk lost
    with pytest.raises(ChunkError, match="starts at row 2, after 0"):
        RowChunks().load("s", blob, newer)
