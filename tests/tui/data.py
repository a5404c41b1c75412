"""Fixed dashboard data for Pilot and snapshot tests: same input, same pixels, every run."""

from __future__ import annotations

from typing import Any

from xswarm.tui.model import DashboardModel

GIB = 1 << 30
MIB = 1 << 20
# 2026-11-26T05:00:00Z, the wall clock the model stamps its own notes with.
FIXED_WALL = 1795669200.0

HOSTILE_CALLERS = ("[/]", "[bold red]x", "[link=http://evil.example]call me[/link]")


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def instance(name: str = "voice", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "url": f"ws://127.0.0.1:9998/control#{name}",
        "state": "up",
        "engine": "echo",
        "active_calls": 4,
        "max_concurrent_calls": 300,
        "tick_p50_ms": 1.2,
        "tick_p99_ms": 4.5,
        "cpu": 12.5,
        "rss": 512 * MIB,
        "limits": {"memory_high": 14 * GIB, "memory_max": 16 * GIB},
        "restarts": 0,
        "last_seen": "2026-11-26T05:00:00.000Z",
        "version": "0.1.0",
        "pid": 4242,
        "error": None,
    }
    body.update(overrides)
    return body


def call(call_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "call_id": call_id,
        "instance": "voice",
        "transport": "twilio",
        "remote": "127.0.0.1:50000",
        "caller": "+15551230000",
        "stream_sid": "MZ0",
        "call_sid": "CA0",
        "started_at": "2026-11-26T04:58:55.000Z",
        "duration_s": 65.0,
        "level_in_dbfs": -23.4,
        "level_out_dbfs": -18.2,
        "latency_p50_ms": 42.0,
        "latency_p99_ms": 88.0,
        "frames_in": 3250,
        "frames_out": 3248,
        "late_frames": 0,
        "state": "active",
    }
    body.update(overrides)
    return body


def sample_snapshot() -> dict[str, Any]:
    return {
        "type": "snapshot",
        "ts": "2026-11-26T05:00:00.000Z",
        "instances": [instance(), instance("voice@2", engine="moshi", active_calls=0, cpu=3.0)],
        "calls": [
            call("c-0001", caller="+15551230001"),
            call(
                "c-0002",
                transport="moshi",
                caller=HOSTILE_CALLERS[0],
                duration_s=5.0,
                latency_p50_ms=120.0,
                latency_p99_ms=250.0,
                late_frames=3,
            ),
            call(
                "c-0003",
                caller=HOSTILE_CALLERS[1],
                duration_s=3700.0,
                level_in_dbfs=-0.5,
                latency_p50_ms=30.0,
                latency_p99_ms=60.0,
            ),
            call(
                "c-0004",
                caller=HOSTILE_CALLERS[2],
                duration_s=12.0,
                level_in_dbfs=-60.0,
                latency_p50_ms=55.0,
                latency_p99_ms=140.0,
                late_frames=1,
            ),
        ],
    }


def stats(call_id: str, step: int) -> dict[str, Any]:
    """A ``call_stats`` event with figures that move with ``step`` (deterministic)."""
    return {
        "type": "call_stats",
        "ts": f"2026-11-26T05:00:{step % 60:02d}.000Z",
        "instance": "voice",
        "call_id": call_id,
        "level_in_dbfs": -30.0 + (step % 7),
        "level_out_dbfs": -20.0 - (step % 5),
        "latency_p50_ms": 40.0 + (step * 7) % 30,
        "latency_p99_ms": 80.0 + (step * 13) % 90,
        "frames_in": 50 * step,
        "frames_out": 50 * step,
        "late_frames": step // 10,
        "duration_s": float(step),
    }


def sample_model(connected: bool = True, clock: FakeClock | None = None) -> DashboardModel:
    """The model the snapshot tests draw: two instances, four calls, some history and words."""
    model = DashboardModel(clock=clock or FakeClock(), wall=lambda: FIXED_WALL)
    model.set_connection("up", "authenticated")
    model.apply_snapshot(sample_snapshot())
    for step in range(1, 40):
        model.apply(stats("c-0001", step) | {"duration_s": 65.0 + step})
    words = "Hello, thanks for calling. [bold]How[/] can I help?"
    model.apply(
        {
            "type": "text",
            "ts": "2026-11-26T05:00:40.000Z",
            "instance": "voice",
            "call_id": "c-0001",
            "text": words,
        }
    )
    model.apply(
        {
            "type": "suggestion_applied",
            "ts": "2026-11-26T05:00:41.000Z",
            "instance": "voice",
            "call_id": "c-0001",
            "text": "offer a callback",
            "request_id": "r1",
        }
    )
    model.apply(
        {
            "type": "user_speech",
            "ts": "2026-11-26T05:00:42.000Z",
            "instance": "voice",
            "call_id": "c-0001",
            "duration_ms": 1800,
        }
    )
    if not connected:
        model.set_connection(
            "down", "the supervisor closed the connection (code 1006); retrying in 2.0s (attempt 3)"
        )
    return model
