"""The Dispatcher and the local sinks: a sink that fails, however it fails, holds
back only itself; the console shows client strings without obeying them."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from alerts.outbox import Dispatcher, OutboxEntry
from alerts.sinks import ConsoleSink, JsonlSink
from monitor.store import Store
from tests.alerts.helpers import Alerts, Clock


class Recording:
    """Stands for the notifier: a fleet-wide sink with a per-loop tick."""

    name = "recording"
    local = False

    def __init__(self) -> None:
        self.got: list[str] = []
        self.ticks = 0

    def send(self, records: Sequence[str]) -> None:
        self.got.extend(records)

    def delivered_prefix(self, records: Sequence[str]) -> int:
        return 0

    def tick(self) -> None:
        self.ticks += 1


def _store(tmp_path: Path) -> tuple[Store, list[str]]:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    alerts = Alerts()
    records = [alerts.fire("key-1"), alerts.fire("key-2")]
    store.append_outbox("me", [OutboxEntry(str(i), "fp", r) for i, r in enumerate(records)])
    return store, records


def test_a_console_that_cannot_write_holds_back_only_itself(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store, records = _store(tmp_path)
    out, recording, clock = tmp_path / "alerts.jsonl", Recording(), Clock(0.0)
    # a full disk: every write fails with ENOSPC (unbuffered, so closing it does not)
    with io.TextIOWrapper(open("/dev/full", "wb", buffering=0), write_through=True) as full:
        console = ConsoleSink(full)
        dispatcher = Dispatcher(store, [console, JsonlSink(out), recording], "me", clock=clock)
        assert dispatcher.deliver() == 2 * len(records)  # the file and the notifier
        assert out.read_text().splitlines() == records and recording.got == records
        assert recording.ticks == 1
        assert dispatcher.depth["console"] == len(records)
        assert "delivery to console failed" in caplog.text
        assert "No space left on device" in caplog.text

        clock.advance(0.5)  # within the backoff: not tried again
        caplog.clear()
        dispatcher.deliver()
        assert caplog.text == "" and recording.ticks == 2

        console.stream = stdout = (tmp_path / "console.txt").open("w")  # space again
        clock.advance(1.0)
        dispatcher.deliver()
        stdout.close()
    assert dispatcher.depth["console"] == 0
    assert len((tmp_path / "console.txt").read_text().splitlines()) == len(records)
    store.close()


def test_a_jsonl_path_that_is_a_directory_is_a_failure_of_that_sink(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Its check for records a crash already wrote (``delivered_prefix``) fails too."""
    store, records = _store(tmp_path)
    path, recording, clock = tmp_path / "alerts.jsonl", Recording(), Clock(0.0)
    path.mkdir()
    sink = JsonlSink(path)
    dispatcher = Dispatcher(store, [sink, recording], "me", clock=clock)
    with caplog.at_level(logging.WARNING):
        assert dispatcher.deliver() == len(records)
    assert recording.got == records
    assert f"delivery to {sink.name} failed" in caplog.text and "Is a directory" in caplog.text
    assert dispatcher.depth[sink.name] == len(records)

    path.rmdir()
    clock.advance(1.0)
    assert dispatcher.deliver() == len(records)
    assert path.read_text().splitlines() == records
    store.close()


def test_the_console_shows_control_characters_of_a_client_id_as_question_marks() -> None:
    """C0 and C1 controls (U+009B is CSI on some terminals: clear the screen, recolour)
    and bidirectional overrides (U+202E turns the rest of the line around)."""
    out = io.StringIO()
    ConsoleSink(out).send([Alerts().fire("\x1b[2J\x9b31mkey\u202e1-yek\u2066")])
    line = out.getvalue()
    assert "client_id=?[2J?31mkey?1-yek? " in line
    assert not {"\x1b", "\x9b", "\u202e", "\u2066"} & set(line)
