"""The life of a systemd ``Type=notify`` daemon, shared by ``xswarm-voice`` and
``xswarm-dashboard``.

In order: listen (on systemd's sockets when it passed any), start the daemon, READY=1 with
its STATUS=, WATCHDOG=1 at half of ``WatchdogSec`` from the event loop itself (so a blocked
loop stops the keep-alives and systemd acts). Signal handlers only record an intent; one main
loop acts on them in turn, so a reload never runs inside another or inside the drain:

- SIGHUP: RELOADING=1 with MONOTONIC_USEC, the daemon re-reads its config (a bad one is
  refused and the old one kept), the outcome goes to ``reload.json``, then READY=1.
- SIGTERM or SIGINT: STOPPING=1, the daemon stops admitting work, and the work in flight may
  finish until the drain timeout (EXTEND_TIMEOUT_USEC asks systemd for that long). A second
  stop signal cuts the drain short. Then the daemon closes what is left and the process
  exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from xswarm.runtime.listen import Address, Endpoint, Listening, listen
from xswarm.runtime.reload_record import write_reload_record
from xswarm.sdnotify import Notifier, watchdog_interval

log = logging.getLogger("xswarm.runtime")

# What systemd may still need beyond the drain itself: closing calls, flushing events.
DRAIN_MARGIN_SECONDS = 15.0


class Intent(enum.Enum):
    RELOAD = "reload"
    STOP = "stop"


SIGNAL_INTENTS = {
    signal.SIGHUP: Intent.RELOAD,
    signal.SIGTERM: Intent.STOP,
    signal.SIGINT: Intent.STOP,
}


@dataclass(frozen=True)
class ReloadOutcome:
    """How a reload ended: ``ok`` False when the new config was refused and the old one kept."""

    ok: bool
    message: str


class Daemon(Protocol):
    """What a service gives the runtime; the runtime owns the process around it."""

    def app(self) -> web.Application:
        """The HTTP/WebSocket application to serve."""

    async def start(self, addresses: Sequence[Address], status_changed: Callable[[], None]) -> None:
        """Begin work, now that ``addresses`` are served; call ``status_changed`` whenever
        ``status_line`` may read differently."""

    def status_line(self) -> str:
        """systemd's STATUS=, one line."""

    async def reload(self) -> ReloadOutcome:
        """Re-read the config and apply what can change live; refuse a bad one, keep the old."""

    def begin_drain(self) -> float:
        """Admit no new work; return how many seconds the work in flight may take to finish."""

    async def wait_idle(self) -> None:
        """Return once no work is in flight."""

    async def end_drain(self) -> None:
        """The drain is over (idle, timed out or cut short): close what still runs, while the
        HTTP server is still up to carry the goodbyes."""

    async def close(self) -> None:
        """Release what outlives the HTTP server (engine, database); the last step."""


