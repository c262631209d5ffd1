"""The daemon compiles the query walk before it joins the group
(``detectors.neighbours.compile_walk``), so its first batch does not wait for numba:
that holds only if the warm-up compiles the very signature real batches use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# in a fresh interpreter: numba's compiled signatures are per process
PROGRAM = """
from detectors import query_walk
from detectors.neighbours import compile_walk
from monitor.config import build_config
from monitor.pipeline import Pipeline
from tests.monitor.streams import stream_records

assert not query_walk.walk.signatures
compile_walk()
warmed = list(query_walk.walk.signatures)
pipeline = Pipeline(build_config({}, env={}))
records = stream_records()
for start in range(0, len(records), 300):
    pipeline.process(("logs", 0), records[start:start + 300])
assert pipeline.alerts.changed, "no alert: the stream did not exercise the detectors"
print(len(warmed), len(query_walk.walk.signatures))
"""


def test_the_warm_up_compiles_the_signature_real_batches_use() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "1"], "a real batch compiled another signature"
