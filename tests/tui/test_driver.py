"""The dashboard's key reader on a real pty: Escape lands at the first poll after ESCDELAY.

The reader's selects are recorded, so the tests read which poll delivered a key, not how long
it took: no clock in the assertions.
"""

from __future__ import annotations

import os
import selectors
import threading
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from textual import constants
from textual.app import App
from textual.drivers.headless_driver import HeadlessDriver
from textual.drivers.linux_driver import LinuxDriver
from textual.events import Key
from textual.message import Message

from xswarm.tui.app import XswarmDashboard
from xswarm.tui.driver import IDLE_POLL_S, KeyReader, next_poll, prompt_escape_driver

SAFETY_S = 10.0  # only a hung reader ever waits this long


@dataclass
class Log:
    """What the reader did, in order: ("select", timeout, ready) and ("key", name)."""

    entries: list[tuple[Any, ...]] = field(default_factory=list)
    got: threading.Event = field(default_factory=threading.Event)

    def deliver(self, message: Message) -> None:
        if isinstance(message, Key):
            self.entries.append(("key", message.key))
            self.got.set()

    def keys(self) -> list[str]:
        return [entry[1] for entry in self.entries if entry[0] == "key"]


class RecordingSelector(selectors.SelectSelector):
    def __init__(self, log: Log) -> None:
        super().__init__()
        self.log = log

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(timeout)
        self.log.entries.append(("select", timeout, bool(ready)))
        return ready


@pytest.fixture
def reader() -> Iterator[tuple[int, Log, threading.Event, threading.Thread]]:
    """A KeyReader on the slave side of a pty; the test writes to the master."""
    master, slave = os.openpty()
    tty.setraw(slave)  # as Textual's driver sets the terminal: bytes, not lines
    log = Log()
    stop = threading.Event()
    keys = KeyReader(slave, log.deliver, selector=RecordingSelector(log))
    thread = threading.Thread(target=keys.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield master, log, stop, thread
    finally:
        stop.set()
        thread.join(SAFETY_S)
        os.close(master)
        os.close(slave)


def test_escape_lands_at_the_first_poll_after_the_escape_delay(reader: Any) -> None:
    master, log, _stop, _thread = reader
    os.write(master, b"\x1b")
    assert log.got.wait(SAFETY_S)
    key_at = log.entries.index(("key", "escape"))
    read_at = next(i for i, entry in enumerate(log.entries) if entry[0] == "select" and entry[2])
    # The select that read the byte, then one short poll that found nothing: Escape.
    assert log.entries[read_at + 1] == ("select", next_poll(True), False)
    assert key_at == read_at + 2
    assert next_poll(True) > constants.ESCAPE_DELAY


def test_the_poll_after_input_waits_the_escape_delay_not_the_idle_poll() -> None:
    assert next_poll(True, escape_delay_s=0.05) < IDLE_POLL_S
    assert next_poll(False, escape_delay_s=0.05) == IDLE_POLL_S


def test_a_sequence_in_one_write_is_one_key_not_escape(reader: Any) -> None:
    master, log, _stop, _thread = reader
    os.write(master, b"\x1b[A")
    assert log.got.wait(SAFETY_S)
    log.got.clear()
    os.write(master, b"/")
    assert log.got.wait(SAFETY_S)
    assert log.keys() == ["up", "slash"]


def test_an_idle_terminal_is_polled_at_the_idle_pace(reader: Any) -> None:
    master, log, stop, thread = reader
    os.write(master, b"q")
    assert log.got.wait(SAFETY_S)
    # Wait for two empty polls after the key: the short one, then an idle one.
    while sum(1 for e in log.entries if e[0] == "select" and not e[2]) < 2:
        thread.join(0.05)
    empty = [e[1] for e in log.entries if e[0] == "select" and not e[2]]
    assert empty[:2] == [next_poll(True), IDLE_POLL_S]


def test_the_reader_ends_with_its_input_and_then_waits_for_the_app() -> None:
    """A closed terminal ends the loop instead of spinning on a readable end of file."""
    read_end, write_end = os.pipe()
    log = Log()
    stop = threading.Event()
    keys = KeyReader(read_end, log.deliver, selector=RecordingSelector(log))
    thread = threading.Thread(target=keys.run, args=(stop,), daemon=True)
    thread.start()
    os.write(write_end, b"\x1b")
    os.close(write_end)
    assert log.got.wait(SAFETY_S)
    assert log.keys() == ["escape"]
    selects = len([e for e in log.entries if e[0] == "select"])
    thread.join(0.2)
    assert thread.is_alive()  # waiting on the app, not reading
    assert len([e for e in log.entries if e[0] == "select"]) == selects
    stop.set()
    thread.join(SAFETY_S)
    assert not thread.is_alive()
    os.close(read_end)


def test_the_dashboard_reads_keys_with_it_where_textual_would_use_its_linux_driver() -> None:
    driver = XswarmDashboard(url=None).get_driver_class()
    assert issubclass(driver, LinuxDriver) and driver is not LinuxDriver
    assert prompt_escape_driver(HeadlessDriver) is HeadlessDriver
    assert App().get_driver_class() is LinuxDriver