class Runtime:
    """Runs one ``Daemon`` under systemd's notify protocol until a stop signal has drained it."""

    def __init__(
        self,
        daemon: Daemon,
        endpoint: Endpoint,
        shutdown_timeout: float = 60.0,
        notifier: Notifier | None = None,
    ) -> None:
        self.daemon = daemon
        self.endpoint = endpoint
        self.shutdown_timeout = shutdown_timeout
        self.notifier = notifier if notifier is not None else Notifier()
        self.reload_generation = 0
        self._intents: asyncio.Queue[Intent] = asyncio.Queue()
        self._status = ""
        self._started = False

    def on_signal(self, signum: int) -> None:
        """The signal handler: record the intent, nothing more; ``dispatch`` acts on it."""
        self._intents.put_nowait(SIGNAL_INTENTS[signal.Signals(signum)])

    def status_changed(self) -> None:
        """Send STATUS= when the daemon's line differs from the last one systemd got."""
        line = self.daemon.status_line()
        if line != self._status:
            self._status = line
            self.notifier.status(line)

    async def serve(self) -> int:
        """The whole life of the process; returns its exit status (errors raise)."""
        async with contextlib.AsyncExitStack() as cleanup:
            listening = await self._start(cleanup)
            await self.dispatch()
            if listening.activated:
                # systemd keeps its listening sockets open: connections that arrive from
                # now on wait in its backlog for the next process instead of being refused.
                await listening.stop()
            await self.drain()
        return 0

    async def _start(self, cleanup: contextlib.AsyncExitStack) -> Listening:
        """Listen, start the daemon, READY=1; ``cleanup`` undoes each step that was done."""
        # Undone in reverse: the HTTP server, the daemon, the signal handlers (a signal
        # until the very end is still only an intent), the notify socket.
        cleanup.callback(self.notifier.close)
        self._handle_signals()
        cleanup.callback(self._restore_signals)
        cleanup.push_async_callback(self._close_daemon)
        runner = web.AppRunner(
            self.daemon.app(),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.shutdown_timeout,
            keepalive_timeout=self.endpoint.header_timeout,
        )
        await runner.setup()
        cleanup.push_async_callback(runner.cleanup)
        listening = await listen(runner, self.endpoint)
        self._started = True
        await self.daemon.start(listening.addresses, self.status_changed)
        cleanup.callback(asyncio.create_task(self._watchdog(), name="watchdog").cancel)
        write_reload_record(self.reload_generation, True, "started")
        self._status = self.daemon.status_line()
        self.notifier.ready(self._status)
        return listening

    def _handle_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in SIGNAL_INTENTS:
            loop.add_signal_handler(signum, self.on_signal, signum)

    def _restore_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in SIGNAL_INTENTS:
            loop.remove_signal_handler(signum)

    async def _close_daemon(self) -> None:
        if self._started:
            await self.daemon.close()

    async def dispatch(self) -> None:
        """The main loop: act on each recorded intent in turn; return at the first stop."""
        while await self._intents.get() is not Intent.STOP:
            await self.reload()

    async def reload(self) -> ReloadOutcome:
        self.notifier.reloading()
        self.reload_generation += 1
        try:
            outcome = await self.daemon.reload()
        except Exception as exc:
            # A bug in applying a config must not take down the work in flight.
            log.exception("reload failed")
            outcome = ReloadOutcome(False, f"reload failed: {exc!r}; see the journal")
        write_reload_record(self.reload_generation, outcome.ok, outcome.message)
        self._status = self.daemon.status_line()
        self.notifier.ready(self._status)
        return outcome

    async def drain(self) -> None:
        """Let the work in flight finish within the daemon's drain timeout, then end it."""
        timeout = self.daemon.begin_drain()
        self._status = self.daemon.status_line()
        self.notifier.stopping(self._status)
        if timeout > 0:
            # Ask systemd for the whole drain plus a margin, so TimeoutStopSec does not kill
            # work we promised to let finish.
            self.notifier.extend_timeout(timeout + DRAIN_MARGIN_SECONDS)
            idle = asyncio.create_task(self.daemon.wait_idle(), name="wait idle")
            second_stop = asyncio.create_task(self._next_stop(), name="second stop")
            try:
                done, _ = await asyncio.wait(
                    {idle, second_stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                idle.cancel()
                second_stop.cancel()
            if second_stop in done:
                log.warning("second stop signal: ending the drain now")
        await self.daemon.end_drain()

    async def _next_stop(self) -> None:
        """Wait for another stop signal; a reload asked for while stopping is not carried out."""
        while await self._intents.get() is not Intent.STOP:
            log.warning("reload ignored: the service is stopping")

    async def _watchdog(self) -> None:
        interval = watchdog_interval()
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)


def run(daemon: Daemon, endpoint: Endpoint, shutdown_timeout: float = 60.0) -> int:
    """Run ``daemon`` in a new event loop until it has stopped; returns the exit status."""
    return asyncio.run(Runtime(daemon, endpoint, shutdown_timeout).serve())
