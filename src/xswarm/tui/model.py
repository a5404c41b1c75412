"""What the dashboard knows: instances, calls, events, and how the operator sorts and filters.

Pure state with no Textual import, so every rule here (snapshot replaces state, hostile values
become plain bounded text, sorting and filtering by call id) is testable with plain calls.
The supervisor's messages arrive untrusted: a wrong type or an absurd size is dropped or
clipped, never raised into the UI loop. The app reads ``take_changes`` at its repaint rate, so
a burst of events costs one repaint.
"""

from __future__ import annotations

import heapq
import time
import typing
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from xswarm.protocol.capacity import Capacity, fleet_capacity
from xswarm.protocol.operator import (
    CALL_STATES,
    INSTANCE_STATES,
    CallInfo,
    InstanceInfo,
    Snapshot,
)
from xswarm.protocol.values import finite_number, whole_number

MAX_TEXT = 200
MAX_TRANSCRIPT = 4000
MAX_WORDS_PER_EVENT = 1000
HISTORY_POINTS = 120
CALL_EVENTS_KEPT = 200
LOG_EVENTS_KEPT = 500
ENDED_LINGER_S = 5.0
ENDED_KEPT = 200

# Sortable columns: key -> (label, how to read the sort value from a call).
SORT_COLUMNS: dict[str, str] = {
    "call_id": "id",
    "instance": "instance",
    "transport": "transport",
    "caller": "caller",
    "duration_s": "duration",
    "level_in_dbfs": "in dBFS",
    "level_out_dbfs": "out dBFS",
    "latency_p50_ms": "p50 ms",
    "latency_p99_ms": "p99 ms",
    "late_frames": "late",
    "state": "state",
}


