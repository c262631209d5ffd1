"""The inferwatch daemon: config, sources, pipeline, state, store, CLI, metrics and health."""

__version__ = "0.1.0"
