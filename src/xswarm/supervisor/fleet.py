"""The supervisor's live picture of every voice instance and call, as a pure state machine.

Nothing here does I/O: the upstream connections feed bridge events in (``apply``), tell it when
a connection opens or drops, and a ticker asks it which instances went quiet
(``check_stale``). Each call returns an ``Outcome``: the events operators must see and the call
records the store must write. Keeping it pure lets the tests replay any sequence of bridge
messages, reconnects and restarts with plain function calls and a fake clock.

Two kinds of time: ``monotonic`` decides staleness (immune to clock steps); ``wall`` stamps
what people read (ISO 8601 UTC, like the bridge's ``ts``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

# Bridge events relayed to operators as received (with ``instance`` replaced by our name).
RELAYED_EVENTS = frozenset(
    {
        "call_started",
        "call_ended",
        "call_stats",
        "text",
        "user_speech",
        "dtmf",
        "suggestion_applied",
        "suggestion_rejected",
        "instance_status",
    }
)

# Reasons for ending a call the bridge never reported ending.
INSTANCE_LOST = "instance_lost"
UNOBSERVED = "unobserved"

_CALL_STAT_FIELDS = (
    "level_in_dbfs",
    "level_out_dbfs",
    "latency_p50_ms",
    "latency_p99_ms",
    "frames_in",
    "frames_out",
    "late_frames",
    "duration_s",
)


def iso(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds, the format the bridge stamps its events with."""
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def parse_iso(text: Any) -> float | None:
    """Epoch seconds from an ISO 8601 string; None for anything else (never raises)."""
    if not isinstance(text, str):
        return None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def instance_names(urls: Iterable[str]) -> dict[str, str]:
    """A stable, unique operator-facing name per control URL (name -> url).

    The name is the URL's fragment when it has one (``ws://10.0.0.5:10001/control#voice-b``),
    else ``host:port``; it does not depend on what the bridge calls itself, so it stays the
    same while the bridge is down. Duplicate URLs collapse; clashing names get ``~2``, ``~3``.
    """
    out: dict[str, str] = {}
    for url in dict.fromkeys(urls):
        parts = urlsplit(url)
        base = parts.fragment or parts.netloc or url
        name, n = base, 1
        while name in out:
            n += 1
            name = f"{base}~{n}"
        out[name] = url
    return out


def _num(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass
class Instance:
    """One supervised voice instance, as operators see it."""

    name: str
    url: str
    state: str = "down"
    engine: str | None = None
    active_calls: int | None = None
    max_concurrent_calls: int | None = None
    tick_p50_ms: float | None = None
    tick_p99_ms: float | None = None
    cpu: float | None = None
    rss: int | None = None
    memory_high: int | None = None
    memory_max: int | None = None
    restarts: int = 0
    last_seen: str | None = None
    version: str | None = None
    pid: int | None = None
    error: str | None = "not connected yet"
    bridge_name: str | None = None
    connected: bool = False
    draining: bool = False
    last_message_at: float | None = None
    down_since: float | None = None
    # The bridge's snapshot after (re)connecting decides which known calls are gone.
    awaiting_snapshot: bool = False
    # Wall time the connection was lost (the end time of calls found gone afterwards).
    lost_wall: float | None = None
    # Holds calls adopted from the store after a supervisor restart, not yet reconciled.
    adopted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "state": self.state,
            "engine": self.engine,
            "active_calls": self.active_calls,
            "max_concurrent_calls": self.max_concurrent_calls,
            "tick_p50_ms": self.tick_p50_ms,
            "tick_p99_ms": self.tick_p99_ms,
            "cpu": self.cpu,
            "rss": self.rss,
            "limits": {"memory_high": self.memory_high, "memory_max": self.memory_max},
            "restarts": self.restarts,
            "last_seen": self.last_seen,
            "version": self.version,
            "pid": self.pid,
            "error": self.error,
            "bridge_name": self.bridge_name,
        }


