"""A local stand-in for Slack on 127.0.0.1: ``auth.test``, ``chat.postMessage``,
``chat.update``, an incoming webhook and a generic JSON endpoint. It records every
request and can be told to fail the next ones (429 + Retry-After, 500, a Slack
error such as ``invalid_auth``) or to be down until told otherwise."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


@dataclass
class Request:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def method(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class Failure:
    status: int = 500
    error: str | None = None  # Slack "error" (HTTP 200, ok false) when status == 200
    retry_after: int | None = None


@dataclass
class FakeSlack:
    requests: list[Request] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)  # consumed one per request
    method_failures: dict[str, list[Failure]] = field(default_factory=dict)  # per API method
    down: Failure | None = None  # every request fails while set
    latency_s: float = 0.0  # how long each answer takes (a slow Slack)
    after_post: Callable[[], None] | None = None  # runs once a message is posted, before the answer
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)  # ts → channel message now
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ts: int = 0

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                if fake.latency_s:
                    time.sleep(fake.latency_s)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                ctype = self.headers.get("Content-Type", "")
                body = json.loads(raw) if "json" in ctype else {
                    k: v[0] for k, v in parse_qs(raw).items()}
                status, payload, headers = fake.handle(
                    Request(self.path, body, dict(self.headers.items())))
                data = payload.encode() if isinstance(payload, str) else json.dumps(
                    payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if not isinstance(
                    payload, str) else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # -- addresses ------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hooks/T000/B000/secret"

    @property
    def json_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/generic"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- what was received ----------------------------------------------------------
    def calls(self, method: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if method is None or r.method == method]

    def posts(self) -> list[Request]:
        return self.calls("chat.postMessage")

    # -- behaviour ------------------------------------------------------------------
    def handle(self, req: Request) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            self.requests.append(req)
            fail = self.down or (self.failures.pop(0) if self.failures else None)
            per_method = self.method_failures.get(req.method)
            if fail is None and per_method:
                fail = per_method.pop(0)
            if fail is not None:
                headers = {"Retry-After": str(fail.retry_after)} if fail.retry_after else {}
                if req.path.startswith("/hooks/") and fail.error:
                    return (fail.status if fail.status != 200 else 403), fail.error, headers
                if fail.status == 200:
                    return 200, {"ok": False, "error": fail.error}, headers
                err = "ratelimited" if fail.status == 429 else "internal_error"
                return fail.status, {"ok": False, "error": err}, headers
            if req.path.startswith("/hooks/") or req.path == "/generic":
                return 200, "ok", {}
            if req.method == "auth.test":
                return 200, {"ok": True, "user": "inferwatch", "team": "Test"}, {}
            if req.method == "chat.postMessage":
                self._ts += 1
                ts = f"1700000000.{self._ts:06d}"
                if "thread_ts" not in req.body:  # channel messages, not thread replies
                    self.messages[ts] = dict(req.body)
                if self.after_post is not None:
                    self.after_post()
                return 200, {"ok": True, "channel": "C0SEC", "ts": ts}, {}
            if req.method == "chat.update":
                edited = req.body.get("ts")
                if edited not in self.messages:
                    return 200, {"ok": False, "error": "message_not_found"}, {}
                self.messages[edited] = dict(req.body)
                return 200, {"ok": True, "channel": "C0SEC", "ts": edited}, {}
            return 404, {"ok": False, "error": "unknown_method"}, {}
