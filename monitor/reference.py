"""Drift references in the store, and how they are made.

A reference (``detectors.reference.Reference``) is stored as JSON in the
``drift_references`` table, one row per build; the newest row for a (model,
version) wins, and version ``""`` serves every version of the model. Others read
it with :func:`load_reference` (the weekly report compares windows with it).

Sources:

- a file of training or validation data: CSV, Parquet or JSONL
  (``inferwatch reference build --model M FILE``); every column is a feature
  except the prediction / confidence / label columns named on the command line;
- a pinned production period: a JSONL archive of inference-log events (the
  event contract) with ``--since``/``--until`` in event time;
- automatic: with nothing stored, the drift detector builds one from the first
  ``detectors.drift.reference_events`` events of a model version; the daemon
  logs it and stores it here at the next checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from detectors.attack import ClientAttack
from detectors.drift import DistributionDrift, ReferenceSet
from detectors.keyed import Keyed
from detectors.out_of_range import OutOfRangeShare
from detectors.reference import CONFIDENCE, PREDICTION, Reference, build_reference
from monitor.store import Store, metadata

log = logging.getLogger(__name__)

references = sa.Table(
    "drift_references", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("model", sa.String(1024), nullable=False),
    sa.Column("model_version", sa.String(1024), nullable=False),  # "" = every version
    sa.Column("source", sa.String(2048), nullable=False),
    sa.Column("n_events", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # Reference.to_dict() as JSON
)
sa.Index("ix_drift_references_model", references.c.model, references.c.model_version,
         references.c.id)


def save_reference(store: Store, ref: Reference) -> int:
    """Store ``ref`` (it becomes the newest for its model and version); return its id."""
    with store.engine.begin() as conn:
        result = conn.execute(references.insert().values(
            model=ref.model, model_version=ref.model_version, source=ref.source,
            n_events=ref.n, created_at=datetime.now(UTC), payload=json.dumps(ref.to_dict())))
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def load_reference(store: Store, model: str, version: str = "") -> Reference | None:
    """The newest reference for ``model`` at ``version``, else for every version."""
    with store.engine.connect() as conn:
        for v in dict.fromkeys([version, ""]):
            row = conn.execute(
                sa.select(references.c.payload)
                .where(references.c.model == model, references.c.model_version == v)
                .order_by(references.c.id.desc()).limit(1)).first()
            if row is not None:
                return Reference.from_dict(json.loads(row.payload))
    return None


def list_references(store: Store) -> list[dict[str, Any]]:
    """Every stored reference, newest first (id, model, version, source, events, created)."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(references.c.id, references.c.model, references.c.model_version,
                      references.c.source, references.c.n_events, references.c.created_at)
            .order_by(references.c.id.desc())).all()
    return [dict(r._mapping) for r in rows]


def load_references(store: Store) -> ReferenceSet:
    """The newest built reference (file or pinned period) per (model, version), for
    the drift detectors. Automatic references are stored for the reports only: a
    detector builds its own again, so a restarted or replayed run decides alike."""
    newest: dict[tuple[str, str], int] = {}
    for row in list_references(store):
        if row["source"] != "auto":
            newest.setdefault((row["model"], row["model_version"]), row["id"])
    if not newest:
        return ReferenceSet([])
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(references.c.payload)
                            .where(references.c.id.in_(list(newest.values())))).all()
    return ReferenceSet([Reference.from_dict(json.loads(r.payload)) for r in rows])


# -- the daemon's side ------------------------------------------------------------------
def drift_detectors(model_detectors: Iterable[Keyed]) -> list[Keyed]:
    return [k for k in model_detectors if isinstance(k.prototype, DistributionDrift)]


def apply_references(model_detectors: Iterable[Keyed], refs: ReferenceSet) -> None:
    """Give the drift detectors the stored references: every model version seen
    from now on, and those still collecting an automatic reference, use them.
    With none stored, nothing changes (the detectors' config stays as built)."""
    if not len(refs):
        return
    for keyed in drift_detectors(model_detectors):
        proto = keyed.prototype
        assert isinstance(proto, DistributionDrift)
        proto.references = refs
        for slot in keyed.slots.values():
            det = slot.detector
            assert isinstance(det, DistributionDrift)
            det.references = refs
            found = refs.get(slot.model, slot.model_version)
            if det.reference is None and found is not None:
                det.set_reference(found)


