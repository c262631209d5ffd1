"""Prometheus metrics of the daemon. A client id is never a label (unbounded)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """All metrics on one registry (one per daemon, so tests can run several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "inferwatch_events_total", "Events read, by model and result (ok or bad).",
            ["model", "result"], registry=r,
        )
        self.bad_records = Counter(
            "inferwatch_bad_records_total", "Records skipped as bad input, by reason.",
            ["reason"], registry=r,
        )
        self.dead_lettered = Counter(
            "inferwatch_dead_letter_records_total", "Bad records written to the dead-letter topic.",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "inferwatch_batch_seconds", "Time to process one polled batch.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r,
        )
        self.checkpoint_seconds = Histogram(
            "inferwatch_checkpoint_seconds", "Time to write one checkpoint to the store.",
            registry=r,
        )
        self.checkpoint_failures = Counter(
            "inferwatch_checkpoint_failures_total",
            "Checkpoints that failed (the store unreachable, or dead-letter copies unacknowledged).",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "inferwatch_consumer_lag", "Records between the consumed position and the partition end.",
            ["topic", "partition"], registry=r,
        )
        self.alerts = Counter(
            "inferwatch_alerts_total", "Alert records emitted, by kind, severity and status.",
            ["kind", "severity", "status"], registry=r,
        )
        self.notifications = Counter(
            "inferwatch_notifications_total", "Alert records delivered by sink, by result.",
            ["sink", "result"], registry=r,
        )
        # alert receivers (alerts/notify.py): Slack channels, webhooks
        self.receiver_notifications = Counter(
            "inferwatch_receiver_notifications_total",
            "Notifications (Slack messages, webhook posts) by receiver and result: sent or the "
            "failure reason (rate_limited, server_error, connection_error, invalid_auth, …).",
            ["receiver", "result"], registry=r,
        )
        self.receiver_queue_depth = Gauge(
            "inferwatch_receiver_queue_depth", "Notifications stored but not yet sent, by receiver.",
            ["receiver"], registry=r,
        )
        self.receiver_delivery_seconds = Histogram(
            "inferwatch_receiver_delivery_seconds",
            "From queueing a notification (its group was due) to the receiver accepting it.",
            ["receiver"], buckets=(0.1, 0.5, 1, 2.5, 10, 30, 60, 300, 900, 3600), registry=r,
        )
        self.receiver_blocked = Gauge(
            "inferwatch_receiver_blocked",
            "1 while a receiver is stopped by a permanent error (bad token, unknown channel).",
            ["receiver"], registry=r,
        )
        self.outbox_depth = Gauge(
            "inferwatch_outbox_depth", "Alert records stored but not yet delivered, by sink.",
            ["sink"], registry=r,
        )
        self.tracked_clients = Gauge(
            "inferwatch_tracked_clients",
            "Per-client detector states held in memory (with linkage on, per address and "
            "per query-fingerprint cell too).", registry=r,
        )
        self.watermark = Gauge(
            "inferwatch_watermark_seconds", "Event time up to which model-wide windows are closed.",
            registry=r,
        )
        self.watermark_partitions = Gauge(
            "inferwatch_watermark_partitions",
            "Partitions the watermark waits for (unread records, or an end unsure after an "
            "outage or a pause); 0 once every partition is caught up.", registry=r,
        )
