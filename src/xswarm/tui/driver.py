"""Terminal input that hands Escape over as soon as ``ESCDELAY`` has passed.

A terminal sends the Escape key as the lone byte that also starts every arrow and function
key, so a reader knows it was Escape only when nothing followed it for ``ESCDELAY``. Textual's
Linux driver looks again only at its next 100 ms poll: at 5000 calls Escape took 140 ms at
p50 and 250 ms at p99 to close the filter box, against 30 ms for ``/``. Here the poll that
follows any input waits ``ESCDELAY`` and no longer, so Escape lands as soon as it can be told
from a sequence; an idle terminal still wakes only every 100 ms.

The loop is a class of its own, apart from the driver, so that a test can run it on a pty.
"""

from __future__ import annotations

import os
import selectors
from codecs import getincrementaldecoder
from collections.abc import Callable
from threading import Event
from typing import TYPE_CHECKING

from textual import constants
from textual._parser import ParseError
from textual._xterm_parser import XTermParser
from textual.message import Message

if TYPE_CHECKING:
    from textual.driver import Driver

IDLE_POLL_S = 0.1
"""How often an idle input thread looks whether the app is exiting (Textual's own poll)."""

READ_BYTES = 4096


def next_poll(had_input: bool, escape_delay_s: float = constants.ESCAPE_DELAY) -> float:
    """How long the next ``select`` may wait.

    Right after input the parser may be holding a lone ESC until ``escape_delay_s`` has
    passed: look again just after that (1 ms over, so that the parser's deadline has surely
    passed when ``select`` returns), else at the idle pace.
    """
    return escape_delay_s + 0.001 if had_input else IDLE_POLL_S


class KeyReader:
    """Reads the terminal, parses keys and mouse events, and hands each one to ``deliver``."""

    def __init__(
        self,
        fileno: int,
        deliver: Callable[[Message], None],
        selector: selectors.BaseSelector | None = None,
        debug: bool = False,
    ) -> None:
        self.fileno = fileno
        self.deliver = deliver
        # Textual's choice too: select(2) works on every terminal device, kqueue does not.
        self.selector = selector or selectors.SelectSelector()
        self.parser = XTermParser(debug)
        self._decode = getincrementaldecoder("utf-8")().decode

    def run(self, stop: Event) -> None:
        """Read until ``stop`` is set or the input ends (a closed pty or a piped stdin)."""
        selector = self.selector
        selector.register(self.fileno, selectors.EVENT_READ)
        had_input = ended = False
        try:
            while not stop.is_set() and not ended:
                had_input = bool(selector.select(next_poll(had_input)))
                ended = had_input and not self._read()
                for event in self.parser.tick():
                    self.deliver(event)
        finally:
            selector.close()
        if ended:
            # Nothing more will come: release an ESC still held, then wait for the app to
            # exit (polling an input at its end would spin a core).
            self._finish()
            stop.wait()

    def _read(self) -> bool:
        """Parse what the terminal has; False when its input has ended."""
        try:
            data = os.read(self.fileno, READ_BYTES)
        except OSError:
            return False
        if not data:
            return False
        for event in self.parser.feed(self._decode(data)):
            self.deliver(event)
        return True

    def _finish(self) -> None:
        try:
            for event in self.parser.feed(self._decode(b"", final=True)):
                self.deliver(event)
        except (EOFError, ParseError):
            pass


def prompt_escape_driver(default: type[Driver]) -> type[Driver]:
    """The driver ``xswarm dashboard`` runs with: ours where Textual would pick its Linux
    driver; any other (Windows, headless tests, ``TEXTUAL_DRIVER``) stays as it is."""
    from textual.drivers.linux_driver import LinuxDriver

    if default is not LinuxDriver:
        return default

    class PromptEscapeDriver(LinuxDriver):
        def run_input_thread(self) -> None:
            KeyReader(self.fileno, self.process_message, debug=self._debug).run(self.exit_event)

    return PromptEscapeDriver