@dataclass
class Call:
    """One call the supervisor believes is live on an instance."""

    call_id: str
    instance: str
    transport: str | None = None
    remote: str | None = None
    caller: str | None = None
    stream_sid: str | None = None
    call_sid: str | None = None
    started_at: str | None = None
    duration_s: float | None = None
    level_in_dbfs: float | None = None
    level_out_dbfs: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    frames_in: int | None = None
    frames_out: int | None = None
    late_frames: int | None = None
    suggestions: int = 0
    # "active" while its instance is connected; "unknown" while the instance is unreachable.
    state: str = "active"

    def to_dict(self, wall_now: float | None = None) -> dict[str, Any]:
        duration = self.duration_s
        started = parse_iso(self.started_at)
        if wall_now is not None and started is not None and self.state == "active":
            duration = round(max(0.0, wall_now - started), 3)
        return {
            "call_id": self.call_id,
            "instance": self.instance,
            "transport": self.transport,
            "remote": self.remote,
            "caller": self.caller,
            "stream_sid": self.stream_sid,
            "call_sid": self.call_sid,
            "started_at": self.started_at,
            "duration_s": duration,
            "level_in_dbfs": self.level_in_dbfs,
            "level_out_dbfs": self.level_out_dbfs,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "late_frames": self.late_frames,
            "suggestions": self.suggestions,
            "state": self.state,
        }

    def update_from(self, body: dict[str, Any]) -> None:
        """Take the descriptive fields of a call_started / snapshot entry, ignoring bad types."""
        for name in ("transport", "remote", "caller", "stream_sid", "call_sid", "started_at"):
            value = _str(body.get(name))
            if value is not None:
                setattr(self, name, value)
        self.update_stats(body)

    def update_stats(self, body: dict[str, Any]) -> None:
        for name in _CALL_STAT_FIELDS:
            value = body.get(name)
            number: float | int | None = (
                _int(value) if name in ("frames_in", "frames_out", "late_frames") else _num(value)
            )
            if number is not None:
                setattr(self, name, number)


@dataclass(frozen=True)
class CallRecord:
    """A finished call, as the history table stores it."""

    call_id: str
    instance: str
    transport: str | None
    remote: str | None
    caller: str | None
    started_at: str | None
    ended_at: str
    duration_s: float | None
    reason: str
    frames_in: int | None
    frames_out: int | None
    late_frames: int | None
    suggestions: int
    stream_sid: str | None = None
    call_sid: str | None = None


@dataclass
class Outcome:
    """What one input changed: events for operators, calls to persist as started or ended."""

    events: list[dict[str, Any]] = field(default_factory=list)
    started: list[Call] = field(default_factory=list)
    ended: list[CallRecord] = field(default_factory=list)

    def extend(self, other: Outcome) -> None:
        self.events.extend(other.events)
        self.started.extend(other.started)
        self.ended.extend(other.ended)


