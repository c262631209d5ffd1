"""The simple receivers (Slack incoming webhook, generic JSON webhook), the
command line for silences and acknowledgements, and how the token is configured."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
import yaml

from alerts.model import delivery_key
from alerts.notify import build_notifiers, build_receivers
from alerts.outbox import OutboxEntry
from monitor.checkpoint import _meta
from monitor.cli import main
from monitor.config import build_config
from monitor.store import Store, StoredAlert
from tests.alerts.fake_slack import Failure, FakeSlack
from tests.alerts.helpers import T0, Alerts, Clock, make_notifier, run


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


def test_incoming_webhook_posts_each_notification_without_threads(
        sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock, token=False,
                      receivers={"security": {"webhook_url": slack.webhook_url}})
    n.send([alerts.fire("<!channel>")])
    slack.failures = [Failure(429, retry_after=5)]
    run(n, clock, 31)
    assert len(slack.calls()) == 1  # rate limited once
    run(n, clock, 5)
    n.send([alerts.resolve("<!channel>", ts=T0 + 60)])
    run(n, clock, 300, step=10)
    hooks = slack.calls()
    assert [r.path for r in hooks] == ["/hooks/T000/B000/secret"] * 3
    first, resolved = hooks[1].body, hooks[2].body
    assert "&lt;!channel&gt;" in first["text"] and "<!channel>" not in json.dumps(first)
    assert "RESOLVED" in resolved["text"]  # a new message: webhooks cannot edit


def test_incoming_webhook_with_a_revoked_url_stops(sqlite_url: str, slack: FakeSlack,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock, token=False,
                      receivers={"security": {"webhook_url": slack.webhook_url}})
    n.send([alerts.fire("key-1")])
    slack.failures = [Failure(404, error="no_service")]
    with caplog.at_level(logging.ERROR):
        run(n, clock, 31)
    assert any("receiver security stopped" in r.getMessage() and "no_service" in r.getMessage()
               for r in caplog.records)
    assert slack.webhook_url not in caplog.text  # the URL is the secret
    assert n.queue_depth("security") == 1


def test_generic_json_webhook_receives_the_alert_records(sqlite_url: str, slack: FakeSlack) -> None:
    clock, alerts = Clock(), Alerts()
    n = make_notifier(sqlite_url, slack, clock, token=False,
                      receivers={"ml": {"url": slack.json_url}},
                      route={"receiver": "ml", "group_wait_s": 0})
    raw = alerts.fire(None, kind="drift", summary="drifted")
    n.send([raw])
    run(n, clock, 2)
    (req,) = slack.calls()
    assert req.path == "/generic"
    assert req.body["reason"] == "first" and req.body["receiver"] == "ml"
    assert req.body["alerts"] == [json.loads(raw)]
    assert req.body["group"] == {"kind": "drift", "model": "fraud-scorer"}


def _write_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"store": {"url": url}}))
    return path


def test_cli_silence_unsilence_and_ack(tmp_path: Path, sqlite_url: str, slack: FakeSlack,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(_write_config(tmp_path, sqlite_url))
    clock, alerts = Clock(time.time()), Alerts()  # the command line writes wall-clock times
    n = make_notifier(sqlite_url, slack, clock)
    raw = alerts.fire("key-17")
    rec = json.loads(raw)
    store = Store(sqlite_url)
    alert = alerts.manager.firing[rec["fingerprint"]]
    store.save_checkpoint("a", {}, [OutboxEntry(delivery_key("g", rec), rec["fingerprint"], raw)],
                          [StoredAlert(alert.fingerprint, "firing", raw, b"")],
                          {alert.fingerprint: _meta(alert)})

    assert main(["alerts", "silence", "--config", cfg, "-m", "client_id=key-17", "-m",
                 "kind=~flooding|extraction", "-d", "1h30m", "--by", "alice",
                 "--why", "pentest"]) == 0
    out = capsys.readouterr().out
    sid = out.split()[1]
    assert "matches 1 firing alert(s)" in out
    assert main(["alerts", "list", "--config", cfg]) == 0
    assert "key-17" in capsys.readouterr().out.split(f"[silenced {sid}]")[0]
    assert main(["alerts", "silences", "--config", cfg]) == 0
    listed = capsys.readouterr().out
    assert sid in listed and "client_id=key-17" in listed and "alice: pentest" in listed

    n.send([raw])
    run(n, clock, 31)
    assert slack.posts() == []  # silenced

    # the whole record, evidence included, and that it is silenced
    assert main(["alerts", "show", rec["fingerprint"][:6], "--config", cfg]) == 0
    shown = capsys.readouterr()
    assert json.loads(shown.out) == rec and rec["evidence"]
    assert shown.err.strip() == f"[silenced {sid}]"
    assert main(["alerts", "show", "no-such-alert", "--config", cfg]) == 1
    assert "no stored alert match 'no-such-alert'" in capsys.readouterr().err

    assert main(["alerts", "unsilence", sid[:5], "--config", cfg]) == 0
    assert main(["alerts", "ack", rec["fingerprint"][:8], "--config", cfg, "--by", "bob",
                 "--why", "key revoked"]) == 0
    assert "acknowledged" in capsys.readouterr().out
    assert main(["alerts", "list", "--config", cfg]) == 0
    listed = capsys.readouterr().out
    assert "[acked by bob]" in listed and "[silenced" not in listed
    run(n, clock, 31)
    (post,) = slack.posts()
    assert "Acknowledged by bob: key revoked" in json.dumps(post.body)


def test_cli_lists_alerts_by_label_and_masks_control_characters(
        tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(_write_config(tmp_path, sqlite_url))
    alerts, store = Alerts(), Store(sqlite_url)
    store.migrate()
    for client, kind in (("key-1", "flooding"), ("key-2", "extraction"),
                         ("evil\x1b[2J\x07\x9b2J\u202e", "flooding")):  # chosen by a client
        raw = alerts.fire(client, kind=kind)
        rec = json.loads(raw)
        alert = alerts.manager.firing[rec["fingerprint"]]
        store.save_checkpoint("a", {}, [OutboxEntry(delivery_key("g", rec), rec["fingerprint"],
                                                    raw)],
                              [StoredAlert(alert.fingerprint, "firing", raw, b"")],
                              {alert.fingerprint: _meta(alert)})
    assert main(["alerts", "list", "--config", cfg]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 3
    assert not {"\x1b", "\x07", "\x9b", "\u202e"} & set(out)
    assert "client_id=evil?[2J??2J?" in out
    assert main(["alerts", "list", "--config", cfg, "-m", "kind=flooding",
                 "-m", "client_id!=key-1"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert "client_id=evil" in line
    assert main(["alerts", "list", "--config", cfg, "-m", "client_id=~key-.*",
                 "--limit", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["alerts", "list", "--config", cfg, "-m", "client_id"])


def test_cli_refuses_bad_matchers_and_durations(tmp_path: Path, sqlite_url: str) -> None:
    cfg = str(_write_config(tmp_path, sqlite_url))
    for argv in (["-m", "client_id"], ["-m", "a=b", "-d", "soon"], ["-m", "x=~("]):
        with pytest.raises(SystemExit) as exc:
            main(["alerts", "silence", "--config", cfg, "--why", "x", *argv])
        assert exc.value.code == 2


def test_token_comes_from_a_mounted_file_and_is_never_logged(
        tmp_path: Path, sqlite_url: str, slack: FakeSlack,
        caplog: pytest.LogCaptureFixture) -> None:
    token = "xoxb-very-secret-token"
    secret = tmp_path / "slack-token"
    secret.write_text(token + "\n")
    env = {"INFERWATCH_ALERTS__SLACK__TOKEN_FILE": str(secret),
           "INFERWATCH_ALERTS__SLACK__BASE_URL": slack.base_url,
           "INFERWATCH_ALERTS__RECEIVERS__SECURITY__CHANNEL": "sec-oncall",
           "INFERWATCH_STORE__URL": sqlite_url}
    config = build_config({}, env=env)
    assert config.alerts.slack.token is not None
    assert config.alerts.slack.token.get_secret_value() == token
    assert config.alerts.receivers["security"].channel == "sec-oncall"
    assert config.alerts.receivers["ml"].channel == "ml-alerts"  # defaults kept
    assert token not in json.dumps(config.redacted())

    store = Store(sqlite_url)
    store.migrate()
    (notifier,) = build_notifiers(config, store)
    clock = Clock()
    notifier.clock = clock
    alerts = Alerts()
    with caplog.at_level(logging.DEBUG):
        notifier.send([alerts.fire("key-1")])
        run(notifier, clock, 31)
    assert slack.posts()[0].body["channel"] == "sec-oncall"
    assert slack.calls()[0].headers["Authorization"] == f"Bearer {token}"
    assert token not in caplog.text
    assert token not in repr(notifier.receivers)


def test_without_a_token_there_is_no_notifier_and_the_sinks_stay(sqlite_url: str) -> None:
    config = build_config({"store": {"url": sqlite_url}}, env={})
    assert build_receivers(config.alerts) == {}
    assert build_notifiers(config, Store(sqlite_url)) == []


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    from monitor.config import ConfigError

    with pytest.raises(ConfigError) as exc:
        build_config({"alerts": {"route": {"receiver": "ml", "routes": [
            {"receiver": "nobody"}]}}}, env={})
    assert "route.routes.0.receiver: unknown receiver 'nobody'" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        build_config({"alerts": {"inhibit": [{"source": ["kind"], "target": ["a=b"]}]}}, env={})
    assert "alerts.inhibit.0.source" in str(exc.value)
    with pytest.raises(ConfigError) as exc:  # a typo would silently never page
        build_config({"alerts": {"receivers": {"security": {
            "mention": "<!subteam^S1>", "mention_severities": ["warning", "criticl"]}}}}, env={})
    assert "alerts.receivers.security.mention_severities: " in str(exc.value)
    assert "'criticl' is not a severity (one of critical, warning, info)" in str(exc.value)
