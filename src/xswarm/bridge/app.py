"""The voice bridge: one object that wires the registry, the engine loop, events and status.

``Bridge`` owns the parts and the work that spans them (start and stop, the housekeeping
pass, taking a reloaded config live); each part owns its concept: ``registry`` admission and
the live calls, ``engine_loop`` the ticks, ``events`` the fan-out to subscribers, ``status``
what the bridge reports, ``routes`` the HTTP paths. Process concerns (signals, sd_notify, the
listening socket) live in ``service.py``: this module knows nothing about systemd, so tests
can run it in-process.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

from xswarm.bridge.call import CallState
from xswarm.bridge.engine_loop import EngineLoop
from xswarm.bridge.events import EventHub
from xswarm.bridge.host import CallPeer
from xswarm.bridge.registry import CallRegistry
from xswarm.bridge.routes import build_app
from xswarm.bridge.status import StatusBoard, TickStats
from xswarm.config import Config, reload_changes
from xswarm.engine.base import Engine
from xswarm.protocol import control

HOUSEKEEPING_SECONDS = 0.1
# Time for STATUS= and the journal to show why before the process goes.
ENGINE_BROKEN_EXIT_DELAY = 1.0
EX_SOFTWARE = 70


class Bridge:
    """The ``ControlHost`` of ``/control`` and what ``service.py`` runs."""

    def __init__(self, config: Config, engine: Engine, instance: str = "voice") -> None:
        self.engine = engine
        self.instance = instance
        self.hub = EventHub(instance)
        self.ticks = TickStats()
        self.engine_loop = EngineLoop(engine, self.ticks)
        self.calls = CallRegistry(config, engine, self.engine_loop, self.hub)
        self.reloads: Counter[str] = Counter()
        self.last_reload_error: str | None = None
        self.status = StatusBoard(self.calls, self.engine_loop, self.hub, self.ticks, self.reloads)
        self.engine_loop.on_broken = self._engine_broken
        self._housekeeping: asyncio.Task[None] | None = None
        # Called after each status tick (the service keeps systemd's STATUS= current with it).
        self.status_listeners: list[Callable[[], None]] = []

    # -- what the registry knows, as the service and /control ask for it ---------------------

    @property
    def config(self) -> Config:
        return self.calls.config

    @property
    def state(self) -> str:
        return self.calls.state

    @state.setter
    def state(self, value: str) -> None:
        self.calls.state = value

    @property
    def sessions(self) -> dict[str, CallPeer]:
        return self.calls.live

    @property
    def max_calls(self) -> int:
        return self.calls.max_calls

    @property
    def active_calls(self) -> int:
        return self.calls.active_calls

    async def wait_idle(self) -> None:
        """Return once no call is active (at once when none is); for the drain."""
        await self.calls.wait_idle()

    def snapshot(self) -> control.Snapshot:
        return self.status.snapshot()

    def queue_suggestion(
        self, call_id: str | None, text: Any, priority: Any = "normal", request_id: Any = None
    ) -> None:
        self.calls.queue_suggestion(call_id, text, priority, request_id)

    async def hangup(self, call_id: Any) -> str | None:
        return await self.calls.hangup(call_id)

    def cancel_suggestion(self, call_id: str | None) -> str | None:
        return self.calls.cancel_suggestion(call_id)

    # -- lifecycle ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        return build_app(self.calls, self.status, self)

    async def start(self) -> None:
        self.engine_loop.start()
        self._housekeeping = asyncio.create_task(self._housekeeping_loop(), name="housekeeping")
        self.calls.state = "ready"

    async def close(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        await self.engine_loop.stop()

    def _engine_broken(self, reason: str) -> None:
        """The engine cannot step any more: stop being ready, say why, exit for a restart.

        A sticky device error does not heal in-process; systemd's Restart= brings a fresh one.
        """
        log = logging.getLogger("xswarm.engine")
        log.critical("engine broken, exiting for a restart: %s", reason)
        self.calls.state = "broken"
        for listener in list(self.status_listeners):
            listener()
        asyncio.get_running_loop().call_later(ENGINE_BROKEN_EXIT_DELAY, os._exit, EX_SOFTWARE)

    def status_line(self) -> str:
        """systemd's STATUS= line."""
        if self.calls.state == "broken":
            return f"Engine broken, exiting: {self.engine.broken}"
        if self.calls.state == "draining":
            return f"Draining {self.active_calls} active calls"
        line = f"Voice bridge running ({self.active_calls} active calls)"
        if self.engine_loop.overloaded:
            line += " [OVERLOADED: engine steps run over the frame; not ready for new calls]"
        if self.last_reload_error:
            line += " [last reload FAILED; see journal]"
        return line

    async def _housekeeping_loop(self) -> None:
        """Suggestions every 100 ms; per-call stats and instance status every status_interval.

        Per-call stats are spread over the interval, a slice of the calls per 100 ms pass:
        done all at once, 300 calls' stats blocked the event loop long enough to make the
        next engine tick late once a second. Nobody subscribed: no stats are computed.
        """
        next_status = time.monotonic()
        pending: list[CallPeer] = []
        per_pass = 1
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            self.calls.apply_due_suggestions()
            if time.monotonic() >= next_status:
                interval = self.config.bridge.status_interval
                next_status = time.monotonic() + interval
                pending = list(self.calls.live.values()) if self.hub.subscribers else []
                per_pass = max(1, math.ceil(len(pending) / max(1, interval / HOUSEKEEPING_SECONDS)))
                self.hub.publish(self.status.instance_status())
                for listener in list(self.status_listeners):
                    listener()
            batch, pending = pending[:per_pass], pending[per_pass:]
            for peer in batch:
                if peer.call.state is CallState.STARTED:
                    self.hub.publish(peer.call.stats_event())

    # -- reload ------------------------------------------------------------------------------

    def apply_config(self, new: Config) -> str:
        """Take a new validated config live; returns what changed, in words, for the log."""
        applied, restart = reload_changes(self.config, new)
        self.calls.config = new
        self.engine_loop.reconfigure(new)
        logging.getLogger().setLevel(new.logging.level.upper())
        self.reloads["ok"] += 1
        self.last_reload_error = None
        parts = []
        if applied:
            parts.append("applied " + ", ".join(applied))
        if restart:
            parts.append("needs a restart to change " + ", ".join(restart))
        return "; ".join(parts) or "no changes"
