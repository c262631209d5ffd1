"""Warm-up rows in the model-wide checkpoint, stored append-only.

A model version builds its automatic drift reference from its first events, kept
raw (``detectors.raw_rows.RawRows``) until there are enough: ~1 MiB for 5,000
25-feature events, held for hours by a quiet version. Pickled with the rest of
the model-wide state they would be written whole at every checkpoint (every
5 s): a hundred quiet versions, ~50 MiB each time.

Here the checkpoint's pickle refers to each ``RawRows`` by an id and a row count
(a ``reducer_override`` of the pickler; the unpickler's ``find_class`` resolves
the reference), and only the rows added since the previous checkpoint are
written, as one chunk of ``state_chunks``, in the checkpoint's transaction. A
restore joins the chunks up to that count. After 16 to 47 chunks (``chunk_limit``)
an id's next chunk holds all its rows and the older ones are dropped, so a restore
reads a bounded number of chunks; the chunks of rows the state no longer refers to
(a reference was built, or another process stored the scope before) are dropped.
"""

from __future__ import annotations

import io
import pickle
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from detectors.raw_rows import RawRows
from monitor.store import ChunkWrites

MIN_CHUNKS, SPREAD = 16, 32


def chunk_limit(rows_id: str) -> int:
    """How many chunks an id gets before its rows are written again as one: 16 to 47,
    by the id, so versions that warm up in step do not all rewrite at one checkpoint."""
    return MIN_CHUNKS + int(rows_id[:8], 16) % SPREAD


class ChunkError(ValueError):
    """Stored chunks that do not hold the rows the state refers to."""


def _stored_rows(rows_id: str, n: int) -> RawRows:
    """What the pickle calls for rows stored apart; ``RowChunks.load`` answers it
    with the stored rows, a plain ``pickle.loads`` gets this error."""
    raise ChunkError(f"rows {rows_id} are stored apart: read the state with RowChunks.load")


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, reference: Callable[[RawRows], tuple[str, int]]) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self.reference = reference

    def reducer_override(self, obj: Any) -> Any:
        # not called for the builtin containers and scalars: cheap on the rest of the state
        if type(obj) is RawRows and len(obj):
            return _stored_rows, self.reference(obj)
        return NotImplemented


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, rows: Callable[[str, int], RawRows]) -> None:
        super().__init__(file)
        self.rows = rows

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name == _stored_rows.__name__:
            return self.rows
        return super().find_class(module, name)


@dataclass(frozen=True)
class _Stored:
    """What the store holds of one ``RawRows``: under which scope and id, how many
    rows, in how many chunks, and the next chunk's number."""

    scope: str
    rows_id: str
    rows: int
    chunks: int
    seq: int


class RowChunks:
    """The stored chunks of one process's model-wide state, scope by scope."""

    def __init__(self) -> None:
        self._stored: WeakKeyDictionary[RawRows, _Stored] = WeakKeyDictionary()
        self._live: dict[str, set[str]] = {}  # scope -> the ids its stored state refers to
        self._pending: list[tuple[RawRows, _Stored]] = []
        self._pending_live: dict[str, set[str]] = {}

    def dump(self, scope: str, obj: object) -> tuple[bytes, ChunkWrites]:
        """``obj`` pickled with its ``RawRows`` by reference, and the chunk changes that
        must be stored in the same transaction; ``committed()`` once they are (until
        then, and if they never are, the stored chunks are as before)."""
        writes = ChunkWrites([], [], [], [])
        live: set[str] = set()
        for unsure in self._pending_live:  # the last save failed, or its commit went
            self._live.pop(unsure, None)  # unacknowledged: what the store holds is unknown
        self._pending, self._pending_live = [], {}

        def reference(rows: RawRows) -> tuple[str, int]:
            # once per object: the pickler's memo covers further references to it
            n, stored = len(rows), self._stored.get(rows)
            if stored is None or stored.scope != scope or n < stored.rows:
                stored = _Stored(scope, uuid.uuid4().hex, 0, 0, 0)
            if n > stored.rows:
                whole = stored.chunks + 1 >= chunk_limit(stored.rows_id)
                start = 0 if whole else stored.rows
                writes.add.append((scope, stored.rows_id, stored.seq, start,
                                   pickle.dumps(rows.since(start), pickle.HIGHEST_PROTOCOL)))
                if whole and stored.chunks:
                    writes.drop_before.append((scope, stored.rows_id, stored.seq))
                stored = _Stored(scope, stored.rows_id, n, 1 if whole else stored.chunks + 1,
                                 stored.seq + 1)
                self._pending.append((rows, stored))
            live.add(stored.rows_id)
            return stored.rows_id, n

        buf = io.BytesIO()
        _Pickler(buf, reference).dump(obj)
        if scope in self._live:  # what this scope's stored state referred to
            writes.drop = [(scope, r) for r in sorted(self._live[scope] - live)]
        else:  # unknown (another process stored it): only what this state refers to stays
            writes.keep_only = [(scope, sorted(live))]
        self._pending_live[scope] = live
        return buf.getvalue(), writes

    def committed(self) -> None:
        """The last ``dump``'s chunks are stored."""
        for rows, stored in self._pending:
            self._stored[rows] = stored
        self._live.update(self._pending_live)
        self._pending, self._pending_live = [], {}

    def load(self, scope: str, blob: bytes, chunks: list[tuple[str, int, int, bytes]]) -> Any:
        """The object ``dump`` pickled as ``blob``, its rows read from ``chunks``
        (``Store.load_chunks(scope)``)."""
        by_id: dict[str, list[tuple[int, int, bytes]]] = {}
        for rows_id, seq, first_row, data in chunks:
            by_id.setdefault(rows_id, []).append((seq, first_row, data))
        self._live[scope] = set(by_id)  # ids not referred to are dropped by the next save

        def rows(rows_id: str, n: int) -> RawRows:
            pieces: list[RawRows] = []
            total = 0
            for _, first_row, data in by_id.get(rows_id, []):
                if first_row != total:
                    raise ChunkError(f"rows {rows_id}: a chunk starts at row {first_row}, "
                                     f"after {total}")
                piece = pickle.loads(data)
                if not isinstance(piece, RawRows):
                    raise ChunkError(f"rows {rows_id}: a chunk holds {type(piece).__name__}")
                pieces.append(piece)
                total += len(piece)
            if total != n:
                raise ChunkError(f"rows {rows_id}: {total} stored, the state holds {n}")
            whole = RawRows.joined(pieces)
            found = by_id[rows_id]
            self._stored[whole] = _Stored(scope, rows_id, n, len(found), found[-1][0] + 1)
            return whole

        return _Unpickler(io.BytesIO(blob), rows).load()
