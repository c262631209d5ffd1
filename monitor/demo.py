"""``inferwatch demo``: the whole loop on one machine with no set-up.

An embedded Kafka-compatible broker on a free loopback port, synthetic traffic
(benign clients, a flooder, a boundary-probing attacker, a drift episode)
produced at 30x event-time speed, the real daemon consuming it, alerts on the
console and in a JSONL file, and a summary of what was caught.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import msgspec

from monitor.broker import BrokerUnavailableError, EmbeddedBroker, free_port
from monitor.config import Config, build_config
from monitor.synthetic import Scenario, events

TOPIC = "inference-logs"
WALL_SECONDS = 60.0


def demo_config(workdir: Path, bootstrap: str) -> Config:
    return build_config({
        "instance_id": "demo",
        "kafka": {"bootstrap_servers": [bootstrap], "topics": [TOPIC], "group_id": "inferwatch-demo",
                  "max_poll_interval_ms": 10_000, "session_timeout_ms": 6_000,
                  "poll_timeout_ms": 200},
        "store": {"url": f"sqlite:///{workdir / 'inferwatch.db'}"},
        "checkpoint": {"interval_s": 2.0},
        "http": {"host": "127.0.0.1", "port": free_port()},
        "alerts": {"jsonl": {"path": str(workdir / "alerts.jsonl")}},
        # minute buckets: the demo's half hour is the drift report's whole period
        "jobs": {"enabled": False, "summaries": {"bucket_s": 60}},
        "logging": {"level": "WARNING"},
    }, env={k: v for k, v in os.environ.items()  # Slack only when configured (README: Alerting)
            if k.startswith("INFERWATCH_ALERTS__")})


MIN_MINUTES = 15.0  # below this, the drift episode is too short for its windows (10 missed it)


def demo_scenario(minutes: float) -> Scenario:
    """The default 30-minute story, each episode at the same share of ``minutes``."""
    if minutes < MIN_MINUTES:
        raise ValueError(f"--minutes must be at least {MIN_MINUTES:g} (got {minutes:g}): the "
                         "flood, the attack and the drift episode each need a few minutes "
                         "of event time; --wall-seconds sets how long the demo takes")
    base = Scenario()
    share = minutes / base.minutes
    return Scenario(minutes=minutes, flood_from_min=base.flood_from_min * share,
                    flood_minutes=base.flood_minutes * share,
                    attack_from_min=base.attack_from_min * share,
                    drift_from_min=base.drift_from_min * share)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_demo(workdir: Path, *, minutes: float = 30.0, wall_seconds: float = WALL_SECONDS) -> int:

    from monitor.daemon import Daemon
    from monitor.logs import setup_logging

    setup_logging("WARNING")
    try:
        scenario = demo_scenario(minutes)
    except ValueError as exc:
        _say(f"inferwatch demo: {exc}")
        return 2
    if not wall_seconds > 0:
        _say(f"inferwatch demo: --wall-seconds must be more than 0 (got {wall_seconds:g})")
        return 2
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        for name in ("alerts.jsonl", "inferwatch.db", "inferwatch.db-wal", "inferwatch.db-shm",
                     "broker.log"):
            (workdir / name).unlink(missing_ok=True)
    except OSError as exc:
        _say(f"inferwatch demo: cannot use {workdir} as the work directory ({exc.strerror}); "
             "give another with --workdir")
        return 2
    evs = list(events(scenario))
    _say(f"inferwatch demo: {len(evs):,} inference-log events over {minutes:g} simulated "
         f"minutes, 2 models, {scenario.benign_clients} benign clients, a flooder "
         f"({scenario.flooder}), an extraction attacker ({scenario.attacker}) and a drift "
         f"episode on {scenario.drift_model} from minute {scenario.drift_from_min:.3g}.")
    try:
        broker = EmbeddedBroker(log_path=workdir / "broker.log").start()
    except BrokerUnavailableError as exc:
        _say(f"inferwatch demo: cannot start the embedded broker: {exc}")
        return 2
    daemon: Daemon | None = None
    thread: threading.Thread | None = None
    try:
        broker.create_topic(TOPIC, 3)
        _say(f"broker: Kafka protocol on {broker.bootstrap}, topic {TOPIC} (3 partitions)")
        config = demo_config(workdir, broker.bootstrap)
        daemon = Daemon(config)
        thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
        thread.start()
        _say(f"daemon: consumer group {config.kafka.group_id}, metrics on "
             f"http://127.0.0.1:{config.http.port}/metrics")
        _produce(broker.bootstrap, evs, scenario, daemon, wall_seconds)
        _drain(daemon, len(evs))
    except KeyboardInterrupt:
        _say("\ninterrupted: stopping the daemon and the broker")
        return 130
    finally:
        if daemon is not None:
            daemon.stopping.set()
        if thread is not None:
            thread.join(30)
        broker.stop()
    from monitor.drift_report import demo_report

    _say(demo_report(workdir, scenario.drift_model, scenario.start,
                     scenario.start + minutes * 60 + 60))
    return _summary(workdir, scenario)


def _produce(bootstrap: str, evs: list[dict], scenario: Scenario, daemon: object,
             wall_seconds: float) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=262_144,
                             acks=1)
    encode = msgspec.json.encode
    speed = scenario.minutes * 60.0 / wall_seconds
    start_wall = time.monotonic()
    last_report = 0.0
    for i, ev in enumerate(evs):
        due = (ev["ts"] - scenario.start) / speed
        ahead = due - (time.monotonic() - start_wall)
        if ahead > 0.02:
            time.sleep(ahead)
        producer.send(TOPIC, key=ev["client_id"].encode(), value=encode(ev))
        now = time.monotonic()
        if now - last_report >= 3.0:
            last_report = now
            _progress(i + 1, len(evs), ev["ts"] - scenario.start, daemon)
    producer.flush()
    producer.close()
    _progress(len(evs), len(evs), scenario.minutes * 60, daemon)


def _progress(sent: int, total: int, event_s: float, daemon: object) -> None:
    seen = daemon.pipeline.records_seen  # type: ignore[attr-defined]
    firing = len(daemon.pipeline.alerts.firing)  # type: ignore[attr-defined]
    mins, secs = divmod(int(event_s), 60)
    _say(f"[{100 * sent // total:3d}%] event time +{mins:02d}:{secs:02d} · produced {sent:,} · "
         f"consumed {seen:,} · alerts firing {firing}")


def _drain(daemon: object, total: int, timeout_s: float = 60.0) -> None:
    """Wait for the daemon to consume every event, close the windows they fall in and
    deliver the alerts: on a busy machine that takes seconds after the last read."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if daemon.pipeline.records_seen >= total and _settled(daemon):  # type: ignore[attr-defined]
            time.sleep(0.5)  # the notifier's own queue, if one is configured
            return
        time.sleep(0.5)
    _say("warning: the daemon did not consume every event and deliver its alerts "
         f"within {timeout_s:g} s")


