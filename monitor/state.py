"""Detector state of the pipeline: per partition (per-client detectors) and per
replica (model-wide detectors), each picklable for checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field

from detectors.allow import AllowListed
from detectors.attack import ClientAttack, SourceAttack
from detectors.base import Detector
from detectors.confidence import ConfidenceDrift
from detectors.coverage import QueryCoverage
from detectors.drift import DistributionDrift, ReferenceSet
from detectors.fingerprint import CellAttack, FingerprintKeyed
from detectors.flooding import RequestRate
from detectors.keyed import Keyed, KeyKind
from detectors.neighbours import QueryNeighbours
from detectors.out_of_range import OutOfRangeShare
from detectors.probing import LowConfidenceShare
from detectors.rules import CountRule
from monitor.config import Config
from monitor.versions import MODEL_IDLE_S, ModelVersions

PartitionId = tuple[str, int]


def client_detectors(config: Config, references: ReferenceSet | None = None) -> list[Keyed]:
    """Per-client detectors. Clients are keyed to partitions, so this state lives
    with its partition and moves with it on a rebalance. ``references`` are the
    stored drift references (the out-of-range signal's ranges)."""
    d, s = config.detectors, config.state
    protos: list[Detector] = []  # in verdict priority: the first to fire names the alert
    n = d.neighbours

    def neighbours(min_hits: int) -> QueryNeighbours:
        return QueryNeighbours(history=n.history, dims=n.dims, radius=n.radius, groups=n.groups,
                               sparse_groups=n.sparse_groups, min_neighbours=n.min_neighbours,
                               halvings=n.halvings, sparse_steps=n.sparse_steps,
                               star_steps=n.star_steps, star_radius=n.star_radius,
                               min_hits=min_hits, window_s=n.window_s,
                               boundary_only=n.boundary_only, low_confidence=n.low_confidence,
                               burst_s=n.burst_s)

    if n.enabled:
        protos.append(neighbours(n.min_hits))
    if d.probing.enabled:
        b = d.probing
        protos.append(LowConfidenceShare(window_s=b.window_s, low_confidence=b.low_confidence,
                                         min_queries=b.min_queries, max_share=b.max_share))
    if d.out_of_range.enabled:
        r = d.out_of_range
        protos.append(OutOfRangeShare(window_s=r.window_s, min_queries=r.min_queries,
                                      max_share=r.max_share, margin=r.margin,
                                      references=references))
    if d.flooding.enabled:
        protos.append(RequestRate(window_s=d.flooding.window_s, max_events=d.flooding.max_events))
    if d.coverage.enabled:
        c = d.coverage
        protos.append(QueryCoverage(window_s=c.window_s, min_queries=c.min_queries,
                                    min_distinct=c.min_distinct, min_classes=c.min_classes))
    protos.extend(CountRule(rule=r.name, kind=r.kind, severity=r.severity, atlas=tuple(r.atlas),
                            window_s=r.window_s, max_events=r.max_events, distinct=r.distinct,
                            models=tuple(r.models), clients=tuple(r.clients))
                  for r in d.rules)
    if not protos:
        return []

    # a client is kept at least as long as its longest window: dropped sooner (idle
    # for state.client_idle_s), a daily rule's count would start over after every
    # pause, and a thief pausing an hour between bursts would never reach it
    idle_s = max(s.client_idle_s, *(getattr(p, "window_s", 0.0) for p in protos))

    def keyed(attack: ClientAttack, key: KeyKind) -> Keyed:
        return AllowListed(attack, key=key, allow=d.allow_clients, idle_s=idle_s,
                           max_keys=s.max_clients, renotify_s=s.renotify_s,
                           pack_after_s=s.pack_idle_after_s)

    # one slot per client for all signals (detectors/attack.py); idle ones packed (Keyed)
    out = [keyed(ClientAttack(signals=tuple(protos)), "client")]
    if d.source_ip.enabled:
        # per address: the signals that a NAT's many ordinary users do not trip together
        # (not coverage or count rules: many users' inputs add up to a sweep), and its
        # own request budget
        per_ip: list[Detector] = [p for p in protos
                                  if isinstance(p, QueryNeighbours | LowConfidenceShare)]
        if d.flooding.enabled:
            per_ip.append(RequestRate(window_s=d.flooding.window_s,
                                      max_events=d.source_ip.max_events))
        if per_ip:
            out.append(keyed(SourceAttack(signals=tuple(per_ip),
                                          min_clients=d.source_ip.min_clients), "source_ip"))
    f = d.fingerprint
    if f.enabled and n.enabled:
        # per cell of similar inputs: near copies answered near the decision boundary
        # (a popular input's many users are no flood, nor a sweep); a busy cell sees
        # chance patterns, so it needs more hits than one client
        boundary = LowConfidenceShare(window_s=n.window_s, low_confidence=d.probing.low_confidence,
                                      min_queries=1, max_share=f.boundary_share)
        cell = CellAttack(signals=(neighbours(f.min_hits), boundary), min_clients=f.min_clients)
        out.append(FingerprintKeyed(cell, width=f.width, allow=d.allow_clients, idle_s=f.idle_s,
                                    max_keys=f.max_cells, renotify_s=s.renotify_s,
                                    pack_after_s=s.pack_idle_after_s))
    return out


def model_detectors(config: Config, references: ReferenceSet | None = None) -> list[Keyed]:
    """Model-wide detectors, keyed by (model, version), closed on the watermark;
    ``references`` are the stored drift references (monitor.reference)."""
    d, s = config.detectors, config.state
    protos: list[Detector] = []
    if d.confidence.enabled:
        c = d.confidence
        protos.append(ConfidenceDrift(
            bucket_s=c.bucket_s, lateness_s=d.lateness_s, reference_events=c.reference_events,
            delta=c.delta, min_effect=c.min_effect, min_bucket_events=c.min_bucket_events,
            reference_labels=c.reference_labels, min_labels=c.min_labels,
            z_threshold=c.z_threshold, min_accuracy_drop=c.min_accuracy_drop,
            min_calibration_shift=c.min_calibration_shift,
        ))
    if d.drift.enabled:
        f = d.drift
        protos.append(DistributionDrift(
            bucket_s=f.bucket_s, lateness_s=d.lateness_s, window_events=f.window_events,
            max_window_s=f.max_window_s, min_events=f.min_events,
            reference_events=f.reference_events, bins=f.bins, top_k=f.top_k,
            segment_by=f.segment_by, top_segments=f.top_segments,
            false_alarms=f.budget.false_alarms, budget_days=f.budget.days, cusum_k=f.cusum_k,
            min_psi=f.min_psi, min_mean_shift=f.min_mean_shift, fast_min_psi=f.fast_min_psi,
            clear_windows=f.clear_windows, predictions=f.predictions, references=references,
        ))
    return [Keyed(p, key="model", idle_s=MODEL_IDLE_S, max_keys=10_000, renotify_s=s.renotify_s)
            for p in protos]


@dataclass
class PartitionState:
    """Everything derived from one partition's events up to ``offset`` (next to read)."""

    detectors: list[Keyed]
    offset: int | None = None
    max_ts: float = float("-inf")
    next_tick: float = float("-inf")
    # the (model, version) pairs it tracks (events.max_model_versions)
    versions: ModelVersions = field(default_factory=ModelVersions)

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("versions", ModelVersions())  # stored before the limit


@dataclass
class ModelState:
    """Model-wide detectors of this replica and the watermark that closes their windows."""

    detectors: list[Keyed]
    watermark: float = float("-inf")
    partition_ts: dict[PartitionId, float] = field(default_factory=dict)
