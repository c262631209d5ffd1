"""Drift references in the store, and how they are made.

A reference (``detectors.reference.Reference``) is stored as JSON in the
``drift_references`` table, one row per build; the newest row for a (model,
version) wins, and version ``""`` serves every version of the model. Others read
it with :func:`load_reference` (the weekly report compares windows with it).

Sources:

- a file of training or validation data: CSV, Parquet or JSONL
  (``inferwatch reference build --model M FILE``, ``monitor.reference_file``);
  every column is a feature except the prediction / confidence / label columns
  named on the command line;
- a pinned production period: a JSONL archive of inference-log events (the
  event contract) with ``--since``/``--until`` in event time (the same module);
- automatic: with nothing stored, the drift detector builds one from the first
  ``detectors.drift.reference_events`` events of a model version; the daemon
  logs it and stores it here at the next checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from detectors.attack import ClientAttack
from detectors.drift import DistributionDrift, ReferenceSet
from detectors.keyed import Keyed
from detectors.out_of_range import OutOfRangeShare
from detectors.reference import Reference
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