def clip_text(value: Any, limit: int = MAX_TEXT) -> str:
    """Remote text made safe to keep: a string, no control characters, bounded length."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit and text.isprintable():
        return text
    if len(text) > limit * 4:
        text = text[: limit * 4]
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def as_number(value: Any) -> float | None:
    """A finite number or None (protocol.values decides what a peer's number is)."""
    number = finite_number(value)
    return None if number is None else float(number)


def as_int(value: Any) -> int | None:
    return whole_number(value)


@dataclass(frozen=True, slots=True)
class EventLine:
    """One line of the events pane: when (the sender's ts), what, and which call it concerns."""

    ts: str
    kind: str
    text: str
    call_id: str | None = None
    instance: str | None = None


@dataclass
class InstanceView:
    name: str
    url: str = ""
    state: str = "stale"
    engine: str = ""
    active_calls: int | None = None
    max_concurrent_calls: int | None = None
    tick_p50_ms: float | None = None
    tick_p99_ms: float | None = None
    cpu: float | None = None
    rss: float | None = None
    memory_high: float | None = None
    memory_max: float | None = None
    restarts: int | None = None
    version: str = ""
    pid: int | None = None
    error: str = ""
    refusals_total: int | None = None
    refusals_last_minute: int | None = None
    device: str = ""
    gpu: str = ""
    slots: int | None = None
    # Why the supervisor cannot reach it, as a short code (tls_untrusted, timeout…).
    failure: str = ""

    def update(self, data: Mapping[str, Any]) -> None:
        """Take every field the message carries with a usable value; keep the rest."""
        for name in ("url", "engine", "version", "error", "device", "gpu", "failure"):
            if name in data:
                setattr(self, name, clip_text(data[name]))
        if data.get("state") in INSTANCE_STATES:
            self.state = data["state"]
        for name in ("tick_p50_ms", "tick_p99_ms", "cpu", "rss"):
            if name in data:
                setattr(self, name, as_number(data[name]))
        for name in (
            "active_calls",
            "max_concurrent_calls",
            "restarts",
            "pid",
            "refusals_total",
            "refusals_last_minute",
            "slots",
        ):
            if name in data:
                setattr(self, name, as_int(data[name]))
        limits = data.get("limits")
        if isinstance(limits, Mapping):
            self.memory_high = as_number(limits.get("memory_high"))
            self.memory_max = as_number(limits.get("memory_max"))

    @classmethod
    def from_info(cls, info: InstanceInfo) -> InstanceView:
        view = cls(name=clip_text(info.name))
        view.update({k: v for k, v in info.encode().items() if v is not None and k != "name"})
        return view


@dataclass
class CallView(CallInfo):
    """A call as the dashboard keeps it: the operators' record of a live call, updated field
    by field as messages come (never read or written whole), its text never None because it
    is shown and searched as it is, plus what the screens draw over time."""

    instance: str = ""
    transport: str = ""
    remote: str = ""
    caller: str = ""
    started_at: str = ""
    state: str = "active"
    end_reason: str = ""
    ended_at: float | None = None
    hangup_requested: bool = False
    # Arrays of doubles, not deques of floats: the garbage collector walks every item of a
    # deque, and at 5000 calls these histories made each full collection 55-85 ms, a pause
    # that a key pressed at that moment waited through. An array's items are not walked.
    latency_p50_history: array[float] = field(default_factory=lambda: array("d"))
    latency_p99_history: array[float] = field(default_factory=lambda: array("d"))
    level_in_history: array[float] = field(default_factory=lambda: array("d"))
    level_out_history: array[float] = field(default_factory=lambda: array("d"))
    transcript: str = ""
    events: deque[EventLine] = field(default_factory=lambda: deque(maxlen=CALL_EVENTS_KEPT))
    event_count: int = 0

    def update(self, data: Mapping[str, Any]) -> None:
        """Take the fields the message carries; one pass over the message, not over the names
        we know (a fleet sends thousands of these a second)."""
        for name, value in data.items():
            read = _CALL_FIELDS.get(name)
            if read is not None:
                setattr(self, name, read(value))
        if data.get("state") in CALL_STATES:
            self.state = data["state"]

    @classmethod
    def from_info(cls, info: CallInfo) -> CallView:
        view = cls(call_id=clip_text(info.call_id))
        view.update({k: v for k, v in info.encode().items() if v is not None and k != "call_id"})
        return view

    def record_stats(self) -> None:
        """Append the current figures to the histories the detail screen draws."""
        for value, history in (
            (self.latency_p50_ms, self.latency_p50_history),
            (self.latency_p99_ms, self.latency_p99_history),
            (self.level_in_dbfs, self.level_in_history),
            (self.level_out_dbfs, self.level_out_history),
        ):
            if value is not None:
                history.append(value)
                if len(history) > HISTORY_POINTS:
                    del history[0]

    def add_words(self, text: str) -> None:
        self.transcript = (self.transcript + text)[-MAX_TRANSCRIPT:]

    @property
    def shown_state(self) -> str:
        if self.state == "ended":
            return f"ended: {self.end_reason}" if self.end_reason else "ended"
        if self.hangup_requested and self.state == "active":
            return "hanging up"
        return self.state

    def haystack(self) -> str:
        return f"{self.call_id}\n{self.caller}\n{self.instance}\n{self.transport}\n{self.remote}"


# The fields ``CallView.update`` takes from a message (every field of a call but its identity
# and its state, which only takes known states), each read by its type.
_READ_BY_TYPE: dict[object, Callable[[Any], Any]] = {
    str | None: clip_text,
    float | None: as_number,
    int | None: as_int,
}
_CALL_FIELDS: dict[str, Callable[[Any], Any]] = {
    name: _READ_BY_TYPE[hint]
    for name, hint in typing.get_type_hints(CallInfo).items()
    if name not in ("call_id", "state")
}


@dataclass
class Changes:
    """What changed since the last repaint; ``reset`` means rebuild everything."""

    reset: bool = False
    calls: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    instances: bool = False
    events: list[EventLine] = field(default_factory=list)
    connection: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.reset
            or self.calls
            or self.removed
            or self.instances
            or self.events
            or self.connection
        )


# Events that are chatty (1 Hz per call or instance) stay out of the events pane.
QUIET_EVENTS = frozenset({"call_stats", "instance_status", "text", "pong"})