def apply_client_references(client_detectors: Iterable[Keyed], refs: ReferenceSet) -> None:
    """Give the per-client out-of-range signals the stored references: the prototypes
    (and so every client created or unpacked from now on) and the live clients."""
    for keyed in client_detectors:
        live = (slot.detector for slot in keyed.slots.values() if slot.detector is not None)
        for det in (keyed.prototype, *live):
            if isinstance(det, ClientAttack):
                for signal in det.signals:
                    if isinstance(signal, OutOfRangeShare):
                        signal.references = refs


def collect_new_references(model_detectors: Iterable[Keyed]) -> list[Reference]:
    """Log what the drift detectors announced (automatic references built) and
    return the references built since the last call, for the store."""
    built: list[Reference] = []
    for keyed in drift_detectors(model_detectors):
        for slot in keyed.slots.values():
            det = slot.detector
            assert isinstance(det, DistributionDrift)
            if det.notices:
                for notice in det.notices:
                    log.info("%s@%s: %s", slot.model, slot.model_version, notice)
                det.notices.clear()
                if det.reference is not None and det.reference.source == "auto":
                    built.append(det.reference)
    return built


def save_new_references(store: Store, built: list[Reference]) -> None:
    """Store the automatic references the pipeline collected (best effort: the
    detectors keep using theirs, checkpointed with their state); drained on success."""
    while built:
        try:
            save_reference(store, built[0])
        except sa.exc.SQLAlchemyError as exc:
            log.warning("could not store the drift reference of %s@%s (%s); will retry",
                        built[0].model, built[0].model_version, type(exc).__name__)
            return
        log.info("stored the automatic drift reference of %s@%s (%d events)",
                 built[0].model, built[0].model_version, built[0].n)
        del built[0]


# -- building from files ------------------------------------------------------------------
def _read_table(path: Path) -> list[dict[str, Any]]:
    import pandas as pd  # imported here: only the command line needs it

    suffix = "".join(path.suffixes[-2:]).lower()
    if suffix.endswith(".csv") or suffix.endswith(".csv.gz"):
        frame = pd.read_csv(path)
    elif suffix.endswith(".parquet") or suffix.endswith(".pq"):
        frame = pd.read_parquet(path)
    elif suffix.endswith((".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz")):
        # not pandas: it would turn "2" into 2 and timestamps into datetimes
        from monitor.replay import open_archive

        rows = []
        with open_archive(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError as exc:  # not JSON, or not UTF-8
                        raise ValueError(
                            f"{path}:{lineno}: not JSON ({getattr(exc, 'msg', exc)})") from None
        return rows
    else:
        raise ValueError(f"{path}: unknown format (use .csv, .parquet or .jsonl, "
                         ".jsonl.gz)")
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_dict(orient="records")


def _ts(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def reference_from_file(
    path: str | Path,
    *,
    model: str,
    model_version: str = "",
    prediction_column: str | None = None,
    confidence_column: str | None = None,
    drop_columns: Sequence[str] = (),
    since: float | None = None,
    until: float | None = None,
    **layout_options: Any,
) -> Reference:
    """A reference from a table of feature rows, or from archived events.

    Rows that carry a ``features`` object are read as inference-log events (the
    event contract): only ``model`` (and ``model_version`` when given) within
    [``since``, ``until``) count, and their prediction and confidence go in too.
    Other files are plain tables: one column per feature.
    """
    path = Path(path)
    table = _read_table(path)
    events = bool(table) and isinstance(table[0].get("features"), Mapping)
    rows: list[dict[str, Any]] = []
    start = end = None
    for rec in table:
        if events:
            if rec.get("model") != model or (model_version and
                                             rec.get("model_version") != model_version):
                continue
            ts = _ts(rec.get("ts"))
            if ts is None or (since is not None and ts < since) or (
                    until is not None and ts >= until):
                continue
            start = ts if start is None else min(start, ts)
            end = ts if end is None else max(end, ts)
            row = dict(rec.get("features") or {})
            if rec.get("prediction") is not None:
                row[PREDICTION] = rec["prediction"]
            if rec.get("confidence") is not None:
                row[CONFIDENCE] = rec["confidence"]
        else:
            row = {k: v for k, v in rec.items() if k not in drop_columns}
            if prediction_column is not None:
                row[PREDICTION] = row.pop(prediction_column, None)
            if confidence_column is not None:
                row[CONFIDENCE] = row.pop(confidence_column, None)
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows for model {model!r}"
                         + (f" version {model_version!r}" if model_version else ""))
    source = (f"pinned:{path.name}:{since}..{until}" if events else f"file:{path.name}")
    return build_reference(rows, model=model, model_version=model_version, source=source,
                           start=start, end=end, **layout_options)
