"""The pod the chart describes, run for real: the rendered ConfigMap, environment
and secret files (mount paths moved into a tmp dir) given to ``inferwatch run``
against the test broker and PostgreSQL. The probes the chart points at must turn
healthy and ready, the alerts must land in the store the secret names, and SIGTERM
must end the process well inside ``terminationGracePeriodSeconds``."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import sqlalchemy as sa
import yaml

from monitor.broker import EmbeddedBroker, free_port
from monitor.synthetic import Scenario, events
from tests.deploy.test_helm_chart import (
    CHART,
    PROD,
    _inferwatch,
    container,
    env_of,
    merged,
    one,
    render,
)
from tests.kafka_helpers import encode_events, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MOUNTS = ("/etc/inferwatch", "/var/run/secrets/inferwatch", "/tmp",
          "/var/lib/inferwatch/reports")


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def _probe(port: int, probe: dict[str, Any], ports: dict[str, int]) -> int:
    get = probe["httpGet"]
    assert ports[get["port"]] == port
    return _get(port, get["path"])[0]


def test_the_charts_pod_consumes_alerts_and_stops_cleanly(
        broker: EmbeddedBroker, topic: str, pg_url: str, tmp_path: Path) -> None:
    port = free_port()
    values = merged(PROD, **{
        "replicaCount": 1,
        "config.kafka.bootstrap_servers": [broker.bootstrap],
        "config.kafka.topics": [topic],
        "config.kafka.group_id": f"pod-{topic}",
        "config.kafka.max_poll_interval_ms": 6000,
        "config.kafka.session_timeout_ms": 6000,
        "config.http": {"port": port},
        "config.checkpoint": {"interval_s": 1},
        "config.jobs": {"enabled": False},
        "secrets.slackToken.enabled": False,
    })
    with helm.Chart.load(CHART) as chart:
        objs = render(chart, values)
    root = {m: tmp_path / m.strip("/").replace("/", "_") for m in MOUNTS}
    for d in root.values():
        d.mkdir()

    def host(path: str) -> str:
        for mount, there in root.items():
            if path == mount or path.startswith(mount + "/"):
                return str(there) + path[len(mount):]
        return path

    c = container(objs)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["config"] == "/etc/inferwatch"
    Path(host("/etc/inferwatch/config.yaml")).write_text(
        one(objs, "ConfigMap")["data"]["config.yaml"])
    Path(host(f"{mounts['secrets']}/database-url")).write_text(pg_url + "\n")
    env = {"PATH": "/usr/bin:/bin", "HOSTNAME": "iw-inferwatch-7d9f-abcde"}
    env |= {name: host(value) for name, value in env_of(objs).items()}
    assert c["command"] == ["inferwatch"]
    cmd = [*_inferwatch(), *(host(arg) for arg in c["args"])]

    evs = list(events(Scenario(minutes=9, benign_clients=20, flood_minutes=0.5)))
    produce(broker.bootstrap, topic, encode_events(evs))
    log = (tmp_path / "pod.log").open("w")
    workdir = tmp_path / "workdir"  # the image's WORKDIR, read-only in the pod
    workdir.mkdir()
    proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    try:
        deadline = time.monotonic() + 60
        seen = 0.0
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "pod.log").read_text()
            metrics = _get(port, "/metrics")[1]
            seen = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                       if line.startswith("inferwatch_events_total{"))
            if seen >= len(evs) and _probe(port, c["readinessProbe"], ports) == 200:
                break
            time.sleep(0.3)
        assert seen == len(evs)
        assert _probe(port, c["livenessProbe"], ports) == 200
        assert _probe(port, c["readinessProbe"], ports) == 200
    finally:
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    grace = one(objs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert code == 0, (tmp_path / "pod.log").read_text()
    assert time.monotonic() - stopped < grace / 4
    assert "left the consumer group" in (tmp_path / "pod.log").read_text()
    # The alerts are in the database the mounted secret names, not in a local SQLite file.
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        kinds = {row.kind for row in conn.execute(sa.text("SELECT kind FROM alerts"))}
    engine.dispose()
    assert {"flooding", "extraction"} <= kinds
    assert not list(workdir.iterdir())
    assert yaml.safe_load(Path(host("/etc/inferwatch/config.yaml")).read_text())["kafka"][
        "topics"] == [topic]
