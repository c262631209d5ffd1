"""A small TCP proxy for fault tests: forwards a local port to a target and can
cut every connection (and refuse new ones) until it is restored; and a broker
reached only through one."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from monitor.broker import EmbeddedBroker, free_port, tansu_binary
from tests.kafka_helpers import DaemonThread, start_daemon, wait_until


class TcpProxy:
    """``with TcpProxy(("127.0.0.1", 5432)) as p: p.port`` … ``p.cut()`` … ``p.restore()``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.flowing = threading.Event()  # cleared: bytes are dropped both ways
        self.flowing.set()
        self.answering = threading.Event()  # cleared: the server's bytes are dropped
        self.answering.set()
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.accepted = 0
        self.refused = 0
        self.thread = threading.Thread(target=self._accept, name="proxy", daemon=True)

    def route(self, url: str) -> str:
        """``url`` (a database URL) pointed at this proxy instead of its own host and port."""
        return make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(
            hide_password=False)

    def __enter__(self) -> TcpProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed.set()
        # close() alone leaves a thread blocked in accept() on Linux, and the port
        # listening; shutdown() wakes it
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        if self.thread.is_alive():
            self.thread.join(5)
        self.cut()

    def cut(self) -> None:
        """Drop every open connection, and refuse new ones until ``restore()``."""
        self.up.clear()
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for a, b in pairs:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()

    def stall(self) -> None:
        """Keep every connection open (and accept new ones) but drop every byte both
        ways, as a network that black-holes packets does, until ``restore()``."""
        self.flowing.clear()

    def lose_answers(self) -> None:
        """Pass the clients' bytes on but drop every byte the server sends back, until
        ``restore()``: requests arrive and are carried out, their answers never come."""
        self.answering.clear()

    def restore(self) -> None:
        self.up.set()
        self.flowing.set()
        self.answering.set()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)  # the copy threads block: an idle connection stays up
            with self.lock:  # a cut() while connecting: it must not miss this pair
                if not self.up.is_set():
                    self.refused += 1
                    for s in (client, upstream):
                        s.close()
                    continue
                self.pairs.append((client, upstream))
            self.accepted += 1
            # one blocking copy thread per direction, not select(): select() cannot
            # watch a descriptor >= 1024 and the test process may hold that many
            for src, dst, gates in ((client, upstream, (self.flowing,)),
                                    (upstream, client, (self.flowing, self.answering))):
                threading.Thread(target=_copy, args=(src, dst, gates), daemon=True).start()


class TlsProxy(TcpProxy):
    """Terminates TLS (the server side of ``context``) in front of a plaintext
    target: a TLS listener for a broker that has none of its own."""

    def __init__(self, target: tuple[str, int], context: ssl.SSLContext) -> None:
        super().__init__(target)
        self.context = context

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            raw.settimeout(10)
            client = self.context.wrap_socket(raw, server_side=True)
            client.settimeout(None)
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
        except (OSError, ssl.SSLError):
            self.refused += 1
            with contextlib.suppress(OSError):
                raw.close()
            return
        self.accepted += 1
        with self.lock:
            self.pairs.append((client, upstream))
        threading.Thread(target=_copy, args=(upstream, client, (self.flowing, self.answering)),
                         daemon=True).start()
        _copy(client, upstream, (self.flowing,))


def _copy(src: socket.socket, dst: socket.socket, gates: tuple[threading.Event, ...]) -> None:
    """Copy ``src`` to ``dst`` until either closes; bytes pass while every gate is set."""
    try:
        while data := src.recv(65536):
            if all(gate.is_set() for gate in gates):
                dst.sendall(data)
    except (OSError, ValueError):
        pass
    finally:
        # shutdown() first: close() alone neither wakes the other direction's thread
        # blocked in recv() nor sends the peer its FIN while that recv() holds the
        # socket, so one side of the pair would stay open (a server session left
        # "idle in transaction", holding its locks, after its client was cut off)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()


class ProxiedBroker:
    """A broker that clients only reach through a proxy (advertised there too), so
    the test can take it away and bring it back with its topics and group offsets."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.proxy = TcpProxy(("127.0.0.1", self.port))
        self.bootstrap = f"127.0.0.1:{self.proxy.port}"
        self.log = (tmp_path / "broker.log").open("ab")
        self.proc = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", f"tcp://127.0.0.1:{self.port}",
             "--advertised-listener-url", f"tcp://{self.bootstrap}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.proxy.__enter__()
        b = EmbeddedBroker(port=self.proxy.port)
        # the broker's own port: the proxy accepts connections before the broker listens
        wait_until(lambda: listening(self.port), 20, "the broker to listen")
        self.create_topic = b.create_topic

    def close(self) -> None:
        self.proxy.__exit__()
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


def listening(port: int) -> bool:
    """Whether something accepts connections on the loopback ``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def join_while_the_store_is_away(pb: ProxiedBroker, store: TcpProxy, cfg: dict[str, Any],
                                 log_text: Callable[[], str]) -> DaemonThread:
    """A daemon on ``cfg`` whose partitions are assigned while the store is away: it
    migrates the store with the broker out of reach, then the store goes and the
    broker comes back. Returns once the restore waits for the store (``log_text``:
    the captured log so far); the caller stops the daemon."""
    pb.proxy.cut()  # the store is migrated before the group is joined
    d = start_daemon(cfg)
    try:
        wait_until(lambda: d.daemon.store_ok, 30, "the store migrated")
        store.cut()
        pb.proxy.restore()
        wait_until(lambda: "restoring state failed" in log_text(), 60,
                   "the assigned partitions' state to wait for the store")
    except BaseException:
        d.stop()
        raise
    return d
