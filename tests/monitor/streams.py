"""A small seeded stream with a flooder and an extraction attacker, as records of
one partition: enough to raise a few alerts in well under a second."""

from __future__ import annotations

import msgspec

from monitor.pipeline import Record
from monitor.synthetic import Scenario, events

SCENARIO = Scenario(minutes=4, benign_clients=20, flood_from_min=1, flood_minutes=1,
                    flood_rate_per_s=15, attack_from_min=0.5, attack_rate_per_s=0.5, seed=3)


def stream_records() -> list[Record]:
    return [Record(i, msgspec.json.encode(e)) for i, e in enumerate(events(SCENARIO))]