def _settled(daemon: object) -> bool:
    """The watermark has passed every event read, and every sink has every record."""
    pipeline = daemon.pipeline  # type: ignore[attr-defined]
    newest = max((s.max_ts for s in pipeline.partitions.values()), default=float("-inf"))
    depth = daemon.dispatcher.depth  # type: ignore[attr-defined]
    return (pipeline.models.watermark >= newest and not pipeline.pending
            and bool(depth) and not any(depth.values()))


def _summary(workdir: Path, s: Scenario) -> int:
    path = workdir / "alerts.jsonl"
    records = []
    with contextlib.suppress(FileNotFoundError):
        records = [msgspec.json.decode(line) for line in path.read_bytes().splitlines() if line]
    caught: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if r["status"] == "firing":
            who = r["subject"].get("client_id") or f"{r['model']}@{r['model_version']}"
            caught[r["kind"]].add(who)
    _say("\n=== what inferwatch caught ===")
    for kind in sorted(caught):
        _say(f"  {kind:11} {', '.join(sorted(caught[kind]))}")
    checks = {
        f"flooder {s.flooder}": s.flooder in caught["flooding"],
        f"extraction attacker {s.attacker}": s.attacker in caught["extraction"],
        f"drift on {s.drift_model}": any(w.startswith(s.drift_model) for w in caught["drift"]),
    }
    false_clients = {c for k in ("flooding", "extraction", "evasion") for c in caught[k]} - {s.flooder,
                                                                                 s.attacker}
    for what, ok in checks.items():
        _say(f"  [{'x' if ok else ' '}] {what}")
    _say(f"  benign clients alerted: {len(false_clients)}")
    _say(f"\nfiles: {path} ({len(records)} alert records), state in {workdir / 'inferwatch.db'}, "
         f"broker log {workdir / 'broker.log'}")
    return 0 if all(checks.values()) else 1
