"""What the bridge says about itself: ``instance_status``, the control snapshot and /metrics.

Everything here reads the registry, the engine loop and the event hub, and writes nothing
back, so the three views of one bridge (the supervisor's events, Prometheus, the health
checks) are computed from the same state.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from xswarm import __version__
from xswarm.bridge.call import DROP_REASONS
from xswarm.bridge.engine_loop import EngineLoop
from xswarm.bridge.events import EventHub
from xswarm.bridge.registry import REJECTION_REASONS, CallRegistry
from xswarm.metrics import Exposition, Histogram, uptime
from xswarm.protocol import control
from xswarm.protocol.budgets import BUDGETS

# Why /control refused an upgrade (bridge.control counts them in the event hub).
CONTROL_REFUSALS = ("source", "token", "host", "throttled")

# Tick durations kept for the percentiles in instance_status: about 5 s of 20 ms ticks.
RECENT_TICKS = 250


class TickStats:
    """Engine tick durations: a histogram for /metrics, recent ones for p50/p99."""

    def __init__(self) -> None:
        self.histogram = Histogram()
        self.recent: list[float] = []

    def tick_finished(self, duration_s: float, calls: int) -> None:
        """An idle tick (no call stepped) says nothing about load, so it is not counted."""
        if calls:
            self.histogram.observe(duration_s)
            self.recent.append(duration_s)
            if len(self.recent) > 2 * RECENT_TICKS:
                del self.recent[:RECENT_TICKS]

    def percentiles_ms(self) -> tuple[float | None, float | None]:
        if not self.recent:
            return None, None
        ordered = sorted(self.recent[-RECENT_TICKS:])
        p50 = ordered[len(ordered) // 2]
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return round(p50 * 1000, 2), round(p99 * 1000, 2)


class StatusBoard:
    def __init__(
        self,
        calls: CallRegistry,
        engine_loop: EngineLoop,
        hub: EventHub,
        ticks: TickStats,
        reloads: Counter[str],
    ) -> None:
        self.calls = calls
        self.engine_loop = engine_loop
        self.hub = hub
        self.ticks = ticks
        self.reloads = reloads
        self.started = time.time()
        self.started_mono = time.monotonic()
        self.limits = cgroup_memory_limits()
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)
        # notAfter (Unix seconds) of each certificate the bridge serves, by file; the service
        # keeps it current across renewals.
        self.certificate_expiry: dict[str, float] = {}

    def instance_status(self) -> control.InstanceStatus:
        calls = self.calls
        engine = calls.engine
        p50, p99 = self.ticks.percentiles_ms()
        details = engine.info().details
        return control.InstanceStatus(
            active_calls=calls.active_calls,
            max_concurrent_calls=calls.max_calls,
            engine=engine.name,
            state=self.public_state(),
            cpu=round(self._process.cpu_percent(None), 1),
            rss=self._process.memory_info().rss,
            limits=self.limits,
            tick_p50_ms=p50,
            tick_p99_ms=p99,
            late_frames=calls.frame_totals().late_frames,
            uptime_s=uptime(self.started_mono),
            version=__version__,
            pid=os.getpid(),
            reloads=sum(self.reloads.values()),
            engine_details=details,
            refused_total={r: calls.rejections[r] for r in REJECTION_REASONS},
            device=_text(details.get("device")),
            gpu=_text(details.get("gpu")),
        )

    def snapshot(self) -> control.Snapshot:
        return control.Snapshot(
            tuple(peer.call.snapshot_entry() for peer in self.calls.live.values()),
            self.instance_status(),
        )

    def public_state(self) -> str:
        """The registry's state, or ``overloaded`` while a ready bridge's engine steps run
        over the frame (``EngineLoop.overloaded``)."""
        state = self.calls.public_state()
        if state == "ready" and self.engine_loop.overloaded:
            return "overloaded"
        return state

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """The /readyz answer: 200 when a new call would be admitted and served in real time,
        else 503 and why (``overloaded``: admitted, but the engine already runs behind, so
        the load balancer should send new calls elsewhere)."""
        calls = self.calls
        body: dict[str, Any] = {
            "state": self.public_state(),
            "active_calls": calls.active_calls,
            "max_concurrent_calls": calls.max_calls,
            "engine": calls.engine.name,
        }
        details = calls.engine.info().details
        for name in ("device", "gpu"):
            value = _text(details.get(name))
            if value is not None:
                body[name] = value
        if calls.state != "ready":
            body["reason"] = calls.state if calls.state in ("draining", "broken") else "loading"
            return 503, body
        if calls.reserved >= calls.max_calls:
            body["reason"] = "full"
            return 503, body
        if self.engine_loop.overloaded:
            body["reason"] = "overloaded"
            return 503, body
        return 200, body

    def metrics_text(self) -> str:
        calls = self.calls
        engine = calls.engine
        frames = calls.frame_totals()
        expo = Exposition()
        expo.metric("xswarm_active_calls", "gauge", "Calls in progress.", calls.active_calls)
        expo.metric("xswarm_max_concurrent_calls", "gauge", "Admission limit.", calls.max_calls)
        expo.metric(
            "xswarm_calls_total",
            "counter",
            "Calls ended, by outcome.",
            [({"outcome": k}, v) for k, v in sorted(calls.outcomes.items())]
            or [({"outcome": "none"}, 0)],
        )
        expo.metric(
            "xswarm_calls_rejected_total",
            "counter",
            "Upgrades refused, by reason.",
            [({"reason": r}, calls.rejections[r]) for r in REJECTION_REASONS],
        )
        expo.metric(
            "xswarm_call_budget_exceeded_total",
            "counter",
            "Calls closed as abuse, by the budget they went over.",
            [({"budget": b}, calls.budget_exceeded[b]) for b in BUDGETS],
        )
        expo.metric(
            "xswarm_frames_in_total",
            "counter",
            "Audio frames received from callers.",
            frames.frames_in,
        )
        expo.metric(
            "xswarm_frames_out_total", "counter", "Audio frames sent to callers.", frames.frames_out
        )
        expo.metric(
            "xswarm_late_frames_total",
            "counter",
            "Frames whose engine tick ended after its deadline.",
            frames.late_frames,
        )
        expo.metric(
            "xswarm_context_exceeded_total",
            "counter",
            "Calls that outlived the model's context ([voice.moshi] context).",
            calls.context_exceeded,
        )
        expo.metric(
            "xswarm_dropped_frames_total",
            "counter",
            "20 ms frames the bridge threw away, by reason: input_backlog, input_silence, "
            "input_stale (shed load), output_late, slow_client.",
            [({"reason": r}, frames.dropped[r]) for r in DROP_REASONS],
        )
        expo.metric(
            "xswarm_output_underruns_total",
            "counter",
            "Times a call's paced output ran dry for a frame or more (a gap the caller hears).",
            frames.underruns,
        )
        expo.metric(
            "xswarm_overloaded",
            "gauge",
            "1 while engine steps run over the frame (/readyz answers 503 overloaded).",
            int(self.engine_loop.overloaded),
        )
        expo.metric(
            "xswarm_twilio_unknown_events_total",
            "counter",
            "Twilio events of a kind this version does not know (each call logs 4 names).",
            calls.unknown_events,
        )
        expo.histogram(
            "xswarm_tick_duration_seconds", "Engine tick duration.", self.ticks.histogram
        )
        expo.metric(
            "xswarm_engine_info",
            "gauge",
            "The engine in use.",
            [({"engine": engine.name, "frame_ms": f"{engine.frame_seconds * 1000:g}"}, 1)],
        )
        expo.metric(
            "xswarm_engine_slots_in_use",
            "gauge",
            "Engine slots in use.",
            self.engine_loop.slots_in_use,
        )
        expo.metric("xswarm_engine_slots", "gauge", "Engine slots.", engine.capacity)
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
        expo.metric(
            "xswarm_control_refused_total",
            "counter",
            "Refused /control upgrades, by reason (source: outside [voice.bridge] control_allow).",
            [({"reason": r}, self.hub.refused[r]) for r in CONTROL_REFUSALS],
        )
        expo.metric("xswarm_draining", "gauge", "1 while draining.", int(calls.state == "draining"))
        if self.certificate_expiry:
            expo.metric(
                "xswarm_tls_certificate_expiry_timestamp_seconds",
                "gauge",
                "When each served TLS certificate expires ([voice.bridge] tls_cert).",
                [({"certificate": p}, t) for p, t in sorted(self.certificate_expiry.items())],
            )
        expo.process(self.started)
        return expo.text()


def cgroup_memory_limits() -> control.MemoryLimits:
    """MemoryHigh/MemoryMax as the kernel applies them to our cgroup (v2), when visible."""
    try:
        line = Path("/proc/self/cgroup").read_text().splitlines()[0]
        path = Path("/sys/fs/cgroup") / line.split("::", 1)[1].lstrip("/")
    except (OSError, IndexError):
        return control.MemoryLimits()
    return control.MemoryLimits(_limit(path / "memory.high"), _limit(path / "memory.max"))


def _limit(path: Path) -> int | None:
    """One cgroup memory limit in bytes; None where it is ``max`` or cannot be read."""
    try:
        value = path.read_text().strip()
    except OSError:
        return None
    return None if value == "max" else int(value)


def _text(value: object) -> str | None:
    """An engine detail shown as a device name: a string, or absent."""
    return value if isinstance(value, str) else None