class DashboardModel:
    """The dashboard's state, fed by supervisor messages, read by the widgets."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self.instances: dict[str, InstanceView] = {}
        self.calls: dict[str, CallView] = {}
        self.events: deque[EventLine] = deque(maxlen=LOG_EVENTS_KEPT)
        self.sort_column: str | None = None
        self.sort_reverse = False
        self.filter_text = ""
        self.connection = "offline"
        self.connection_message = "not connected"
        self._changes = Changes(reset=True)

    def take_changes(self) -> Changes:
        changes, self._changes = self._changes, Changes()
        return changes

    @property
    def connected(self) -> bool:
        return self.connection == "up"

    def set_connection(self, state: str, message: str) -> None:
        """``up``, ``connecting``, ``down``, ``refused`` or ``offline``; rows dim unless up."""
        self.connection = state
        self.connection_message = clip_text(message, 300)
        self._changes.connection = True

    def note(self, kind: str, text: str, ts: str = "", call_id: str | None = None) -> None:
        """A line for the events pane that comes from the dashboard itself."""
        if not ts:
            ts = time.strftime("%H:%M:%S", time.gmtime(self.wall()))
        self._log(EventLine(ts=ts, kind=kind, text=clip_text(text, 500), call_id=call_id))

    def _log(self, line: EventLine) -> None:
        self.events.append(line)
        self._changes.events.append(line)
        if line.call_id is not None and line.call_id in self.calls:
            call = self.calls[line.call_id]
            call.events.append(line)
            call.event_count += 1

    def apply_snapshot(self, message: Mapping[str, Any]) -> None:
        """Replace everything with the supervisor's snapshot: state after a gap is not mergeable."""
        snapshot = Snapshot.decode(message)
        self.instances = {}
        self.calls = {}
        for info in snapshot.instances:
            instance = InstanceView.from_info(info)
            if instance.name:
                self.instances[instance.name] = instance
        for call_info in snapshot.calls:
            call = CallView.from_info(call_info)
            if call.call_id:
                call.record_stats()
                self.calls[call.call_id] = call
        self._changes = Changes(
            reset=True, instances=True, events=self._changes.events, connection=True
        )
        self.note("snapshot", f"{len(self.instances)} instances, {len(self.calls)} live calls")

    def apply(self, message: Mapping[str, Any]) -> None:
        """One live message from the supervisor; unknown types are logged, never raised."""
        kind = message.get("type")
        if not isinstance(kind, str):
            self.note("error", "supervisor sent a message without a type")
            return
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, message)
        if kind not in QUIET_EVENTS:
            self._log(self._describe(kind, message))

    def apply_batch(self, events: Iterable[Mapping[str, Any]]) -> None:
        """A supervisor ``batch``: its events in order, seen by the next repaint together."""
        for event in events:
            self.apply(event)

    def _describe(self, kind: str, message: Mapping[str, Any]) -> EventLine:
        call_id = clip_text(message.get("call_id")) or None
        instance = clip_text(message.get("instance")) or None
        details = []
        for name in (
            "transport",
            "caller",
            "remote",
            "reason",
            "state",
            "text",
            "message",
            "digit",
        ):
            if name in message and message[name] not in (None, ""):
                details.append(f"{name}={clip_text(message[name], 120)}")
        if kind == "call_ended" and as_number(message.get("duration_s")) is not None:
            details.append(f"after {format_duration(as_number(message.get('duration_s')))}")
        text = " ".join(part for part in (call_id or "", *details) if part)
        return EventLine(
            ts=_short_ts(message.get("ts")),
            kind=kind,
            text=text,
            call_id=call_id,
            instance=instance,
        )

    def _instance(self, message: Mapping[str, Any]) -> InstanceView | None:
        name = clip_text(message.get("instance"))
        if not name:
            return None
        if name not in self.instances:
            self.instances[name] = InstanceView(name=name, state="up")
        return self.instances[name]

    def _call(self, message: Mapping[str, Any], create: bool) -> CallView | None:
        call_id = clip_text(message.get("call_id"))
        if not call_id:
            return None
        call = self.calls.get(call_id)
        if call is None and create:
            call = CallView(call_id=call_id)
            self.calls[call_id] = call
        if call is not None:
            self._changes.calls.add(call_id)
        return call

    def _on_call_started(self, message: Mapping[str, Any]) -> None:
        call = self._call(message, create=True)
        if call is not None:
            call.update(message)
            call.state = "active"

    def _on_call_ended(self, message: Mapping[str, Any]) -> None:
        call = self._call(message, create=False)
        if call is None:
            return
        call.update(message)
        call.state = "ended"
        call.end_reason = clip_text(message.get("reason"), 40)
        call.ended_at = self.clock()

    def _on_call_stats(self, message: Mapping[str, Any]) -> None:
        call = self._call(message, create=True)
        if call is not None:
            call.update(message)
            call.record_stats()
            if call.state == "unknown":
                call.state = "active"

    def _on_suggestion_applied(self, message: Mapping[str, Any]) -> None:
        call = self._call(message, create=False)
        if call is not None:
            call.suggestions = (call.suggestions or 0) + 1

    def _on_text(self, message: Mapping[str, Any]) -> None:
        call = self._call(message, create=False)
        if call is not None and isinstance(message.get("text"), str):
            call.add_words(clip_text(message["text"], MAX_WORDS_PER_EVENT))

    def _on_instance_status(self, message: Mapping[str, Any]) -> None:
        instance = self._instance(message)
        if instance is None:
            return
        was_live = self.instance_is_live(instance.name)
        fields = {k: v for k, v in message.items() if k != "state"}
        details = message.get("engine_details")
        if isinstance(details, Mapping) and "slots" in details:
            fields["slots"] = details["slots"]
        instance.update(fields)
        if message.get("state") == "draining":
            instance.state = "draining"
        elif instance.state != "up":
            # A status comes only over a live connection: whatever kept it away is over.
            instance.state = "up"
            instance.failure = ""
        self._changes.instances = True
        if self.instance_is_live(instance.name) != was_live:
            self._mark_instance_calls(instance.name)

    def _on_instance_state(self, message: Mapping[str, Any]) -> None:
        instance = self._instance(message)
        if instance is None:
            return
        was_live = self.instance_is_live(instance.name)
        info = message.get("info")
        if isinstance(info, Mapping):
            instance.update({k: v for k, v in info.items() if k != "name"})
        instance.update({"state": message.get("state")})
        if "reason" in message:
            instance.error = clip_text(message.get("reason"))
        self._changes.instances = True
        if self.instance_is_live(instance.name) != was_live:
            self._mark_instance_calls(instance.name)

    def _on_instance_removed(self, message: Mapping[str, Any]) -> None:
        name = clip_text(message.get("instance"))
        if self.instances.pop(name, None) is not None:
            self._changes.instances = True
            self._mark_instance_calls(name)

    def _mark_instance_calls(self, name: str) -> None:
        """Rows of ``name``'s calls draw its liveness (dim and "stale" when it is not live):
        they are redrawn when that changes, not on every status report."""
        self._changes.calls.update(c.call_id for c in self.calls.values() if c.instance == name)

    def instance_is_live(self, name: str) -> bool:
        instance = self.instances.get(name)
        return instance is None or instance.state in ("up", "draining")

    def call_is_stale(self, call: CallView) -> bool:
        return not self.connected or not self.instance_is_live(call.instance)

    def request_hangup(self, call_id: str) -> None:
        call = self.calls.get(call_id)
        if call is not None and call.state != "ended":
            call.hangup_requested = True
            self._changes.calls.add(call_id)

    def prune(self) -> None:
        """Drop ended calls once they have been shown for ``ENDED_LINGER_S``."""
        now = self.clock()
        for call_id in [
            c.call_id
            for c in self.calls.values()
            if c.ended_at is not None and now - c.ended_at >= ENDED_LINGER_S
        ]:
            del self.calls[call_id]
            self._changes.removed.add(call_id)
            self._changes.calls.discard(call_id)

    def set_filter(self, text: str) -> None:
        """A new filter rebuilds the table; the same again (Escape, no filter) costs nothing."""
        wanted = text.strip().lower()
        if wanted != self.filter_text:
            self.filter_text = wanted
            self._changes.reset = True

    def set_sort(self, column: str) -> None:
        """Sort by ``column``; choosing the current column again flips the direction."""
        if column not in SORT_COLUMNS:
            raise ValueError(
                f"unknown sort column {column!r}; expected one of {list(SORT_COLUMNS)}"
            )
        if self.sort_column == column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column = column
            self.sort_reverse = False
        self._changes.reset = True

    def next_sort(self) -> None:
        columns = list(SORT_COLUMNS)
        index = -1 if self.sort_column is None else columns.index(self.sort_column)
        self.sort_column = columns[(index + 1) % len(columns)]
        self.sort_reverse = False
        self._changes.reset = True

    def reverse_sort(self) -> None:
        if self.sort_column is None:
            self.sort_column = "call_id"
        self.sort_reverse = not self.sort_reverse
        self._changes.reset = True

    def matches(self, call: CallView) -> bool:
        return not self.filter_text or self.filter_text in call.haystack().lower()

    def sort_key(self, call: CallView) -> tuple[Any, ...]:
        """Missing values sort last in either direction; ties fall back to the call id."""
        column = self.sort_column or "call_id"
        value = call.shown_state if column == "state" else getattr(call, column)
        missing = value is None or value == ""
        if isinstance(value, str):
            value = value.lower()
        if self.sort_reverse:
            return (not missing, value if not missing else 0, call.call_id)
        return (missing, value if not missing else 0, call.call_id)

    def visible_calls(self) -> list[CallView]:
        """The calls the table shows, filtered and in display order."""
        if self.filter_text:
            shown = [c for c in self.calls.values() if self.matches(c)]
        else:
            shown = list(self.calls.values())
        if self.sort_column in (None, "call_id"):
            # The same order as ``sort_key`` gives (ids are never empty), for less per call.
            shown.sort(key=_by_call_id, reverse=self.sort_reverse)
        else:
            shown.sort(key=self.sort_key, reverse=self.sort_reverse)
        return shown


