"""The synthetic traffic behind the demo and the tests."""

from __future__ import annotations

from monitor.synthetic import Scenario, events


def test_an_episode_set_after_the_end_stages_nothing_and_the_rest_still_flows() -> None:
    short = list(events(Scenario(minutes=3)))  # attack from minute 5, flood from 8
    assert len(short) > 1000
    assert not {e["client_id"] for e in short} & {"key-17", "key-flood-7"}
    assert max(e["ts"] for e in short) - min(e["ts"] for e in short) <= 180
