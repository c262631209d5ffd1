"""A store whose next checkpoint commits and then reports the connection lost: what
a client sees when the connection drops between the server's commit and its
answer. The commit is real; only the answer is taken away (no proxy can drop
exactly that reply without reading PostgreSQL's protocol)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from monitor.store import Store


class AnswerLostStore(Store):
    lose_next = False

    def save_checkpoint(self, *args: Any, **kwargs: Any) -> None:
        super().save_checkpoint(*args, **kwargs)
        if self.lose_next:
            self.lose_next = False
            raise sa.exc.OperationalError(
                "COMMIT", {}, ConnectionError("server closed the connection unexpectedly"))
