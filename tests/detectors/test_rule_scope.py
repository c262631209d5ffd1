"""Count rules scoped to some models and some clients: a budget per model, a stricter
one for anonymous keys; rules stored before scopes existed still load."""

from __future__ import annotations

import operator
import pickle
import random

import pytest

from detectors.event import Event
from detectors.rules import CountRule
from monitor.config import ConfigError, build_config
from monitor.state import client_detectors

# CountRule's slots in the releases before scopes (the layout their checkpoints hold)
UNSCOPED_SLOTS = ("_detected", "_head", "_peak", "_recent", "_request_ids", "_ring", "_seen",
                  "_width", "atlas", "buckets", "distinct", "kind", "max_events", "rule",
                  "severity", "window_s")


def _ev(t: float, model: str, client: str) -> Event:
    return Event(ts=t, model=model, model_version="1", client_id=client, request_id=f"r{t}")


def test_a_rule_scoped_to_a_model_and_to_anonymous_keys_counts_only_their_events() -> None:
    config = build_config({"detectors": {"rules": [
        {"name": "flooding.llm_budget", "kind": "flooding", "models": ["llm"],
         "max_events": 10, "window_s": 60, "distinct": False},
        {"name": "extraction.anonymous_volume", "clients": ["anon-*", "trial"],
         "max_events": 20, "window_s": 3600, "distinct": False},
    ]}}, env={})
    keyed = client_detectors(config)[0]
    findings = []
    for i in range(30):  # each client: 30 requests in 30 s to each model
        for model in ("llm", "scorer"):
            for client in ("key-1", "anon-7", "trial"):
                findings += keyed.update(_ev(float(i), model, client))
    fired = sorted({(f.detector, f.model, f.subject["client_id"]) for f in findings
                    if f.status == "firing"})
    assert fired == [
        ("extraction.anonymous_volume", "scorer", "anon-7"),
        ("extraction.anonymous_volume", "scorer", "trial"),
        # on the llm, its own budget fires first and names the incident
        ("flooding.llm_budget", "llm", "anon-7"),
        ("flooding.llm_budget", "llm", "key-1"),
        ("flooding.llm_budget", "llm", "trial"),
    ]
    llm = next(f for f in findings if f.detector == "flooding.llm_budget")
    assert llm.evidence["scope"] == {"models": ["llm"]}
    assert llm.evidence["count_in_window"] == 11 and llm.ts == 10.0


def test_a_rule_stored_before_scopes_loads_as_one_for_every_model_and_client() -> None:
    rule = CountRule(rule="r", max_events=3, distinct=False)
    for i in range(3):
        rule.update(_ev(float(i), "m", "c"))
    old_layout = operator.attrgetter(*UNSCOPED_SLOTS)(rule)
    stored = CountRule.__new__(CountRule)
    stored.__setstate__(old_layout)
    assert (stored.models, stored.clients) == ((), ())
    assert stored.settings_text() == CountRule(rule="r", max_events=3,
                                               distinct=False).settings_text()
    assert stored.export_state() == rule.export_state()
    stored.update(_ev(3.0, "other-model", "another-client"))
    assert stored.detected
    again = pickle.loads(pickle.dumps(stored))
    assert again.export_state() == stored.export_state() and again.models == ()


@pytest.mark.parametrize("names", [[""], ["*"]])
def test_an_empty_or_catch_all_scope_name_is_a_config_error(names: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"detectors": {"rules": [{"name": "r", "clients": names}]}}, env={})
    assert err.value.problems == [
        "detectors.rules.0.clients: Value error, names must be non-empty; leave the list "
        "empty for all"]


def test_a_daily_rule_counts_across_pauses_longer_than_the_idle_time() -> None:
    """A client idle for state.client_idle_s (1 h) was dropped with its counts, so a
    thief sending 300 new inputs every 66 minutes started each burst at zero under a
    400-a-day rule. A client is now kept as long as its longest window."""
    config = build_config({"detectors": {"rules": [
        {"name": "extraction.daily_distinct_inputs", "max_events": 400, "window_s": 86400,
         "distinct": True}]}}, env={})
    keyed = client_detectors(config)[0]
    rng = random.Random(7)
    firing = []
    t = 1_700_000_000.0
    for burst in range(3):
        for i in range(300):  # unrelated inputs: no small-step chain, only the volume
            event = Event(ts=t + i, model="m", model_version="1", client_id="thief",
                          request_id=f"r{burst}-{i}",
                          features={f"f{j}": rng.random() for j in range(8)})
            firing += [(f.detector, f.ts) for f in keyed.update(event) if f.status == "firing"]
        for j in range(1, 62):  # others keep event time moving through the pause
            keyed.update(Event(ts=t + 300 + 60 * j, model="m", model_version="1",
                               client_id=f"other-{j % 5}"))
        t += 300 + 62 * 60
    # in the second burst, at its 101st input: 401 distinct inputs in the day
    assert firing[0] == ("extraction.daily_distinct_inputs", 1_700_000_000.0 + 300 + 62 * 60 + 100)
