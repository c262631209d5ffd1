"""Shared parts of the Kafka benchmarks: a broker, a fast producer, a bare
consumer (the physical limit) and ``inferwatch run`` as a subprocess watched
through its own ``/metrics``."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import yaml
from kafka import KafkaConsumer, KafkaProducer

from monitor.broker import EmbeddedBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"


def short_rev(rev: str) -> str:
    """``rev`` as git's short commit name."""
    return subprocess.run(["git", "rev-parse", "--short", rev], capture_output=True, text=True,
                          check=True, cwd=ROOT).stdout.strip()


@contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """Commit ``rev`` checked out in a temporary git worktree, removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], check=True,
                       cwd=ROOT, capture_output=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=False,
                           cwd=ROOT, capture_output=True)


def _exit_on_sigterm() -> None:
    """Make SIGTERM end a benchmark like Ctrl-C does: through its ``finally`` blocks,
    which stop the broker and daemons it started (Python's default SIGTERM exits at
    once and leaves them running). Only the main thread can set a handler; an
    existing handler is kept."""
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
        signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def start_broker(storage: str = "memory://tansu/") -> EmbeddedBroker:
    _exit_on_sigterm()
    CACHE.mkdir(exist_ok=True)
    return EmbeddedBroker(storage=storage, log_path=CACHE / "broker.log").start()


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int | str = "self") -> int:
    """Resident memory of a process (default: this one), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def new_topic(broker: EmbeddedBroker, partitions: int, prefix: str = "bench") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    broker.create_topic(name, partitions)
    return name


def produce(bootstrap: str, topic: str, values: Iterable[tuple[bytes | None, bytes]]) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1_048_576,
                             acks=1, max_request_size=20_000_000)
    n = 0
    for key, value in values:
        producer.send(topic, key=key, value=value)
        n += 1
    producer.flush()
    producer.close()
    return n


def keyed(lines: Sequence[bytes]) -> Iterable[tuple[bytes, bytes]]:
    """(client_id key, value) for each event line, as producers are asked to key."""
    for line in lines:
        yield orjson.loads(line)["client_id"].encode(), line


# --- the limit: a bare kafka-python group consumer -----------------------------------
CONSUMER_SETTINGS: dict[str, Any] = {
    # the daemon's defaults (monitor.config.KafkaConfig), so both fetch alike
    "max_poll_records": 2000,
    "fetch_max_bytes": 52_428_800,
    "max_partition_fetch_bytes": 10_485_760,
    "max_poll_interval_ms": 6000,
    "session_timeout_ms": 6000,
}


def bare_consume(bootstrap: str, topic: str, total: int,
                 decode: Callable[[bytes], Any] = orjson.loads) -> float:
    """Events/s of a group consumer that fetches and decodes every record, from
    the first record received to the last (group join excluded)."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap,
                             group_id=f"bare-{uuid.uuid4().hex[:6]}",
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             **CONSUMER_SETTINGS)
    seen = 0
    t0 = None
    try:
        while seen < total:
            polled = consumer.poll(timeout_ms=500)
            if polled and t0 is None:
                t0 = time.perf_counter()
            for msgs in polled.values():
                for m in msgs:
                    decode(m.value)
                seen += len(msgs)
        elapsed = time.perf_counter() - (t0 or time.perf_counter())
    finally:
        consumer.close(autocommit=False)
    return total / elapsed


def bare_consume_librdkafka(bootstrap: str, topic: str, total: int,
                            decode: Callable[[bytes], Any] = orjson.loads) -> float:
    """The same through confluent-kafka (librdkafka), fetching in C threads, with
    the fetch sizes and batch of ``kafka.client: confluent-kafka``."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bare-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "fetch.max.bytes": CONSUMER_SETTINGS["fetch_max_bytes"],
                         "max.partition.fetch.bytes": CONSUMER_SETTINGS["max_partition_fetch_bytes"],
                         "max.poll.interval.ms": 6000, "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    seen = 0
    t0 = None
    try:
        while seen < total:
            msgs = consumer.consume(num_messages=CONSUMER_SETTINGS["max_poll_records"], timeout=0.5)
            if msgs and t0 is None:
                t0 = time.perf_counter()
            for m in msgs:
                decode(m.value() or b"")
            seen += len(msgs)
        elapsed = time.perf_counter() - (t0 or time.perf_counter())
    finally:
        consumer.close()
    return total / elapsed


# --- inferwatch run as a subprocess ----------------------------------------------------
def daemon_config(bootstrap: str, topic: str, workdir: Path, *, group: str,
                  store_url: str | None = None, instance: str = "bench",
                  **sections: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "instance_id": instance,
        "kafka": {"bootstrap_servers": [bootstrap], "topics": [topic], "group_id": group,
                  "max_poll_interval_ms": 6000, "session_timeout_ms": 6000},
        "store": {"url": store_url or f"sqlite:///{workdir / 'state.db'}"},
        "http": {"port": free_port(), "host": "127.0.0.1"},
        "alerts": {"console": {"enabled": False},
                   "jsonl": {"path": str(workdir / f"alerts-{instance}.jsonl")}},
        "logging": {"level": "WARNING"},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


class DaemonProcess:
    """``inferwatch run --config`` in a child process, read through ``/metrics``."""

    def __init__(self, cfg: dict[str, Any], workdir: Path, env: dict[str, str] | None = None,
                 code: Path = ROOT):
        """``code``: the checkout whose ``monitor.cli`` runs (another commit's worktree
        for ``bench.ab``), with this interpreter."""
        _exit_on_sigterm()
        workdir.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.port = cfg["http"]["port"]
        name = cfg["instance_id"]
        self.config_file = workdir / f"config-{name}.yaml"
        self.config_file.write_text(yaml.safe_dump(cfg))
        self.log = workdir / f"daemon-{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "run", "--config", str(self.config_file)],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=code,
            env={**os.environ, **(env or {})},
        )

    def metrics(self) -> dict[str, float]:
        """Sample name (with labels) → value; empty while the port is not up."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def events(self) -> int:
        return int(sum(v for k, v in self.metrics().items()
                       if k.startswith("inferwatch_events_total{")))

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        """Wait until ``/readyz`` answers 200 (partitions assigned, state restored)."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        return True

    def rss_kb(self) -> int:
        return rss_kb(self.proc.pid)

    def cpu_s(self) -> float:
        return process_cpu_s(self.proc.pid)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode


def daemon_rate(daemon: DaemonProcess, total: int, timeout_s: float = 900,
                sample_s: float = 0.1) -> tuple[float, list[tuple[float, int]]]:
    """Events/s of a running daemon from its first counted batch to ``total``."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        n = daemon.events()
        t = time.perf_counter()
        if n:
            samples.append((t, n))
        if n >= total:
            break
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"daemon exited: {daemon.log.read_text()[-2000:]}")
        time.sleep(sample_s)
    else:
        raise TimeoutError(f"daemon read {samples[-1][1] if samples else 0} of {total}")
    (t0, n0), (t1, n1) = samples[0], samples[-1]
    return (n1 - n0) / (t1 - t0), samples


def run_to_end(cfg: dict[str, Any], workdir: Path, total: int, code: Path = ROOT) -> float:
    """Events/s of one ``inferwatch run`` (``DaemonProcess``) over ``total`` events,
    stopped once it has read them."""
    daemon = DaemonProcess(cfg, workdir, code=code)
    try:
        return daemon_rate(daemon, total)[0]
    finally:
        daemon.stop()


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def percentile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]
