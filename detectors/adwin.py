"""river's ADWIN (Bifet and Gavaldà 2007), loaded without ``river.drift``'s package
init.

That init imports ``river.drift.datasets`` and through it ``river.datasets``,
scikit-learn and pandas: about 95 MB of resident memory and half a second of
start-up in every replica, for nothing the daemon uses. The ``adwin`` module
itself needs only ``river.base`` and ADWIN's compiled helper. Its class is the
same object a later ``import river.drift`` exposes, so pickled detector state reads
back either way.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys


def _load() -> type:
    loaded = sys.modules.get("river.drift")
    if loaded is not None and hasattr(loaded, "ADWIN"):
        return loaded.ADWIN
    spec = importlib.util.find_spec("river.drift")
    assert spec is not None, "river is a dependency"
    # the package as a bare module while its adwin module loads (relative imports
    # need a parent); removed again, so a later ``import river.drift`` runs the real
    # init, which picks up the adwin module already loaded
    sys.modules["river.drift"] = importlib.util.module_from_spec(spec)
    try:
        module = importlib.import_module("river.drift.adwin")
    finally:
        del sys.modules["river.drift"]
    return module.ADWIN


ADWIN = _load()
