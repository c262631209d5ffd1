"""What a posted Slack message tells the on-call person, and that a connection
error (refused or dropped) is retried until Slack takes the message: driven through
slack-sdk's real WebClient against the local fake Slack, with a fake clock."""

from __future__ import annotations

import html
import json
import shlex
import threading
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from monitor.cli import build_parser, main
from monitor.metrics import Metrics
from tests.alerts.fake_slack import FakeSlack
from tests.alerts.helpers import T0, Alerts, Clock, make_notifier, run
from tests.alerts.test_webhooks_cli_config import _write_config

ATLAS = "https://atlas.mitre.org/techniques/"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


def _post_about(slack: FakeSlack, client: str) -> dict:
    (post,) = [p.body for p in slack.posts() if "thread_ts" not in p.body
               and f"Client {client} " in p.body["text"]]
    return post


def _fields(post: dict) -> list[str]:
    return [f["text"] for block in post["attachments"][0]["blocks"]
            for f in block.get("fields", [])]


def _context(post: dict) -> list[str]:
    return [e["text"] for block in post["attachments"][0]["blocks"]
            if block["type"] == "context" for e in block["elements"]]


def test_a_posted_alert_names_its_mitre_atlas_techniques(sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock)
    n.send([alerts.fire("key-1"),  # flooding: AML.T0029, AML.T0034
            alerts.fire("key-2", kind="extraction",  # extraction: AML.T0024.002
                        summary="Client key-2 probes the decision boundary.")])
    run(n, clock, 31)

    def atlas_field(client: str) -> str:
        (field,) = [f for f in _fields(_post_about(slack, client))
                    if f.startswith("*MITRE ATLAS*\n")]
        return field.split("\n", 1)[1]

    # each id links to its ATLAS page and is followed by the technique's name
    assert atlas_field("key-1") == (f"<{ATLAS}AML.T0029|AML.T0029> Denial of AI Service, "
                                    f"<{ATLAS}AML.T0034|AML.T0034> Cost Harvesting")
    assert atlas_field("key-2") == f"<{ATLAS}AML.T0024.002|AML.T0024.002> Extract AI Model"


def test_the_posted_silence_command_runs_and_silences_that_alert(
        tmp_path: Path, sqlite_url: str, slack: FakeSlack,
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(_write_config(tmp_path, sqlite_url))
    clock, alerts = Clock(time.time()), Alerts()  # the command line writes wall-clock times
    n = make_notifier(sqlite_url, slack, clock, cli_config_path=cfg,
                      route={"receiver": "security", "group_by": ["client_id"],
                             "repeat_interval_s": 600})
    key1 = alerts.fire("key-1")
    n.send([key1, alerts.fire("key-2")])
    run(n, clock, 31)
    post = _post_about(slack, "key-1")
    fingerprint = json.loads(key1)["fingerprint"]

    (note,) = [c for c in _context(post) if c.startswith("Silence: ")]
    code = note.removeprefix("Silence: ")
    assert code.startswith("`") and code.endswith("`") and code.count("`") == 2
    command = html.unescape(code.strip("`"))  # what Slack shows and the reader copies
    argv = shlex.split(command)
    assert argv[:3] == ["inferwatch", "alerts", "silence"]

    # the CLI's own parser takes it as it is: this alert's fingerprint, the
    # configured config path, a duration
    args = build_parser().parse_args(argv[1:])
    assert args.match == [f"fingerprint={fingerprint}"]
    assert args.config == cfg and args.duration == 4 * 3600

    # pasted into a shell, it works: a silence for key-1 only
    assert main(argv[1:]) == 0
    assert capsys.readouterr().out.startswith("silence ")
    run(n, clock, 1800, step=30)  # three repeat intervals
    ts_of = {client: ts for ts, m in slack.messages.items()
             for client in ("key-1", "key-2") if f"Client {client} " in m["text"]}
    replies = [(p.body["thread_ts"], p.body["text"]) for p in slack.posts()
               if "thread_ts" in p.body]
    assert [t for ts, t in replies if ts == ts_of["key-1"]] == []  # silenced: no reminder
    assert any("Still firing" in t for ts, t in replies if ts == ts_of["key-2"])  # not silenced
    assert len(slack.messages) == 2


def _refuse(slack: FakeSlack) -> tuple[Callable[[], None], Callable[[], int | None]]:
    """Nothing listens on the fake Slack's port until ``come_back``."""
    port, handler = slack.server.server_port, slack.server.RequestHandlerClass
    slack.close()

    def come_back() -> None:
        slack.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        slack.thread = threading.Thread(target=slack.server.serve_forever, daemon=True)
        slack.thread.start()

    return come_back, lambda: None


def _drop(slack: FakeSlack) -> tuple[Callable[[], None], Callable[[], int | None]]:
    """The fake Slack accepts each connection, reads the request and closes the
    socket without an answer (and without acting on it) until ``come_back``."""
    handler = slack.server.RequestHandlerClass
    dropped: list[str] = []
    down = [True]

    class Dropping(handler):  # type: ignore[misc,valid-type]
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            if not down[0]:
                super().do_POST()
                return
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            dropped.append(self.path)
            self.close_connection = True

    slack.server.RequestHandlerClass = Dropping

    def come_back() -> None:
        down[0] = False

    return come_back, lambda: len(dropped)


@pytest.mark.parametrize("outage", [_refuse, _drop], ids=["refused", "dropped"])
def test_connection_errors_are_retried_and_everything_is_delivered_once_in_order(
        sqlite_url: str, slack: FakeSlack,
        outage: Callable[[FakeSlack], tuple[Callable[[], None], Callable[[], int | None]]]) -> None:
    clock, alerts = Clock(), Alerts()
    metrics = Metrics()
    n = make_notifier(sqlite_url, slack, clock, metrics=metrics,
                      route={"receiver": "security", "group_by": ["client_id"],
                             "group_wait_s": 0, "group_interval_s": 60})
    come_back, dropped = outage(slack)
    clients = [f"key-{i}" for i in range(5)]
    for minute, client in enumerate(clients):  # one new client a minute, Slack unreachable
        n.send([alerts.fire(client, ts=T0 + 60 * minute)])
        run(n, clock, 60, step=5)
    assert slack.calls() == []  # nothing got through
    assert n.queue_depth("security") == 5
    failed = metrics.registry.get_sample_value(
        "inferwatch_receiver_notifications_total",
        {"receiver": "security", "result": "connection_error"}) or 0.0
    assert 2 <= failed <= 15, "retried, with backoff"
    assert dropped() in (None, failed)  # dropped: each try reached the server and was cut

    come_back()
    run(n, clock, 600, step=5)
    assert [c.method for c in slack.calls()] == ["auth.test"] + ["chat.postMessage"] * 5
    texts = [p.body["text"] for p in slack.posts()]
    assert [next(c for c in clients if f"Client {c} " in t) for t in texts] == clients
    assert n.queue_depth("security") == 0
    assert metrics.registry.get_sample_value(
        "inferwatch_receiver_notifications_total",
        {"receiver": "security", "result": "sent"}) == 5
