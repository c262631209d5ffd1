"""The HTTP port: metrics and probes, read-only."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.http import HealthServer
from monitor.metrics import Metrics


def _get(url: str, method: str = "GET") -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, data=b"x" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture
def server() -> tuple[HealthServer, dict[str, tuple[bool, str]], Metrics]:
    metrics = Metrics()
    state = {"ready": (False, "no partitions assigned"), "healthy": (True, "ok")}
    srv = HealthServer("127.0.0.1", 0, metrics.registry, lambda: state["healthy"],
                       lambda: state["ready"])
    srv.start()
    yield srv, state, metrics
    srv.stop()


def test_probes_report_the_daemon_state(server: tuple) -> None:
    srv, state, _ = server
    base = f"http://127.0.0.1:{srv.port}"
    assert _get(base + "/healthz") == (200, "ok\n")
    assert _get(base + "/readyz") == (503, "no partitions assigned\n")
    state["ready"] = (True, "ok")
    assert _get(base + "/readyz") == (200, "ok\n")
    state["healthy"] = (False, "main loop stalled for 45s")
    assert _get(base + "/healthz")[0] == 503


def test_metrics_use_prometheus_names_and_no_client_labels(server: tuple) -> None:
    srv, _, metrics = server
    metrics.events.labels("fraud-scorer", "ok").inc(3)
    metrics.bad_records.labels("not_json").inc()
    status, body = _get(f"http://127.0.0.1:{srv.port}/metrics")
    assert status == 200
    assert 'inferwatch_events_total{model="fraud-scorer",result="ok"} 3.0' in body
    assert 'inferwatch_bad_records_total{reason="not_json"} 1.0' in body
    assert "client_id" not in body


def test_the_port_is_read_only(server: tuple) -> None:
    srv, _, _ = server
    assert _get(f"http://127.0.0.1:{srv.port}/metrics", "POST")[0] == 405
    assert _get(f"http://127.0.0.1:{srv.port}/admin")[0] == 404


def test_a_port_already_taken_stops_the_daemon_with_one_clear_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "config.yaml"
        config.write_text(f"store: {{url: 'sqlite:///{tmp_path / 's.db'}'}}\n"
                          f"http: {{host: 127.0.0.1, port: {port}}}\n")
        assert main(["run", "--config", str(config)]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"inferwatch: cannot serve /metrics and the probes on 127.0.0.1:{port} "
        "(Address already in use): free the port or set http.port")


def test_every_exported_metric_is_documented_in_the_readme() -> None:
    """An SRE writes alert rules and dashboards from the README's metric list."""
    from prometheus_client import CollectorRegistry, generate_latest

    from monitor.scheduler import JobMetrics

    registry = CollectorRegistry()
    Metrics(registry)
    JobMetrics(registry)
    exported = {line.split()[2] for line in generate_latest(registry).decode().splitlines()
                if line.startswith("# TYPE ")}
    # prometheus_client's own per-series creation times
    exported = {name for name in exported if not name.endswith("_created")}
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert len(exported) >= 20
    assert sorted(name for name in exported if f"`{name}" not in readme) == []