class Fleet:
    """Live state of every instance and call; every mutation returns an ``Outcome``."""

    def __init__(
        self,
        stale_after: float,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.stale_after = stale_after
        self.instances: dict[str, Instance] = {}
        self.calls: dict[tuple[str, str], Call] = {}
        self._monotonic = monotonic
        self._wall = wall

    # -- instances ------------------------------------------------------------------------

    def add_instance(self, name: str, url: str) -> Outcome:
        if name in self.instances:
            return Outcome()
        inst = Instance(name=name, url=url, down_since=self._monotonic())
        self.instances[name] = inst
        return Outcome(events=[self._state_event(inst, "configured")])

    def remove_instance(self, name: str) -> Outcome:
        """Forget an instance dropped from the config; its live calls end as unobserved."""
        inst = self.instances.pop(name, None)
        out = Outcome()
        if inst is None:
            return out
        for key in [k for k in self.calls if k[0] == name]:
            out.extend(self._end_lost(self.calls[key], UNOBSERVED, ended_at=self._wall()))
        out.events.append({"type": "instance_removed", "instance": name, "ts": iso(self._wall())})
        return out

    def connected(self, name: str) -> Outcome:
        """The control WebSocket opened; the instance is up once its hello arrives."""
        inst = self.instances.get(name)
        if inst is None:
            return Outcome()
        inst.connected = True
        inst.awaiting_snapshot = True
        inst.last_message_at = self._monotonic()
        return Outcome()

    def disconnected(self, name: str, reason: str) -> Outcome:
        """The connection dropped or was refused: down now, its calls unknown until it returns."""
        inst = self.instances.get(name)
        if inst is None:
            return Outcome()
        was = inst.state
        inst.connected = False
        inst.awaiting_snapshot = False
        inst.error = reason
        if was != "down":
            inst.down_since = self._monotonic()
            inst.lost_wall = self._wall()
        inst.state = "down"
        for call in self.calls.values():
            if call.instance == name:
                call.state = "unknown"
        if was == "down":
            return Outcome()
        return Outcome(events=[self._state_event(inst, reason)])

    def check_stale(self) -> Outcome:
        """Mark connected instances that have been silent for ``stale_after`` seconds."""
        out = Outcome()
        now = self._monotonic()
        for inst in self.instances.values():
            if not inst.connected or inst.state in ("down", "stale"):
                continue
            if inst.last_message_at is not None and now - inst.last_message_at >= self.stale_after:
                inst.state = "stale"
                silent = now - inst.last_message_at
                inst.error = f"no message for {silent:.1f} s"
                out.events.append(self._state_event(inst, inst.error))
        return out

    # -- calls known from an earlier run ---------------------------------------------------

    def adopt_open_calls(self, calls: Iterable[Call]) -> Outcome:
        """Calls the store saw start but not end (the supervisor was restarted meanwhile).

        They wait, state ``unknown``, for their instance's snapshot to say whether they still
        run; calls of instances no longer configured end at once as unobserved.
        """
        out = Outcome()
        for call in calls:
            call.state = "unknown"
            if call.instance not in self.instances:
                out.extend(self._end_lost(call, UNOBSERVED, ended_at=self._wall()))
                continue
            self.calls[(call.instance, call.call_id)] = call
            self.instances[call.instance].adopted = True
        return out

    # -- bridge messages -------------------------------------------------------------------

    def apply(self, name: str, message: dict[str, Any]) -> Outcome:
        """One message from instance ``name``'s control channel."""
        inst = self.instances.get(name)
        if inst is None:
            return Outcome()
        inst.last_message_at = self._monotonic()
        inst.last_seen = iso(self._wall())
        out = Outcome()
        kind = message.get("type")
        if kind == "hello":
            self._hello(inst, message)
        elif kind == "snapshot":
            out.extend(self._snapshot(inst, message))
        elif kind == "instance_status":
            self._status(inst, message)
        elif kind == "call_started":
            out.extend(self._call_started(inst, message))
        elif kind == "call_ended":
            out.extend(self._call_ended(inst, message))
        elif kind == "call_stats":
            call = self._call(inst, message)
            if call is not None:
                call.update_stats(message)
        elif kind == "suggestion_applied":
            call = self._call(inst, message)
            if call is not None:
                call.suggestions += 1
        if kind in RELAYED_EVENTS:
            out.events.append({**message, "instance": name})
        # Any message proves the connection lives: leave stale / first contact.
        out.extend(self._refresh_state(inst))
        return out

    def _hello(self, inst: Instance, message: dict[str, Any]) -> None:
        pid = _int(message.get("pid"))
        if pid is not None and inst.pid is not None and pid != inst.pid:
            inst.restarts += 1
        if pid is not None:
            inst.pid = pid
        inst.version = _str(message.get("version")) or inst.version
        inst.engine = _str(message.get("engine")) or inst.engine
        inst.bridge_name = _str(message.get("instance")) or inst.bridge_name
        mcc = _int(message.get("max_concurrent_calls"))
        if mcc is not None:
            inst.max_concurrent_calls = mcc

    def _status(self, inst: Instance, body: dict[str, Any]) -> None:
        inst.engine = _str(body.get("engine")) or inst.engine
        inst.version = _str(body.get("version")) or inst.version
        for name in ("active_calls", "max_concurrent_calls", "rss"):
            value = _int(body.get(name))
            if value is not None:
                setattr(inst, name, value)
        for name in ("tick_p50_ms", "tick_p99_ms", "cpu"):
            number = _num(body.get(name))
            if number is not None:
                setattr(inst, name, number)
        # Restarts are counted from hello only: one new process, one new connection.
        inst.pid = _int(body.get("pid")) or inst.pid
        limits = body.get("limits")
        if isinstance(limits, dict):
            inst.memory_high = _int(limits.get("memory_high"))
            inst.memory_max = _int(limits.get("memory_max"))
        inst.draining = body.get("state") == "draining"

    def _snapshot(self, inst: Instance, message: dict[str, Any]) -> Outcome:
        """Reconcile: calls the bridge lists are live; known calls it does not list are over."""
        out = Outcome()
        status = message.get("status")
        if isinstance(status, dict):
            self._status(inst, status)
        listed: dict[str, dict[str, Any]] = {}
        raw_calls = message.get("calls")
        for entry in raw_calls if isinstance(raw_calls, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("call_id"), str):
                listed[entry["call_id"]] = entry
        lost_at = inst.lost_wall
        adopted = inst.adopted
        for key in [k for k in self.calls if k[0] == inst.name]:
            call = self.calls[key]
            if call.call_id in listed:
                continue
            if adopted and lost_at is None:
                out.extend(self._end_lost(call, UNOBSERVED, ended_at=self._wall()))
            else:
                out.extend(self._end_lost(call, INSTANCE_LOST, ended_at=lost_at or self._wall()))
        for call_id, entry in listed.items():
            key = (inst.name, call_id)
            known = self.calls.get(key)
            if known is None:
                fresh = Call(call_id=call_id, instance=inst.name)
                fresh.update_from(entry)
                self.calls[key] = fresh
                out.started.append(fresh)
                out.events.append(self._synthetic_started(inst, fresh))
            else:
                known.update_from(entry)
                known.state = "active"
        inst.awaiting_snapshot = False
        inst.lost_wall = None
        inst.adopted = False
        return out

    def _call_started(self, inst: Instance, message: dict[str, Any]) -> Outcome:
        call_id = _str(message.get("call_id"))
        if call_id is None:
            return Outcome()
        key = (inst.name, call_id)
        call = self.calls.get(key)
        fresh = call is None
        if call is None:
            call = Call(call_id=call_id, instance=inst.name)
            self.calls[key] = call
        call.update_from(message)
        if call.started_at is None:
            call.started_at = _str(message.get("ts")) or iso(self._wall())
        call.state = "active"
        return Outcome(started=[call] if fresh else [])

    def _call_ended(self, inst: Instance, message: dict[str, Any]) -> Outcome:
        call_id = _str(message.get("call_id"))
        if call_id is None:
            return Outcome()
        call = self.calls.pop((inst.name, call_id), None)
        if call is None:
            # It started while we were not watching and ended before the snapshot told us.
            call = Call(call_id=call_id, instance=inst.name)
        call.update_stats(message)
        # Re-stamped in one format so that history sorts by text.
        ended_at = iso(parse_iso(message.get("ts")) or self._wall())
        reason = _str(message.get("reason")) or "unknown"
        return Outcome(ended=[self._record(call, reason, ended_at, call.duration_s)])

    def _end_lost(self, call: Call, reason: str, ended_at: float) -> Outcome:
        """End a call the bridge never reported ending, and tell operators as if it had."""
        self.calls.pop((call.instance, call.call_id), None)
        started = parse_iso(call.started_at)
        duration = None
        if reason == INSTANCE_LOST and started is not None:
            duration = round(max(0.0, ended_at - started), 3)
        record = self._record(call, reason, iso(ended_at), duration)
        event = {
            "type": "call_ended",
            "ts": record.ended_at,
            "instance": call.instance,
            "call_id": call.call_id,
            "duration_s": duration,
            "reason": reason,
            "frames_in": call.frames_in,
            "frames_out": call.frames_out,
            "late_frames": call.late_frames,
            "synthetic": True,
        }
        return Outcome(events=[event], ended=[record])

    def _record(self, call: Call, reason: str, ended_at: str, duration: float | None) -> CallRecord:
        return CallRecord(
            call_id=call.call_id,
            instance=call.instance,
            transport=call.transport,
            remote=call.remote,
            caller=call.caller,
            started_at=call.started_at,
            ended_at=ended_at,
            duration_s=duration,
            reason=reason,
            frames_in=call.frames_in,
            frames_out=call.frames_out,
            late_frames=call.late_frames,
            suggestions=call.suggestions,
            stream_sid=call.stream_sid,
            call_sid=call.call_sid,
        )

    def _synthetic_started(self, inst: Instance, call: Call) -> dict[str, Any]:
        """A call_started for a call first learned from a snapshot, so subscribers add it."""
        event = {
            "type": "call_started",
            "ts": call.started_at or iso(self._wall()),
            "instance": inst.name,
            "synthetic": True,
        }
        event.update({k: v for k, v in call.to_dict().items() if k not in ("instance", "state")})
        return event

    def _call(self, inst: Instance, message: dict[str, Any]) -> Call | None:
        call_id = _str(message.get("call_id"))
        return None if call_id is None else self.calls.get((inst.name, call_id))

    def _refresh_state(self, inst: Instance) -> Outcome:
        if not inst.connected or inst.pid is None and inst.engine is None:
            return Outcome()
        new = "draining" if inst.draining else "up"
        if inst.state == new:
            return Outcome()
        old = inst.state
        inst.state = new
        inst.error = None
        inst.down_since = None
        reason = {
            "down": "connected",
            "stale": "messages resumed",
        }.get(old, "draining" if new == "draining" else "ready")
        return Outcome(events=[self._state_event(inst, reason)])

    def _state_event(self, inst: Instance, reason: str | None) -> dict[str, Any]:
        return {
            "type": "instance_state",
            "ts": iso(self._wall()),
            "instance": inst.name,
            "state": inst.state,
            "reason": reason,
            "info": inst.to_dict(),
        }

    # -- queries ---------------------------------------------------------------------------

    def find_calls(self, call_id: str, instance: str | None = None) -> list[Call]:
        return [
            c
            for (inst, cid), c in self.calls.items()
            if cid == call_id and (instance is None or inst == instance)
        ]

    def snapshot(self) -> dict[str, Any]:
        now = self._wall()
        return {
            "type": "snapshot",
            "ts": iso(now),
            "instances": [i.to_dict() for i in self.instances.values()],
            "calls": [c.to_dict(now) for c in self.calls.values()],
        }

    def active_call_count(self) -> int:
        return sum(1 for c in self.calls.values() if c.state == "active")
