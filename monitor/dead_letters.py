"""Dead-letter records between sending and Kafka's acknowledgement.

A checkpoint stores offsets past a malformed record only once its dead-letter copy
is acknowledged (``Source.flush_dead_letters``), so a copy whose sending fails (the
broker away past the producer's delivery timeout, a full buffer) must not be
forgotten: the outbox sends it again at the next check, and the checkpoint waits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# how long closing a dead-letter producer waits for letters still unacknowledged
# (only after a failed checkpoint: their offsets were not stored)
CLOSE_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]]


# what a sent letter became: None while Kafka has not answered, "" once it
# acknowledged it, else why it failed
Outcome = Callable[[], str | None]
Send = Callable[[DeadLetter], Outcome]


class DeadLetterOutbox:
    """The letters not yet acknowledged. ``send`` hands a letter to the producer and
    returns how to read its outcome later; it raises when the producer refuses it
    now (the letter is then sent again later). While earlier letters wait to be sent
    again, new ones queue behind them instead of meeting the same failure one by one.
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self._sent: list[tuple[DeadLetter, Outcome]] = []
        self._unsent: list[DeadLetter] = []

    def add(self, letter: DeadLetter) -> None:
        if self._unsent:
            self._unsent.append(letter)
        else:
            self._try(letter)

    def unacknowledged(self) -> int:
        """Forget the acknowledged letters, send the failed ones again; how many
        letters Kafka has not acknowledged."""
        waiting: list[tuple[DeadLetter, Outcome]] = []
        failures: list[str] = []
        for letter, outcome in self._sent:
            result = outcome()
            if result is None:
                waiting.append((letter, outcome))
            elif result:
                failures.append(result)
                self._unsent.append(letter)
        self._sent = waiting
        if failures:
            log.warning("%d dead-letter records were not delivered (%s); sending them again",
                        len(failures), failures[0])
        retry, self._unsent = self._unsent, []
        for i, letter in enumerate(retry):
            if not self._try(letter):
                self._unsent.extend(retry[i + 1:])
                break
        return len(self._sent) + len(self._unsent)

    def _try(self, letter: DeadLetter) -> bool:
        try:
            self._sent.append((letter, self._send(letter)))
        except Exception as exc:  # the producer's buffer is full, metadata unknown, ...
            log.warning("cannot send a dead-letter record to %s now (%s); it waits",
                        letter.topic, exc)
            self._unsent.append(letter)
            return False
        return True
