"""Logging set-up: text or JSON lines on stderr; the Kafka clients' repeated lines
held back (``RepeatFilter``)."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable

import msgspec

# the loggers of the Kafka clients: kafka-python's, and librdkafka's (monitor.confluent_source)
CLIENT_LOGGERS = ("kafka", "librdkafka")
REPEAT_EVERY_S = 60.0
_NUMBERS = re.compile(r"\d+(?:\.\d+)?")


class RepeatFilter(logging.Filter):
    """Lets a line of the ``loggers`` (and their children) through once per
    ``every_s`` for each message shape: the same logger, level and text with its
    numbers masked (a retry's new backoff or timing is the same line). The next one
    let through says how many were held back. While a broker is down, librdkafka
    logs a failed connection about 20 times a second and kafka-python 4 lines per
    attempt: without this, the daemon's own line ("cannot reach Kafka ...") drowns
    and an outage of an hour writes tens of thousands of lines."""

    MAX_SHAPES = 1000  # shapes remembered at once (forgotten all together past it)

    def __init__(self, loggers: tuple[str, ...] = CLIENT_LOGGERS, every_s: float = REPEAT_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.loggers = loggers
        self.every_s = every_s
        self.clock = clock
        self._shapes: dict[tuple[str, int, str], list[float]] = {}  # -> [let through at, held]

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if not any(name == p or name.startswith(f"{p}.") for p in self.loggers):
            return True
        shape = (name, record.levelno, _NUMBERS.sub("#", str(record.msg)))
        now = self.clock()
        seen = self._shapes.get(shape)
        if seen is not None and now - seen[0] < self.every_s:
            seen[1] += 1
            return False
        if len(self._shapes) >= self.MAX_SHAPES:
            self._shapes.clear()
        self._shapes[shape] = [now, 0]
        if seen is not None and seen[1]:
            try:
                text = record.getMessage()
            except Exception:  # a library's malformed call: the handler reports it, not us
                return True
            record.msg = f"{text} ({int(seen[1])} more like it held back in the last " \
                         f"{self.every_s:g}s)"
            record.args = None
        return True


def short_error(exc: BaseException) -> str:
    """``Type: first line of the message`` (kafka-python's errors name their type
    in the message already: not twice)."""
    name, text = type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else ""
    return text if text.startswith(f"{name}:") else f"{name}: {text}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(doc).decode()


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("kafka", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