def _by_call_id(call: CallView) -> tuple[str, str]:
    return call.call_id.lower(), call.call_id


_HANDLERS: dict[str, Callable[[DashboardModel, Mapping[str, Any]], None]] = {
    "call_started": DashboardModel._on_call_started,
    "call_ended": DashboardModel._on_call_ended,
    "call_stats": DashboardModel._on_call_stats,
    "text": DashboardModel._on_text,
    "suggestion_applied": DashboardModel._on_suggestion_applied,
    "instance_status": DashboardModel._on_instance_status,
    "instance_state": DashboardModel._on_instance_state,
    "instance_removed": DashboardModel._on_instance_removed,
}


def _short_ts(value: Any) -> str:
    """``2026-11-26T05:01:02.345Z`` -> ``05:01:02``; anything else is clipped as it is."""
    text = clip_text(value, 40)
    if "T" in text:
        return text.split("T", 1)[1][:8]
    return text[:8]


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    total = int(max(seconds, 0))
    if total < 3600:
        return f"{total // 60:02d}:{total % 60:02d}"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


def format_bytes(value: float | None) -> str:
    """Compact sizes for a narrow panel: ``512M``, ``1.5G``, ``14G``."""
    if value is None:
        return "–"
    for unit in ("B", "K", "M", "G"):
        if abs(value) < 1024:
            return f"{value:.1f}{unit}" if abs(value) < 10 and unit != "B" else f"{value:.0f}{unit}"
        value /= 1024
    return f"{value:.0f}T"


