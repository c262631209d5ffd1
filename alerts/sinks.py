"""Where alert records go. A sink has one job: deliver records, and say whether a
failure is worth retrying."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, TextIO

import msgspec

from alerts.model import canonical_json

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A delivery failed; ``retryable`` says whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None,
                 reason: str = "error") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.reason = reason


class Sink(Protocol):
    """``name`` identifies the delivery cursor; ``local`` sinks (a file, the console)
    deliver only the alerts of their own replica."""

    name: str

    @property
    def local(self) -> bool: ...

    def send(self, records: Sequence[str]) -> None:
        """Deliver records (canonical JSON strings), in order; raise DeliveryError."""

    def delivered_prefix(self, records: Sequence[str]) -> int:
        """How many of ``records`` (the first pending ones) a crash already delivered."""


class ConsoleSink:
    """One readable line per alert record on stdout (or the given stream)."""

    local: ClassVar[bool] = True
    _colours: ClassVar[dict[str, str]] = {"critical": "31", "warning": "33", "info": "36"}

    def __init__(self, stream: TextIO | None = None) -> None:
        self.name = "console"
        self.stream = stream or sys.stdout
        self.colour = self.stream.isatty()

    def send(self, records: Sequence[str]) -> None:
        for raw in records:
            rec: dict[str, Any] = msgspec.json.decode(raw)
            subject = " ".join(f"{k}={v}" for k, v in sorted(rec["subject"].items()))
            tag = f"{rec['status'].upper():8} {rec['severity']:8}"
            if self.colour:
                tag = f"\033[{self._colours.get(rec['severity'], '0')}m{tag}\033[0m"
            line = (f"{rec['last_seen']} {tag} {rec['kind']:10} {rec['model']}"
                    f"@{rec['model_version']} {subject} — {rec['summary']}")
            # control characters in client-controlled strings must not drive the terminal
            self.stream.write(line.translate(NO_CONTROL) + "\n")
        self.stream.flush()

    def delivered_prefix(self, records: Sequence[str]) -> int:
        return 0


# what a terminal may obey, shown as "?": C0 controls, DEL, C1 controls (U+009B is CSI
# on some terminals) and the bidirectional overrides and isolates that reorder a line
NO_CONTROL = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F),
                            *range(0x2066, 0x206A)], "?")


class JsonlSink:
    """Appends the contract record, one JSON object per line, fsync'd.

    After a crash between writing and recording the delivery, the lines already
    at the end of the file are recognised (the records are canonical JSON) and
    not written twice.
    """

    local: ClassVar[bool] = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"jsonl:{self.path.resolve()}"

    def send(self, records: Sequence[str]) -> None:
        if not records:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write("".join(r + "\n" for r in records))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise DeliveryError(f"cannot write {self.path}: {exc.strerror}", retryable=True,
                                reason="io_error") from exc

    def delivered_prefix(self, records: Sequence[str]) -> int:
        if not records or not self.path.exists():
            return 0
        tail = _tail_lines(self.path, len(records))
        for k in range(min(len(tail), len(records)), 0, -1):
            if tail[-k:] == list(records[:k]):
                return k
        return 0


def _tail_lines(path: Path, count: int) -> list[str]:
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        block = 1 << 16
        data = b""
        while size > 0 and data.count(b"\n") <= count:
            step = min(block, size)
            size -= step
            fh.seek(size)
            data = fh.read(step) + data
    return data.decode("utf-8", "replace").splitlines()[-count:]


def record_json(record: dict[str, Any]) -> str:
    return canonical_json(record).decode()
