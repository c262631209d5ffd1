"""Job results reach Slack through the normal alert path: a weekly report or a
verdict is posted once (a notice, never repeated); a regression is an incident."""

from __future__ import annotations

from pathlib import Path

import msgspec

from monitor.scheduler import JobContext
from monitor.store import Store
from tests.alerts.conftest import slack  # noqa: F401 - the fake Slack fixture
from tests.alerts.fake_slack import FakeSlack
from tests.alerts.helpers import Clock, make_notifier, run
from tests.jobs.seeded import config


def test_a_job_notice_is_posted_once_to_the_ml_channel(tmp_path: Path,
                                                       slack: FakeSlack) -> None:  # noqa: F811
    url = f"sqlite:///{tmp_path / 's.db'}"
    clock = Clock()
    notifier = make_notifier(url, slack, clock)
    store = Store(url)
    store.migrate()
    ctx = JobContext(config(url, str(tmp_path)), store, "test", clock=clock)
    ctx.emit(detector="jobs.drift_report", kind="drift", severity="warning", model="m",
             model_version="1", subject={"report": "2026-W02"},
             summary="Drift report: 1 of 5 input features drifted: amount. Report: r.html",
             evidence={"report": "r.html", "drifted_features": ["amount"]})
    records = [r.record for r in store.outbox_after("slack", limit=10)]
    assert msgspec.json.decode(records[0])["evidence"]["notice"] is True
    notifier.send(records)
    run(notifier, clock, 9 * 3600, step=60)  # two repeat intervals
    posts = slack.posts()
    assert len(posts) == 1 and "thread_ts" not in posts[0].body
    assert posts[0].body["channel"] == "ml-alerts"
    assert "amount" in posts[0].body["text"]
    store.close()
