"""river's ADWIN loaded without river.drift's package init (detectors/adwin.py):
the daemon starts without scikit-learn and pandas, and nothing else changes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_daemon_starts_without_scikit_learn_and_pandas() -> None:
    # ~95 MB of resident memory per replica that river.drift's init would load
    out = run("import sys, monitor.cli, monitor.daemon\n"
              "print(sorted(m for m in ('sklearn', 'pandas', 'river.datasets') if m in sys.modules))")
    assert out == "[]"


def test_river_drift_imports_whole_afterwards_with_the_same_class() -> None:
    out = run("from detectors.adwin import ADWIN\n"
              "import river.drift\n"
              "print(river.drift.ADWIN is ADWIN, river.drift.KSWIN.__name__)")
    assert out == "True KSWIN"


def test_the_same_class_when_river_drift_came_first() -> None:
    out = run("import river.drift\n"
              "from detectors.adwin import ADWIN\n"
              "print(river.drift.ADWIN is ADWIN)")
    assert out == "True"


FEED = """
import pickle, random
from detectors.confidence import ConfidenceDrift
from detectors.event import Event
rng = random.Random(5)
d = ConfidenceDrift(bucket_s=10, reference_events=200, min_bucket_events=5)
for t in range(3000):
    top = 0.9 if t < 2000 else 0.55  # confidence drops after 2000 s
    p = max(0.0, min(1.0, top + rng.gauss(0, 0.03)))
    d.update(Event(ts=t, model="m", model_version="1", probabilities=[p, 1 - p]))
    d.tick(t)
"""


def test_state_pickled_with_river_drift_imported_reads_back(tmp_path: Path) -> None:
    """A checkpoint written by a process that had imported river.drift whole (an
    earlier release, or a plugin) restores under the lean loader, and the ADWINs in
    it go on as they would have."""
    blob = tmp_path / "state.pickle"
    run(f"import river.drift\n{FEED}\nopen({str(blob)!r}, 'wb').write(pickle.dumps(d))")
    out = run("import pickle, sys\nimport monitor.daemon\n"
              "from detectors.event import Event\n"
              f"d = pickle.loads(open({str(blob)!r}, 'rb').read())\n"
              "for t in range(3000, 3200):\n"
              "    d.update(Event(ts=t, model='m', model_version='1', probabilities=[0.55, 0.45]))\n"
              "    d.tick(t)\n"
              "print(d.detected, [a.width > 0 for a in d._adwins], 'sklearn' in sys.modules)")
    assert out == "True [True, True, True] False"
