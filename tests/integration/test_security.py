"""Security: Kafka over TLS, secrets that never leave (logs, metrics, probes,
alerts), and an HTTP port that serves only metrics and health, read-only."""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from monitor.broker import EmbeddedBroker, free_port, tansu_binary
from tests.integration.proxy import TlsProxy, listening
from tests.integration.scenario import good_events
from tests.kafka_helpers import (
    daemon_config,
    encode_events,
    produce,
    read_alerts,
    small_detectors,
    start_daemon,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_the_daemon_consumes_over_tls_and_verifies_the_broker_certificate(
    tmp_path: Path, kafka_client: str
) -> None:
    # Tansu 0.6 as shipped here has no working TLS listener of its own, so TLS is
    # terminated in front of it, and the broker advertises the TLS address.
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    port = free_port()
    with TlsProxy(("127.0.0.1", port), server_ctx) as tls:
        bootstrap = f"127.0.0.1:{tls.port}"
        log = (tmp_path / "broker.log").open("ab")
        proc = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
             "--advertised-listener-url", f"tcp://{bootstrap}"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: listening(port), 20, "the broker")
            tls_settings = {"security_protocol": "SSL", "ssl_cafile": str(cert)}
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, **tls_settings)
            admin.create_topics([NewTopic("tls", 3, 1)])
            admin.close()
            producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **tls_settings)
            events = good_events()[:1500]
            for k, v in encode_events(events):
                producer.send("tls", key=k, value=v)
            producer.flush()
            producer.close()

            # a daemon that does not trust the broker's certificate reads nothing, and
            # stays alive but not ready (it retries: the certificate may be renewed)
            untrusting = start_daemon(daemon_config(
                bootstrap, "tls", f"sqlite:///{tmp_path / 'u.db'}", tmp_path / "u.jsonl",
                group="untrusting", kafka={"security_protocol": "SSL", "client": kafka_client,
                                           "ssl_cafile": str(_other_ca(tmp_path))}))
            try:
                time.sleep(5)
                assert untrusting.thread.is_alive() and untrusting.daemon.healthy()[0]
                assert not untrusting.daemon.ready()[0]
                assert not untrusting.daemon.pipeline.partitions
                assert untrusting.daemon.pipeline.events_since_checkpoint == 0
            finally:
                stopping = time.monotonic()
                untrusting.stop()
            assert time.monotonic() - stopping < 8, "a stop must not wait for the TLS bootstrap"

            jsonl = tmp_path / "alerts.jsonl"
            cfg = daemon_config(bootstrap, "tls", f"sqlite:///{tmp_path / 's.db'}", jsonl,
                                group="tls", detectors={**small_detectors(),
                                                        "flooding": {"max_events": 100}},
                                kafka={"security_protocol": "SSL", "ssl_cafile": str(cert),
                                       "client": kafka_client})
            d = start_daemon(cfg)
            try:
                wait_until(lambda: sum((s.offset or 0) for s in
                                       d.daemon.pipeline.partitions.values()) == len(events),
                           60, "the daemon to read every event over TLS")
            finally:
                d.stop()
            assert tls.accepted > 0
            assert read_alerts(jsonl), "alerts from the events read over TLS"

            # a client that does not trust the certificate gets nowhere, nor does plaintext
            for settings in ({"security_protocol": "SSL", "ssl_cafile": str(_other_ca(tmp_path))},
                             {"security_protocol": "PLAINTEXT"}):
                with pytest.raises(Exception):  # noqa: B017 - kafka-python's error type varies
                    KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=3000,
                                  max_block_ms=3000, api_version_auto_timeout_ms=3000,
                                  **settings)
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()


def _other_ca(tmp_path: Path) -> Path:
    other = tmp_path / "other"
    other.mkdir(exist_ok=True)
    return _self_signed(other)[0]


class _Failing(BaseHTTPRequestHandler):
    """A Slack / webhook endpoint that is down (500 on every call)."""

    def do_POST(self) -> None:
        self.send_response(500)
        self.end_headers()

    do_GET = do_POST  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        return


def test_tokens_and_passwords_never_appear_in_logs_metrics_probes_or_alerts(
    broker: EmbeddedBroker, topic: str, tmp_path: Path, pg_url: str, kafka_client: str
) -> None:
    secrets = {
        "store": "DbPass-7c1e94d2",
        "sasl": "SaslPass-5b0a81f3",
        "ssl": "KeyPass-93d0aa17",
        "slack": "xoxb-SlackToken-2f6e1c0b",
        "webhook": "HookPath-0d4c7e5a",
    }
    slack = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=slack.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{slack.server_address[1]}/services/{secrets['webhook']}"
    (tmp_path / "slack-token").write_text(secrets["slack"] + "\n")
    events = good_events()[:2500]
    produce(broker.bootstrap, topic, encode_events(events))
    jsonl = tmp_path / "alerts.jsonl"
    cfg = daemon_config(
        broker.bootstrap, topic,
        f"sqlite:///{tmp_path / 's.db'}", jsonl, group=f"secrets-{kafka_client}",
        detectors={**small_detectors(), "flooding": {"max_events": 100}},
        kafka={"sasl_username": "inferwatch", "ssl_password": secrets["ssl"],
               "client": kafka_client},
        http={"enabled": True, "host": "127.0.0.1", "port": free_port()},
        logging={"level": "DEBUG"},
    )
    cfg["alerts"]["slack"] = {"token_file": str(tmp_path / "slack-token"),
                              "base_url": f"http://127.0.0.1:{slack.server_address[1]}/api/"}
    cfg["alerts"]["receivers"] = {"ml": {"webhook_url": hook}}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "INFERWATCH_KAFKA__SASL_PASSWORD": secrets["sasl"],
           # the test server trusts local connections, so any password works
           "INFERWATCH_STORE__URL": pg_url.replace("postgres@", f"postgres:{secrets['store']}@")}
    out = tmp_path / "daemon.log"
    proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "run", "--config",
                             str(config_file)], stdout=out.open("wb"),
                            stderr=subprocess.STDOUT, env=env)
    port = cfg["http"]["port"]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: len(read_alerts(jsonl)) >= 2, 60, "alerts from the daemon")
        wait_until(lambda: _get(f"{base}/metrics")[0] == 200, 20, "the metrics port")
        pages = {path: _get(base + path) for path in ("/metrics", "/healthz", "/readyz", "/x")}
        # read-only: only GET and HEAD are served, and only metrics and probes
        assert pages["/x"][0] == 404
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            for path in ("/metrics", "/readyz", "/config", "/"):
                assert _call(method, base + path) == 405
        assert b"inferwatch_events_total" in pages["/metrics"][1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        slack.shutdown()
        slack.server_close()

    log_text = out.read_bytes()
    assert b"effective config" in log_text, "the config is logged once, redacted"
    assert b"slack" in log_text.lower()
    haystacks = {"log": log_text, "alerts": jsonl.read_bytes(),
                 **{f"http {p}": body for p, (_, body) in pages.items()}}
    for name, value in secrets.items():
        for where, text in haystacks.items():
            assert value.encode() not in text, f"the {name} secret leaked into the {where}"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _call(method: str, url: str) -> int:
    req = urllib.request.Request(url, data=b"{}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