# -- Fleet scale: the order of the calls table, top-N views, summaries ------------------------
# Kept apart from DashboardModel so that each repaint's cost is chosen here, not by the widgets:
# the order is re-sorted at most every RESORT_S for changed figures (at once for calls that
# come or go, or a new sort or filter; every repaint for a small fleet), and the widgets draw
# only what is on screen of it.

RESORT_S = 1.0
# Up to this many calls a re-sort costs under a millisecond: done on every repaint.
SORT_EVERY_PAINT_UP_TO = 500
TOP_N = 20

# View name -> (the figure it ranks by, label for the operator). Highest first, missing last.
TOP_VIEWS: dict[str, tuple[str, str]] = {
    "latency": ("latency_p99_ms", "worst p99 latency"),
    "late": ("late_frames", "most late frames"),
    "longest": ("duration_s", "longest"),
    "loudest": ("level_in_dbfs", "loudest caller"),
}


class CallOrder:
    """The calls table's row order: the model's filter and sort, or a top-N view.

    ``view`` names a ``TOP_VIEWS`` entry; then only the ``TOP_N`` calls highest by its figure
    show, found with a heap rather than a full sort.
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.clock = clock
        self.view: str | None = None
        self.order: list[str] = []
        self.sorts = 0
        self._sorted_at: float | None = None
        self._key: tuple[Any, ...] | None = None
        self._known: set[str] = set()
        self._stale = False

    def set_view(self, view: str | None) -> None:
        if view is not None and view not in TOP_VIEWS:
            raise ValueError(f"unknown view {view!r}; expected one of {list(TOP_VIEWS)}")
        self.view = view
        self._key = None

    def update(self, model: DashboardModel, changes: Changes) -> list[str]:
        """The order after ``changes``; re-sorts only when it may have moved and is due.

        A new sort, filter or view re-sorts at once. New calls and changed figures wait until
        a re-sort is due (every repaint up to ``SORT_EVERY_PAINT_UP_TO`` calls, else every
        ``RESORT_S``); calls that are gone leave at once.
        """
        now = (self.clock or model.clock)()
        key = (self.view, model.sort_column, model.sort_reverse, model.filter_text)
        known = self._known
        if any(c not in known for c in changes.calls if c in model.calls):
            self._stale = True
        if changes.calls and (self.view is not None or model.sort_column not in (None, "call_id")):
            self._stale = True
        due = (
            self._sorted_at is None
            or len(model.calls) <= SORT_EVERY_PAINT_UP_TO
            or now - self._sorted_at >= RESORT_S
        )
        if key != self._key or changes.reset or (self._stale and due):
            self._sort(model, now, key)
        elif changes.removed & known or any(c not in model.calls for c in self.order):
            self.order = [c for c in self.order if c in model.calls]
            self._known = set(self.order)
        return self.order

    def _sort(self, model: DashboardModel, now: float, key: tuple[Any, ...]) -> None:
        self.sorts += 1
        self._sorted_at = now
        self._key = key
        self._stale = False
        self.order = self._ranked(model)
        self._known = set(self.order)

    def _ranked(self, model: DashboardModel) -> list[str]:
        if self.view is None:
            return [c.call_id for c in model.visible_calls()]
        figure = TOP_VIEWS[self.view][0]
        ranked = [
            (value, c.call_id)
            for c in model.calls.values()
            if model.matches(c) and (value := getattr(c, figure)) is not None
        ]
        return [call_id for _, call_id in heapq.nlargest(TOP_N, ranked)]


def state_counts(model: DashboardModel) -> dict[str, int]:
    """How many calls are in each shown state (active, hanging up, unknown, ended…)."""
    counts = Counter(call.state for call in model.calls.values())
    hanging_up = sum(
        1 for call in model.calls.values() if call.hangup_requested and call.state == "active"
    )
    if hanging_up:
        counts["active"] -= hanging_up
        counts["hanging up"] = hanging_up
    return {state: n for state, n in counts.items() if n}


@dataclass(frozen=True)
class FleetTotals:
    """The instances panel's totals across the fleet, from ``instance_status``.

    ``full`` counts instances with no free slot (they refuse every new call); the refusals
    are the upgrades the instances refused, as the supervisor counted them (None when no
    instance reports them: an older bridge or supervisor). ``hosts``: the same sums per host
    (protocol.capacity, the supervisor's own figures).
    """

    instances: int
    up: int
    calls: int
    free_slots: int
    full: int
    refusals_last_minute: int | None = None
    refusals_total: int | None = None
    slots: int = 0
    hosts: Mapping[str, Capacity] = field(default_factory=dict)


def fleet_totals(model: DashboardModel) -> FleetTotals:
    fleet = fleet_capacity(model.instances.values())
    total = fleet.total
    return FleetTotals(
        total.instances,
        total.up,
        total.calls,
        total.free,
        total.full,
        total.refusals_last_minute,
        total.refusals_total,
        total.slots,
        fleet.hosts,
    )


def host_totals_line(totals: FleetTotals) -> str:
    """Free slots per host, when the fleet spans several: where the room is."""
    if len(totals.hosts) < 2:
        return ""
    return " · ".join(f"{host or '?'} {c.free}/{c.slots} free" for host, c in totals.hosts.items())


def find_call(model: DashboardModel, text: str) -> str | None:
    """The call an operator means by ``text``: its exact id, else the first id containing it."""
    wanted = text.strip()
    if not wanted:
        return None
    if wanted in model.calls:
        return wanted
    lowered = wanted.lower()
    return min((c for c in model.calls if lowered in c.lower()), default=None)
