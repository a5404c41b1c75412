"""The voice bridge: admission, live calls, the engine loop, events, health and metrics.

``Bridge`` holds the shared state every transport works against; ``Bridge.app()`` wires the
HTTP/WebSocket routes. Process concerns (signals, sd_notify, the listening socket) live in
``service.py``: this module knows nothing about systemd, so tests can run it in-process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

from xswarm import __version__
from xswarm.bridge.call import Suggestion
from xswarm.bridge.engine_loop import EngineLoop
from xswarm.bridge.events import EventHub
from xswarm.bridge.session import CallSession, refuse
from xswarm.config import Config, reload_changes
from xswarm.engine.base import Engine
from xswarm.metrics import Exposition, Histogram, uptime
from xswarm.protocol.control import MAX_SUGGESTION_CHARS, PRIORITIES

log = logging.getLogger("xswarm.bridge")

HOUSEKEEPING_SECONDS = 0.1


class Bridge:
    def __init__(self, config: Config, engine: Engine, instance: str = "voice") -> None:
        self.config = config
        self.engine = engine
        self.instance = instance
        self.state = "starting"
        self.sessions: dict[str, CallSession] = {}
        # Set while no call is live: the drain waits on it instead of polling the count.
        self._idle = asyncio.Event()
        self._idle.set()
        self.reserved = 0
        self.hub = EventHub(instance)
        self.loop = EngineLoop(engine, self)
        self.tick_histogram = Histogram()
        self.recent_ticks: list[float] = []
        self.frames_in = 0
        self.frames_out = 0
        self.late_frames = 0
        self.dropped_frames = 0
        self.unknown_events = 0
        self.outcomes: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        self.reloads: Counter[str] = Counter()
        self.last_reload_error: str | None = None
        self.started = time.time()
        self.started_mono = time.monotonic()
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._housekeeping: asyncio.Task[None] | None = None
        self.limits = _cgroup_memory_limits()
        # Called after each status tick (the service keeps systemd's STATUS= current with it).
        self.status_listeners: list[Callable[[], None]] = []

    # -- settings that a reload may change ------------------------------------------------

    @property
    def bridge_settings(self) -> Any:
        return self.config.section("voice.bridge")

    @property
    def max_calls(self) -> int:
        return min(int(self.bridge_settings["max_concurrent_calls"]), self.engine.capacity)

    @property
    def active_calls(self) -> int:
        return len(self.sessions)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop.start()
        self._housekeeping = asyncio.create_task(self._housekeeping_loop(), name="housekeeping")
        self.state = "ready"

    async def close(self) -> None:
        for task in (self._housekeeping,):
            if task is not None:
                task.cancel()
        await self.loop.stop()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine in the background, holding a reference until it finishes."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- admission -------------------------------------------------------------------------

    def admission_refusal(self) -> web.Response | None:
        """None when a new call may be admitted, else the 503 to answer the upgrade with."""
        if self.state == "draining":
            self.rejections["draining"] += 1
            return refuse(503, "Server is shutting down.", retry_after=5)
        if self.state != "ready":
            self.rejections["starting"] += 1
            return refuse(503, "The voice bridge is still starting.", retry_after=5)
        if self.reserved >= self.max_calls:
            self.rejections["full"] += 1
            return refuse(
                503, f"At capacity: {self.reserved} of {self.max_calls} calls.", retry_after=5
            )
        return None

    def reserve(self) -> None:
        self.reserved += 1

    def release(self) -> None:
        self.reserved -= 1

    async def wait_idle(self) -> None:
        """Return once no call is live (at once when none is)."""
        await self._idle.wait()

    def start_call(self, session: CallSession) -> bool:
        call = session.call
        if not self.loop.attach(call, session):
            return False
        call.started = True
        self.sessions[call.call_id] = session
        self._idle.clear()
        self.hub.publish("call_started", call.started_event())
        return True

    def end_call(self, session: CallSession, reason: str) -> None:
        call = session.call
        if call.ended or not call.started:
            return
        call.ended = True
        call.end_reason = reason
        self.loop.detach(call)
        self.sessions.pop(call.call_id, None)
        if not self.sessions:
            self._idle.set()
        self.frames_in += call.frames_in
        self.frames_out += call.frames_out
        self.late_frames += call.late_frames
        self.dropped_frames += call.dropped_frames
        self.outcomes[reason] += 1
        ended = call.ended_event()
        session.log.info(
            "call ended: %s after %.1f s (%d frames in, %d out, %d late)",
            reason,
            ended["duration_s"],
            call.frames_in,
            call.frames_out,
            call.late_frames,
        )
        for suggestion in call.suggestions:
            self._suggestion_rejected(call.call_id, "call ended", suggestion.request_id)
        call.suggestions.clear()
        self.hub.publish("call_ended", ended)

    # -- engine loop observer ----------------------------------------------------------------

    def tick_finished(self, duration_s: float, calls: int, late: bool) -> None:
        if calls:
            self.tick_histogram.observe(duration_s)
            self.recent_ticks.append(duration_s)
            if len(self.recent_ticks) > 500:
                del self.recent_ticks[:250]

    # -- operator commands -------------------------------------------------------------------

    def find_call(self, call_id: str | None) -> tuple[CallSession | None, str]:
        if call_id is None:
            if len(self.sessions) == 1:
                return next(iter(self.sessions.values())), ""
            return None, f"call_id is required when {len(self.sessions)} calls are live"
        session = self.sessions.get(call_id)
        return session, "" if session else f"no live call {call_id}"

    def queue_suggestion(
        self, call_id: str | None, text: Any, priority: Any = "normal", request_id: Any = None
    ) -> None:
        """Queue a suggestion; the answer comes as a suggestion_applied/rejected event."""
        request_id = request_id if isinstance(request_id, str | int) else None
        session, problem = self.find_call(call_id)
        shown_id = call_id if session is None else session.call.call_id
        if session is None:
            self._suggestion_rejected(shown_id, problem, request_id)
            return
        if not isinstance(text, str) or not text.strip():
            self._suggestion_rejected(shown_id, "text must be a non-empty string", request_id)
            return
        if len(text) > MAX_SUGGESTION_CHARS:
            self._suggestion_rejected(
                shown_id,
                f"text is {len(text)} characters; at most {MAX_SUGGESTION_CHARS}",
                request_id,
            )
            return
        if priority not in PRIORITIES:
            self._suggestion_rejected(
                shown_id, f"priority must be one of {', '.join(PRIORITIES)}", request_id
            )
            return
        limits = self.config.section("voice.suggestions")
        call = session.call
        if len(call.suggestions) >= limits["max_queue"]:
            self._suggestion_rejected(
                shown_id, f"queue full ({limits['max_queue']} waiting); try again later", request_id
            )
            return
        suggestion = Suggestion(text, request_id, priority)
        if priority == "high":
            call.suggestions.appendleft(suggestion)
        else:
            call.suggestions.append(suggestion)
        self._apply_due_suggestions()

    def _apply_due_suggestions(self) -> None:
        interval = self.config.get("voice.suggestions", "min_interval_ms") / 1000
        now = time.monotonic()
        for session in list(self.sessions.values()):
            call = session.call
            if call.suggestions and now - call.last_suggestion_mono >= interval:
                suggestion = call.suggestions.popleft()
                call.last_suggestion_mono = now
                self.spawn(self._apply(session, suggestion))

    async def _apply(self, session: CallSession, suggestion: Suggestion) -> None:
        result = await self.loop.suggest(session.call, suggestion.text)
        body: dict[str, Any] = {"call_id": session.call.call_id}
        if suggestion.request_id is not None:
            body["request_id"] = suggestion.request_id
        if result.applied:
            session.log.info("suggestion applied (%d chars)", len(suggestion.text))
            self.hub.publish("suggestion_applied", {**body, "text": suggestion.text})
        else:
            self.hub.publish("suggestion_rejected", {**body, "reason": result.reason})

    def _suggestion_rejected(self, call_id: str | None, reason: str, request_id: Any) -> None:
        body: dict[str, Any] = {"call_id": call_id, "reason": reason}
        if request_id is not None:
            body["request_id"] = request_id
        self.hub.publish("suggestion_rejected", body)

    async def hangup(self, call_id: Any) -> str | None:
        """Close a call for the operator; returns a problem, or None when done."""
        if not isinstance(call_id, str):
            return "hangup needs a call_id string"
        session = self.sessions.get(call_id)
        if session is None:
            return f"no live call {call_id}"
        await session.hangup("operator_hangup", 1000, "hung up by operator")
        return None

    # -- status ----------------------------------------------------------------------------

    def tick_percentiles(self) -> tuple[float | None, float | None]:
        if not self.recent_ticks:
            return None, None
        ordered = sorted(self.recent_ticks[-250:])
        p50 = ordered[len(ordered) // 2]
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return round(p50 * 1000, 2), round(p99 * 1000, 2)

    def public_state(self) -> str:
        if self.state == "ready" and self.reserved >= self.max_calls:
            return "full"
        return self.state

    def status_line(self) -> str:
        if self.state == "draining":
            return f"Draining {self.active_calls} active calls"
        line = f"Voice bridge running ({self.active_calls} active calls)"
        if self.last_reload_error:
            line += " [last reload FAILED; see journal]"
        return line

    def instance_status(self) -> dict[str, Any]:
        p50, p99 = self.tick_percentiles()
        return {
            "active_calls": self.active_calls,
            "max_concurrent_calls": self.max_calls,
            "engine": self.engine.name,
            "state": self.public_state(),
            "cpu": round(self._process.cpu_percent(None), 1),
            "rss": self._process.memory_info().rss,
            "limits": self.limits,
            "tick_p50_ms": p50,
            "tick_p99_ms": p99,
            "late_frames": self.late_frames
            + sum(s.call.late_frames for s in self.sessions.values()),
            "uptime_s": uptime(self.started_mono),
            "version": __version__,
            "pid": os.getpid(),
            "reloads": sum(self.reloads.values()),
            "engine_details": self.engine.info().details,
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": [s.call.snapshot_entry() for s in self.sessions.values()],
            "status": self.instance_status(),
        }

    async def _housekeeping_loop(self) -> None:
        """Suggestions every 100 ms; per-call stats and instance status every status_interval.

        Per-call stats are spread over the interval, a slice of the calls per 100 ms pass:
        done all at once, 300 calls' stats blocked the event loop long enough to make the
        next engine tick late once a second. Nobody subscribed: no stats are computed.
        """
        next_status = time.monotonic()
        pending: list[CallSession] = []
        per_pass = 1
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            self._apply_due_suggestions()
            if time.monotonic() >= next_status:
                interval = self.bridge_settings["status_interval"]
                next_status = time.monotonic() + interval
                pending = list(self.sessions.values()) if self.hub.subscribers else []
                per_pass = max(1, math.ceil(len(pending) / max(1, interval / HOUSEKEEPING_SECONDS)))
                self.hub.publish("instance_status", self.instance_status())
                for listener in list(self.status_listeners):
                    listener()
            batch, pending = pending[:per_pass], pending[per_pass:]
            for session in batch:
                if not session.call.ended:
                    self.hub.publish("call_stats", session.call.stats_event())

    # -- reload ----------------------------------------------------------------------------

    def apply_config(self, new: Config) -> str:
        """Take a new validated config live; returns what changed, in words, for the log."""
        applied, restart = reload_changes(self.config, new)
        self.config = new
        self.engine.reconfigure(new)
        logging.getLogger().setLevel(new.get("logging", "level").upper())
        self.reloads["ok"] += 1
        self.last_reload_error = None
        parts = []
        if applied:
            parts.append("applied " + ", ".join(applied))
        if restart:
            parts.append("needs a restart to change " + ", ".join(restart))
        return "; ".join(parts) or "no changes"

    # -- metrics ---------------------------------------------------------------------------

    def metrics_text(self) -> str:
        live = list(self.sessions.values())
        expo = Exposition()
        expo.metric("xswarm_active_calls", "gauge", "Calls in progress.", self.active_calls)
        expo.metric("xswarm_max_concurrent_calls", "gauge", "Admission limit.", self.max_calls)
        expo.metric(
            "xswarm_calls_total",
            "counter",
            "Calls ended, by outcome.",
            [({"outcome": k}, v) for k, v in sorted(self.outcomes.items())]
            or [({"outcome": "none"}, 0)],
        )
        expo.metric(
            "xswarm_calls_rejected_total",
            "counter",
            "Upgrades refused, by reason.",
            [({"reason": r}, self.rejections[r]) for r in ("full", "draining", "starting", "auth")],
        )
        expo.metric(
            "xswarm_frames_in_total",
            "counter",
            "Audio frames received from callers.",
            self.frames_in + sum(s.call.frames_in for s in live),
        )
        expo.metric(
            "xswarm_frames_out_total",
            "counter",
            "Audio frames sent to callers.",
            self.frames_out + sum(s.call.frames_out for s in live),
        )
        expo.metric(
            "xswarm_late_frames_total",
            "counter",
            "Frames whose engine tick ended after its deadline.",
            self.late_frames + sum(s.call.late_frames for s in live),
        )
        expo.metric(
            "xswarm_dropped_frames_total",
            "counter",
            "Frames dropped because a client did not read.",
            self.dropped_frames + sum(s.call.dropped_frames for s in live),
        )
        expo.metric(
            "xswarm_twilio_unknown_events_total",
            "counter",
            "Twilio events of a kind this version does not know (each call logs 4 names).",
            self.unknown_events,
        )
        expo.histogram("xswarm_tick_duration_seconds", "Engine tick duration.", self.tick_histogram)
        expo.metric(
            "xswarm_engine_info",
            "gauge",
            "The engine in use.",
            [
                (
                    {
                        "engine": self.engine.name,
                        "frame_ms": f"{self.engine.frame_seconds * 1000:g}",
                    },
                    1,
                )
            ],
        )
        expo.metric(
            "xswarm_engine_slots_in_use", "gauge", "Engine slots in use.", self.loop.slots_in_use
        )
        expo.metric("xswarm_engine_slots", "gauge", "Engine slots.", self.engine.capacity)
        expo.metric(
            "xswarm_config_reloads_total",
            "counter",
            "Config reloads, by result.",
            [({"result": r}, self.reloads[r]) for r in ("ok", "failed")],
        )
        expo.metric(
            "xswarm_control_subscribers",
            "gauge",
            "Connected control subscribers.",
            len(self.hub.subscribers),
        )
        expo.metric(
            "xswarm_control_events_dropped_total",
            "counter",
            "Events dropped for control subscribers that did not read.",
            self.hub.dropped_total,
        )
        expo.metric("xswarm_draining", "gauge", "1 while draining.", int(self.state == "draining"))
        expo.process(self.started)
        return expo.text()

    # -- HTTP ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        from xswarm.bridge import control, moshi_chat, twilio_media

        app = web.Application(client_max_size=64 * 1024)
        app["bridge"] = self
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/twilio", twilio_media.handle)
        app.router.add_get("/api/chat", moshi_chat.handle)
        app.router.add_get("/control", control.handle)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "state": self.state, "pid": os.getpid()})

    async def _readyz(self, request: web.Request) -> web.Response:
        body = {
            "state": self.public_state(),
            "active_calls": self.active_calls,
            "max_concurrent_calls": self.max_calls,
            "engine": self.engine.name,
        }
        if self.state != "ready":
            body["reason"] = "draining" if self.state == "draining" else "loading"
            return web.json_response(body, status=503)
        if self.reserved >= self.max_calls:
            body["reason"] = "full"
            return web.json_response(body, status=503)
        return web.json_response(body)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics_text(), content_type="text/plain", charset="utf-8")


def _cgroup_memory_limits() -> dict[str, int | None]:
    """MemoryHigh/MemoryMax as the kernel applies them to our cgroup (v2), when visible."""
    limits: dict[str, int | None] = {"memory_high": None, "memory_max": None}
    try:
        line = Path("/proc/self/cgroup").read_text().splitlines()[0]
        path = Path("/sys/fs/cgroup") / line.split("::", 1)[1].lstrip("/")
    except (OSError, IndexError):
        return limits
    for key, name in (("memory_high", "memory.high"), ("memory_max", "memory.max")):
        try:
            value = (path / name).read_text().strip()
        except OSError:
            continue
        limits[key] = None if value == "max" else int(value)
    return limits


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
