"""A small TCP proxy for fault tests: forwards a local port to a target and can
cut every connection (and refuse new ones) until it is restored."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading

from sqlalchemy.engine import make_url


class TcpProxy:
    """``with TcpProxy(("127.0.0.1", 5432)) as p: p.port`` … ``p.cut()`` … ``p.restore()``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
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

    def restore(self) -> None:
        self.up.set()

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
            self.accepted += 1
            with self.lock:
                self.pairs.append((client, upstream))
            # one blocking copy thread per direction, not select(): select() cannot
            # watch a descriptor >= 1024 and the test process may hold that many
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_copy, args=(src, dst), daemon=True).start()


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
        threading.Thread(target=_copy, args=(upstream, client), daemon=True).start()
        _copy(client, upstream)


def _copy(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except (OSError, ValueError):
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.close()
