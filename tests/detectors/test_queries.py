"""The numeric query of an event (``detectors.queries``): the numbers of its feature
map in order, bools as 0/1, nulls as 0, strings left out, whether it is computed
in a batch or alone."""

from __future__ import annotations

from typing import Any

import numpy as np

from detectors import queries
from detectors.event import Event


def _event(i: int, features: dict[str, Any]) -> Event:
    return Event(ts=1_700_000_000 + i, model="m", model_version="1", client_id="c",
                 request_id=f"r{i}", features=features)


def _query(event: Event) -> list[float] | None:
    found = queries.query_input(event)
    return None if found is None else found[0].tolist()


def test_a_numeric_string_is_left_out_as_any_string() -> None:
    # a zip code sent as text is a category (as drift's reference counts it), not 2134
    maps = [{"zip": "02134", "amount": 12.5, "card_present": True},
            {"zip": "NY", "amount": 3.0, "card_present": False},
            {"zip": None, "amount": 7.0, "card_present": True},
            {"zip": 2134, "amount": 1.0, "card_present": False}]
    expected = [[12.5, 1.0], [3.0, 0.0], [0.0, 7.0, 1.0], [2134.0, 1.0, 0.0]]
    events = [_event(i, m) for i, m in enumerate(maps)]
    assert [_query(e) for e in events] == expected  # each computed alone
    queries.prepare(events)
    assert [_query(e) for e in events] == expected


def test_a_batch_of_numeric_strings_gives_the_queries_each_gives_alone() -> None:
    # every value of these maps parses as a number: the batch's one-pass read must
    # still leave the strings out
    rng = np.random.default_rng(3)
    maps = [{"zip": f"{int(rng.integers(10_000)):05d}", "a": float(rng.normal()),
             "b": float(rng.normal())} for _ in range(50)]
    alone = [_query(_event(i, m)) for i, m in enumerate(maps)]
    events = [_event(i, m) for i, m in enumerate(maps)]
    queries.prepare(events)
    batched = [_query(e) for e in events]
    assert batched == alone
    assert all(len(q) == 2 for q in batched)  # type: ignore[arg-type]


def test_retries_share_a_digest_and_other_inputs_do_not() -> None:
    a, retry, other = (_event(0, {"x": 1.0, "y": 2.0}), _event(1, {"x": 1.0, "y": 2.0}),
                       _event(2, {"x": 1.0, "y": 2.5}))
    queries.prepare([a, retry, other])
    digests = [queries.query_input(e)[1] for e in (a, retry, other)]  # type: ignore[index]
    assert digests[0] == digests[1] != digests[2]
