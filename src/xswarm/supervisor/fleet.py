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
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from xswarm.protocol import control
from xswarm.protocol.capacity import FleetCapacity, fleet_capacity, host_of
from xswarm.protocol.control import MemoryLimits
from xswarm.protocol.operator import (
    CallInfo,
    InstanceInfo,
    InstanceRemoved,
    InstanceState,
    Snapshot,
)
from xswarm.protocol.values import BadMessage, whole_number

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
        "suggestion_started",
        "suggestion_finished",
        "context_exceeded",
        "instance_status",
    }
)

# "Refusals in the last minute" compares an instance's refusal count with its count this long
# ago (or its first count seen, when the supervisor has watched it for less).
REFUSAL_WINDOW_S = 60.0

# States of an instance the supervisor cannot reach (see upstream.classify_failure).
NOT_CONNECTED = ("down", "unreachable", "auth_refused")

# Reasons for ending a call the bridge never reported ending.
INSTANCE_LOST = "instance_lost"
UNOBSERVED = "unobserved"


def iso(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds, the format the bridge stamps its events with."""
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def parse_iso(text: object) -> float | None:
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
    # Wall time of the last message, formatted only when shown (it changes on every event).
    last_seen_wall: float | None = None
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
    refusals_total: int | None = None
    refusals_last_minute: int | None = None
    # (monotonic time, refusals_total) of the last REFUSAL_WINDOW_S and the one just before.
    refusal_counts: deque[tuple[float, int]] = field(default_factory=deque)
    # Where its engine runs ("cuda:1"), the card (model, PCI bus id), and its engine's slots.
    device: str | None = None
    gpu: str | None = None
    slots: int | None = None
    # Why it is not connected, as a short code (upstream.Failure.code); None when connected.
    failure: str | None = None

    def info(self) -> InstanceInfo:
        return InstanceInfo(
            name=self.name,
            url=self.url,
            state=self.state,
            engine=self.engine,
            active_calls=self.active_calls,
            max_concurrent_calls=self.max_concurrent_calls,
            tick_p50_ms=self.tick_p50_ms,
            tick_p99_ms=self.tick_p99_ms,
            cpu=self.cpu,
            rss=self.rss,
            limits=MemoryLimits(self.memory_high, self.memory_max),
            restarts=self.restarts,
            last_seen=None if self.last_seen_wall is None else iso(self.last_seen_wall),
            version=self.version,
            pid=self.pid,
            error=self.error,
            bridge_name=self.bridge_name,
            refusals_total=self.refusals_total,
            refusals_last_minute=self.refusals_last_minute,
            device=self.device,
            gpu=self.gpu,
            slots=self.slots,
            host=host_of(self.url),
            failure=self.failure,
        )

    def count_refusals(self, total: int, now: float) -> None:
        """Take the bridge's refusal count; a count that went down means a new process."""
        counts = self.refusal_counts
        if counts and total < counts[-1][1]:
            counts.clear()
            counts.append((now, 0))
        counts.append((now, total))
        while len(counts) > 1 and now - counts[1][0] >= REFUSAL_WINDOW_S:
            counts.popleft()
        self.refusals_total = total
        self.refusals_last_minute = total - counts[0][1]

    def to_dict(self) -> dict[str, Any]:
        return self.info().encode()


@dataclass
class LiveCall(CallInfo):
    """One call the supervisor believes is live on an instance: the record operators get,
    kept up to date as the bridge reports the call."""

    instance: str
    suggestions: int = 0
    # "active" while its instance is connected; "unknown" while the instance is unreachable.
    state: str = "active"

    def info(self, wall_now: float | None = None) -> CallInfo:
        """The call as operators see it now (a copy); with ``wall_now``, an active call's
        duration is live."""
        duration = self.duration_s
        started = parse_iso(self.started_at)
        if wall_now is not None and started is not None and self.state == "active":
            duration = round(max(0.0, wall_now - started), 3)
        # A LiveCall's attributes are CallInfo's fields: its __dict__ is a CallInfo's keywords.
        return CallInfo(**(vars(self) | {"duration_s": duration}))

    def to_dict(self, wall_now: float | None = None) -> dict[str, Any]:
        return self.info(wall_now).encode()

    def update_from(self, started: control.CallStarted) -> None:
        """Take the descriptive fields the bridge sent; absent ones keep what we knew."""
        for name in ("transport", "remote", "caller", "stream_sid", "call_sid"):
            value = getattr(started, name)
            if value is not None:
                setattr(self, name, value)

    def update_stats(self, stats: control.CallStats | control.CallEnded) -> None:
        names: tuple[str, ...] = ("duration_s",)
        if isinstance(stats, control.CallStats):
            names += ("level_in_dbfs", "level_out_dbfs", "latency_p50_ms", "latency_p99_ms")
        for name in names:
            value = getattr(stats, name)
            if value is not None:
                setattr(self, name, value)
        for name in ("frames_in", "frames_out", "late_frames"):
            value = getattr(stats.counters, name)
            if value is not None:
                setattr(self, name, value)

    def update_from_snapshot(self, entry: control.SnapshotCall) -> None:
        self.update_from(entry.started)
        if isinstance(entry.started_at, str):
            self.started_at = entry.started_at
        self.update_stats(entry.stats)


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
    started: list[LiveCall] = field(default_factory=list)
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
        self.calls: dict[tuple[str, str], LiveCall] = {}
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
        out.events.append(InstanceRemoved(name, iso(self._wall())).encode())
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

    def disconnected(
        self, name: str, reason: str, state: str = "down", failure: str | None = None
    ) -> Outcome:
        """The connection dropped or was refused: ``state`` (down, unreachable, auth_refused)
        now, its calls unknown until it returns. Operators hear of it when the state or the
        failure changes, not on every retry."""
        inst = self.instances.get(name)
        if inst is None:
            return Outcome()
        was, failed = inst.state, inst.failure
        inst.connected = False
        inst.awaiting_snapshot = False
        inst.error = reason
        inst.failure = failure
        if was not in NOT_CONNECTED:
            inst.down_since = self._monotonic()
            inst.lost_wall = self._wall()
        inst.state = state
        for call in self.calls.values():
            if call.instance == name:
                call.state = "unknown"
        if was == state and failed == failure:
            return Outcome()
        return Outcome(events=[self._state_event(inst, reason)])

    def check_stale(self) -> Outcome:
        """Mark connected instances that have been silent for ``stale_after`` seconds."""
        out = Outcome()
        now = self._monotonic()
        for inst in self.instances.values():
            if not inst.connected or inst.state in (*NOT_CONNECTED, "stale"):
                continue
            if inst.last_message_at is not None and now - inst.last_message_at >= self.stale_after:
                inst.state = "stale"
                silent = now - inst.last_message_at
                inst.error = f"no message for {silent:.1f} s"
                out.events.append(self._state_event(inst, inst.error))
        return out

    # -- calls known from an earlier run ---------------------------------------------------

    def adopt_open_calls(self, calls: Iterable[LiveCall]) -> Outcome:
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

    def apply(self, name: str, message: Mapping[str, Any]) -> Outcome:
        """One message from instance ``name``'s control channel (a decoded JSON object).

        Any message proves the connection lives, even one we cannot use; events are relayed
        to operators re-encoded from their typed form, under our name for the instance.
        """
        inst = self.instances.get(name)
        if inst is None:
            return Outcome()
        inst.last_message_at = self._monotonic()
        inst.last_seen_wall = self._wall()
        out = Outcome()
        try:
            envelope = control.decode_event(message)
        except BadMessage:
            envelope = None
        if envelope is not None:
            out.extend(self._event(inst, envelope))
        out.extend(self._refresh_state(inst))
        return out

    def _event(self, inst: Instance, envelope: control.Envelope) -> Outcome:
        out = Outcome()
        event = envelope.event
        if isinstance(event, control.Hello):
            self._hello(inst, event, envelope.instance)
        elif isinstance(event, control.Snapshot):
            out.extend(self._snapshot(inst, event))
        elif isinstance(event, control.InstanceStatus):
            self._status(inst, event)
        elif isinstance(event, control.CallStarted):
            out.extend(self._call_started(inst, event, envelope.ts))
        elif isinstance(event, control.CallEnded):
            out.extend(self._call_ended(inst, event, envelope.ts))
        elif isinstance(event, control.CallStats):
            call = self.calls.get((inst.name, event.call_id))
            if call is not None:
                call.update_stats(event)
        elif isinstance(event, control.SuggestionApplied):
            call = self.calls.get((inst.name, event.call_id))
            if call is not None:
                call.suggestions += 1
        if event.TYPE in RELAYED_EVENTS:
            relayed = self._relayed(inst, envelope)
            if isinstance(event, control.InstanceStatus) and inst.refusals_total is not None:
                relayed["refusals_total"] = inst.refusals_total
                relayed["refusals_last_minute"] = inst.refusals_last_minute
            out.events.append(relayed)
        return out

    @staticmethod
    def _relayed(inst: Instance, envelope: control.Envelope) -> dict[str, Any]:
        head: dict[str, Any] = {"type": envelope.event.TYPE}
        if envelope.ts is not None:
            head["ts"] = envelope.ts
        head["instance"] = inst.name
        return head | envelope.event.body()

    def _hello(self, inst: Instance, hello: control.Hello, bridge_name: str | None) -> None:
        if hello.pid is not None and inst.pid is not None and hello.pid != inst.pid:
            inst.restarts += 1
        if hello.pid is not None:
            inst.pid = hello.pid
        inst.version = hello.version or inst.version
        inst.engine = hello.engine or inst.engine
        inst.bridge_name = bridge_name or inst.bridge_name
        if hello.max_concurrent_calls is not None:
            inst.max_concurrent_calls = hello.max_concurrent_calls

    def _status(self, inst: Instance, status: control.InstanceStatus) -> None:
        inst.engine = status.engine or inst.engine
        inst.version = status.version or inst.version
        for name in (
            "active_calls",
            "max_concurrent_calls",
            "rss",
            "tick_p50_ms",
            "tick_p99_ms",
            "cpu",
        ):
            value = getattr(status, name)
            if value is not None:
                setattr(inst, name, value)
        # Restarts are counted from hello only: one new process, one new connection.
        inst.pid = status.pid or inst.pid
        if status.limits is not None:
            inst.memory_high = status.limits.memory_high
            inst.memory_max = status.limits.memory_max
        if status.refused_total is not None:
            inst.count_refusals(sum(status.refused_total.values()), self._monotonic())
        inst.draining = status.state == "draining"
        inst.device = status.device or inst.device
        inst.gpu = status.gpu or inst.gpu
        slots = whole_number((status.engine_details or {}).get("slots"))
        inst.slots = inst.slots if slots is None else slots

    def _snapshot(self, inst: Instance, snapshot: control.Snapshot) -> Outcome:
        """Reconcile: calls the bridge lists are live; known calls it does not list are over."""
        out = Outcome()
        if snapshot.status is not None:
            self._status(inst, snapshot.status)
        listed = {entry.call_id: entry for entry in snapshot.calls}
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
                fresh = LiveCall(call_id=call_id, instance=inst.name)
                fresh.update_from_snapshot(entry)
                self.calls[key] = fresh
                out.started.append(fresh)
                out.events.append(self._synthetic_started(inst, fresh))
            else:
                known.update_from_snapshot(entry)
                known.state = "active"
        inst.awaiting_snapshot = False
        inst.lost_wall = None
        inst.adopted = False
        return out

    def _call_started(
        self, inst: Instance, started: control.CallStarted, ts: str | None
    ) -> Outcome:
        key = (inst.name, started.call_id)
        call = self.calls.get(key)
        fresh = call is None
        if call is None:
            call = LiveCall(call_id=started.call_id, instance=inst.name)
            self.calls[key] = call
        call.update_from(started)
        if call.started_at is None:
            call.started_at = ts or iso(self._wall())
        call.state = "active"
        return Outcome(started=[call] if fresh else [])

    def _call_ended(self, inst: Instance, ended: control.CallEnded, ts: str | None) -> Outcome:
        call = self.calls.pop((inst.name, ended.call_id), None)
        if call is None:
            # It started while we were not watching and ended before the snapshot told us.
            call = LiveCall(call_id=ended.call_id, instance=inst.name)
        call.update_stats(ended)
        # Re-stamped in one format so that history sorts by text.
        ended_at = iso(parse_iso(ts) or self._wall())
        return Outcome(
            ended=[self._record(call, ended.reason or "unknown", ended_at, call.duration_s)]
        )

    def _end_lost(self, call: LiveCall, reason: str, ended_at: float) -> Outcome:
        """End a call the bridge never reported ending, and tell operators as if it had."""
        self.calls.pop((call.instance, call.call_id), None)
        started = parse_iso(call.started_at)
        duration = None
        if reason == INSTANCE_LOST and started is not None:
            duration = round(max(0.0, ended_at - started), 3)
        record = self._record(call, reason, iso(ended_at), duration)
        counters = control.Counters(call.frames_in, call.frames_out, call.late_frames)
        ended = control.CallEnded(call.call_id, duration, reason, counters)
        event = control.stamp(ended, record.ended_at, call.instance) | {"synthetic": True}
        return Outcome(events=[event], ended=[record])

    def _record(
        self, call: LiveCall, reason: str, ended_at: str, duration: float | None
    ) -> CallRecord:
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

    def _synthetic_started(self, inst: Instance, call: LiveCall) -> dict[str, Any]:
        """A call_started for a call first learned from a snapshot, so subscribers add it."""
        event = {
            "type": "call_started",
            "ts": call.started_at or iso(self._wall()),
            "instance": inst.name,
            "synthetic": True,
        }
        event.update({k: v for k, v in call.to_dict().items() if k not in ("instance", "state")})
        return event

    def _refresh_state(self, inst: Instance) -> Outcome:
        if not inst.connected or inst.pid is None and inst.engine is None:
            return Outcome()
        new = "draining" if inst.draining else "up"
        if inst.state == new:
            return Outcome()
        old = inst.state
        inst.state = new
        inst.error = None
        inst.failure = None
        inst.down_since = None
        if old in NOT_CONNECTED:
            reason = "connected"
        elif old == "stale":
            reason = "messages resumed"
        else:
            reason = "draining" if new == "draining" else "ready"
        return Outcome(events=[self._state_event(inst, reason)])

    def _state_event(self, inst: Instance, reason: str | None) -> dict[str, Any]:
        return InstanceState(iso(self._wall()), inst.name, inst.state, reason, inst.info()).encode()

    # -- queries ---------------------------------------------------------------------------

    def find_calls(self, call_id: str, instance: str | None = None) -> list[LiveCall]:
        return [
            c
            for (inst, cid), c in self.calls.items()
            if cid == call_id and (instance is None or inst == instance)
        ]

    def snapshot(self) -> dict[str, Any]:
        now = self._wall()
        return Snapshot(
            ts=iso(now),
            instances=tuple(i.info() for i in self.instances.values()),
            calls=tuple(c.info(now) for c in self.calls.values()),
        ).encode()

    def capacity(self) -> FleetCapacity:
        """Slots, calls and free slots per host and in total (``/api/instances?totals=1``)."""
        return fleet_capacity(i.info() for i in self.instances.values())

    def active_call_count(self) -> int:
        return sum(1 for c in self.calls.values() if c.state == "active")
