"""The bridge ⇄ supervisor wire (``WS /control``, docs/CONTROL.md), sans-I/O.

Events flow from the bridge, commands from the supervisor; both are typed here once. Every
event is a frozen dataclass whose ``encode()`` gives the exact JSON object the bridge sends
(``type`` first, without the ``ts``/``instance`` envelope, which ``stamp`` adds), and whose
``decode`` reads one back.

Decoding events is lenient by design (``values.Lenient``, from each dataclass's annotations):
a bridge newer or buggier than the supervisor must not blind it. Only what identifies an event
(its ``type``, the ``call_id`` of a call event) is required and refused with
:class:`BadMessage`; any other field of the wrong type, or a number that is not finite, reads
as absent (``None``). Commands are decoded strictly: the sender is told precisely what is
wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from xswarm.protocol.values import (
    BadMessage,
    Encodable,
    Lenient,
    finite_number,
    identifier,
    kind,
    load_object,
    mapping,
    message_type,
    omit_default,
    optional_text,
    required_text,
    text,
)

# Operator suggestions: the limits every hop (TUI, supervisor, bridge) applies.
MAX_SUGGESTION_CHARS = 1000
PRIORITIES = ("low", "normal", "high")

# Call-end reasons the bridge reports (docs/CONTROL.md).
END_REASONS = (
    "caller_hangup",
    "operator_hangup",
    "disconnected",
    "protocol_error",
    "slow_client",
    "drain_timeout",
    "shutdown",
    "engine_error",
)


def suggestion_problem(text_value: str, priority: str) -> str | None:
    """Why a suggestion breaks the shared limits, in the operator's words; None when it fits."""
    if not text_value.strip():
        return "empty text"
    if len(text_value) > MAX_SUGGESTION_CHARS:
        return f"text is {len(text_value)} characters; the limit is {MAX_SUGGESTION_CHARS}"
    if priority not in PRIORITIES:
        return f"priority {priority!r}; expected one of {', '.join(PRIORITIES)}"
    return None


# ---------------------------------------------------------------------------------------
# Bridge -> supervisor
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello(Lenient):
    TYPE: ClassVar[str] = "hello"
    version: str | None
    pid: int | None
    engine: str | None
    max_concurrent_calls: int | None


@dataclass(frozen=True)
class MemoryLimits(Lenient):
    """The cgroup's MemoryHigh/MemoryMax in bytes; None where unlimited or unknown."""

    memory_high: int | None = None
    memory_max: int | None = None


@dataclass(frozen=True)
class InstanceStatus(Lenient):
    TYPE: ClassVar[str] = "instance_status"
    active_calls: int | None = None
    max_concurrent_calls: int | None = None
    engine: str | None = None
    state: str | None = None
    cpu: float | None = None
    rss: int | None = None
    limits: MemoryLimits | None = None
    tick_p50_ms: float | None = None
    tick_p99_ms: float | None = None
    late_frames: int | None = None
    uptime_s: float | None = None
    version: str | None = None
    pid: int | None = None
    reloads: int | None = None
    engine_details: Mapping[str, Any] | None = None
    # Upgrades refused since the bridge started, by reason (bridge.registry.REJECTION_REASONS).
    refused_total: Mapping[str, int] | None = omit_default()
    # Where the engine runs ("cuda:1", "cpu") and, on a GPU, the card itself (model and PCI
    # bus id); absent for an engine without a device (echo) and from older bridges.
    device: str | None = omit_default()
    gpu: str | None = omit_default()


@dataclass(frozen=True)
class CallStarted(Lenient):
    TYPE: ClassVar[str] = "call_started"
    call_id: str
    transport: str | None = None
    remote: str | None = None
    stream_sid: str | None = omit_default()
    call_sid: str | None = omit_default()
    caller: str | None = omit_default()
    callee: str | None = omit_default()


@dataclass(frozen=True)
class Counters(Lenient):
    """Frames a call has received, sent, and seen late (engine tick past its deadline)."""

    frames_in: int | None = None
    frames_out: int | None = None
    late_frames: int | None = None


@dataclass(frozen=True)
class RealTime(Lenient):
    """What the bridge did to keep one call real time, as its ``call_ended`` reports it:
    wire underruns, late engine steps, frames thrown away (in 20 ms frames, by reason), and
    the latency the bridge added each way (caller frame -> engine input, engine output ->
    wire; absent when no frame went that way). Every field is optional: a bridge before
    these fields sends none of them, and only the known ones are written: such a
    ``call_ended`` decodes and encodes back to the same bytes."""

    underruns: int | None = omit_default()
    late_steps: int | None = omit_default()
    dropped_frames: int | None = omit_default()
    dropped: Mapping[str, int] | None = omit_default()
    input_wait_p50_ms: float | None = omit_default()
    input_wait_p99_ms: float | None = omit_default()
    output_wait_p50_ms: float | None = omit_default()
    output_wait_p99_ms: float | None = omit_default()
    # The spread of the caller's arrival times over the call's last seconds, the jitter its
    # input slack absorbs; absent for an engine that steps every wire frame (echo).
    input_jitter_ms: float | None = omit_default()


@dataclass(frozen=True)
class CallStats(Lenient):
    TYPE: ClassVar[str] = "call_stats"
    call_id: str
    level_in_dbfs: float | None = None
    level_out_dbfs: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    duration_s: float | None = None
    counters: Counters = field(default_factory=Counters)


@dataclass(frozen=True)
class SnapshotCall(Encodable):
    """One live call in a bridge's ``snapshot``: its ``call_started`` fields, start and stats.

    ``started_at`` is what the sender wrote: the bridge sends epoch seconds (a number); an ISO
    8601 string is also accepted.
    """

    started: CallStarted
    stats: CallStats
    started_at: float | str | None = None

    @property
    def call_id(self) -> str:
        return self.started.call_id

    def body(self) -> dict[str, Any]:
        """Hand-written: two records share one object and its ``call_id``, with
        ``started_at`` between them, which no field order can say."""
        entry = self.started.body()
        entry["started_at"] = self.started_at
        entry.update(self.stats.body())
        return entry

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> SnapshotCall:
        started_at = data.get("started_at")
        return cls(
            started=CallStarted.decode(data),
            stats=CallStats.decode(data),
            started_at=text(started_at) or finite_number(started_at),
        )


@dataclass(frozen=True)
class Snapshot(Encodable):
    """The bridge's live calls and status; entries without a usable ``call_id`` are skipped."""

    TYPE: ClassVar[str] = "snapshot"
    calls: tuple[SnapshotCall, ...] = ()
    status: InstanceStatus | None = None

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> Snapshot:
        calls = []
        raw = data.get("calls")
        for entry in raw if isinstance(raw, list) else []:
            if isinstance(entry, Mapping) and isinstance(entry.get("call_id"), str):
                calls.append(SnapshotCall.decode(entry))
        status = mapping(data.get("status"))
        return cls(tuple(calls), None if status is None else InstanceStatus.decode(status))


@dataclass(frozen=True)
class CallEnded(Lenient):
    TYPE: ClassVar[str] = "call_ended"
    call_id: str
    duration_s: float | None = None
    reason: str | None = None
    counters: Counters = field(default_factory=Counters)
    real_time: RealTime = field(default_factory=RealTime)


@dataclass(frozen=True)
class UserSpeech(Lenient):
    TYPE: ClassVar[str] = "user_speech"
    call_id: str
    duration_ms: int | None = None


@dataclass(frozen=True)
class Text(Lenient):
    """The model's own words on a call."""

    TYPE: ClassVar[str] = "text"
    call_id: str
    text: str | None = None


@dataclass(frozen=True)
class Dtmf(Lenient):
    TYPE: ClassVar[str] = "dtmf"
    call_id: str
    digit: str | None = None


@dataclass(frozen=True)
class SuggestionApplied(Lenient):
    TYPE: ClassVar[str] = "suggestion_applied"
    call_id: str
    text: str | None = None
    request_id: str | int | None = None

    def body(self) -> dict[str, Any]:
        """Hand-written for its key order: ``request_id`` (left out when None) comes before
        ``text`` on the wire, but after it in the constructor that bridges call by position."""
        fields: dict[str, Any] = {"call_id": self.call_id}
        if self.request_id is not None:
            fields["request_id"] = self.request_id
        fields["text"] = self.text
        return fields


@dataclass(frozen=True)
class SuggestionRejected(Lenient):
    """A refused suggestion; ``call_id`` is None when the sender named no call."""

    TYPE: ClassVar[str] = "suggestion_rejected"
    call_id: str | None
    reason: str | None = None
    request_id: str | int | None = omit_default()


@dataclass(frozen=True)
class SuggestionStarted(Lenient):
    """The call began to speak a suggestion (its first word); ``request_id`` as applied."""

    TYPE: ClassVar[str] = "suggestion_started"
    call_id: str
    request_id: str | int | None = omit_default()


@dataclass(frozen=True)
class SuggestionFinished(Lenient):
    """A suggestion was spoken to its end, or (``cancelled``) dropped before its end."""

    TYPE: ClassVar[str] = "suggestion_finished"
    call_id: str
    request_id: str | int | None = None
    cancelled: bool = False

    def body(self) -> dict[str, Any]:
        """Hand-written for its key order: ``request_id`` (left out when None) comes after
        ``cancelled`` on the wire, but before it in the constructor that bridges call by
        position."""
        fields: dict[str, Any] = {"call_id": self.call_id, "cancelled": self.cancelled}
        if self.request_id is not None:
            fields["request_id"] = self.request_id
        return fields


@dataclass(frozen=True)
class ContextExceeded(Lenient):
    """The call outlived the model's context: it goes on, beyond what the model trained on."""

    TYPE: ClassVar[str] = "context_exceeded"
    call_id: str


@dataclass(frozen=True)
class CarrierStatus(Lenient):
    """The carrier's view of a call, from its webhooks (Twilio's voice URL and status
    callback): ``status`` as the carrier words it (ringing, in-progress, completed, busy,
    failed, no-answer), ``answer`` what the bridge told the carrier to do (``stream``, or
    ``busy`` when it could not take the call). Keyed by the carrier's ``call_sid``: the
    bridge's ``call_id`` does not exist yet when the phone rings."""

    TYPE: ClassVar[str] = "carrier_status"
    call_sid: str | None = None
    carrier: str | None = None
    status: str | None = omit_default()
    caller: str | None = omit_default()
    callee: str | None = omit_default()
    direction: str | None = omit_default()
    duration_s: int | None = omit_default()
    answer: str | None = omit_default()


@dataclass(frozen=True)
class Pong(Lenient):
    TYPE: ClassVar[str] = "pong"
    id: str | int | None = omit_default()


@dataclass(frozen=True)
class Error(Encodable):
    """The bridge refused a command; the connection stays open."""

    TYPE: ClassVar[str] = "error"
    message: str

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> Error:
        value = data.get("message")
        return cls(value if isinstance(value, str) else str(value))


Event = (
    Hello
    | Snapshot
    | InstanceStatus
    | CallStarted
    | CallStats
    | CallEnded
    | UserSpeech
    | Text
    | Dtmf
    | SuggestionApplied
    | SuggestionRejected
    | SuggestionStarted
    | SuggestionFinished
    | ContextExceeded
    | CarrierStatus
    | Pong
    | Error
)

_EVENTS: dict[str, Any] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Snapshot,
        InstanceStatus,
        CallStarted,
        CallStats,
        CallEnded,
        UserSpeech,
        Text,
        Dtmf,
        SuggestionApplied,
        SuggestionRejected,
        SuggestionStarted,
        SuggestionFinished,
        ContextExceeded,
        CarrierStatus,
        Pong,
        Error,
    )
}
EVENT_TYPES = tuple(_EVENTS)


@dataclass(frozen=True)
class Envelope:
    """A decoded bridge message: the event, and the ``ts``/``instance`` it was stamped with."""

    event: Event
    ts: str | None = None
    instance: str | None = None


def stamp(event: Event, ts: str, instance: str) -> dict[str, Any]:
    """The message as the bridge sends it: ``type``, ``ts``, ``instance``, then the fields."""
    return {"type": event.TYPE, "ts": ts, "instance": instance, **event.body()}


def decode_event(data: Mapping[str, Any]) -> Envelope:
    """One bridge message (a decoded JSON object) as a typed event; BadMessage if unusable."""
    event_type = message_type(data, EVENT_TYPES)
    cls = _EVENTS.get(event_type)
    if cls is None:
        raise BadMessage(f"unknown event type {event_type[:40]!r}", "type")
    event: Event = cls.decode(data)
    return Envelope(event, text(data.get("ts")), text(data.get("instance")))


# ---------------------------------------------------------------------------------------
# Supervisor -> bridge
# ---------------------------------------------------------------------------------------

COMMAND_TYPES = ("inject_suggestion", "hangup", "snapshot", "ping", "cancel_suggestion")


@dataclass(frozen=True)
class InjectSuggestion(Encodable):
    """Queue ``text`` for a call; without ``call_id`` the bridge's only live call is meant.

    The decoder checks types only: the bridge answers a text or priority beyond the limits
    (:func:`suggestion_problem`) with ``suggestion_rejected``, naming the call.
    """

    TYPE: ClassVar[str] = "inject_suggestion"
    text: str
    call_id: str | None = None
    priority: str = "normal"
    request_id: str | int | None = None

    def body(self) -> dict[str, Any]:
        """Hand-written for its key order: ``call_id`` comes before ``text`` on the wire, but
        ``text`` is required, so the constructor takes it first."""
        fields: dict[str, Any] = {
            "call_id": self.call_id,
            "text": self.text,
            "priority": self.priority,
        }
        if self.request_id is not None:
            fields["request_id"] = self.request_id
        return fields

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> InjectSuggestion:
        call_id = data.get("call_id")
        if call_id is not None and not isinstance(call_id, str):
            raise BadMessage(f"call_id must be a string, got {kind(call_id)}", "call_id")
        priority = data.get("priority", "normal")
        if not isinstance(priority, str):
            raise BadMessage(f"priority must be one of {', '.join(PRIORITIES)}", "priority")
        return cls(
            text=required_text(data, "text", cls.TYPE, allow_empty=True),
            call_id=call_id,
            priority=priority,
            request_id=identifier(data.get("request_id")),
        )


@dataclass(frozen=True)
class Hangup(Encodable):
    TYPE: ClassVar[str] = "hangup"
    call_id: str
    reason: str | None = omit_default()

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> Hangup:
        call_id = data.get("call_id")
        if not isinstance(call_id, str):
            raise BadMessage(f"hangup needs a call_id string, got {kind(call_id)}", "call_id")
        return cls(call_id, optional_text(data, "reason", cls.TYPE))


@dataclass(frozen=True)
class CancelSuggestion(Encodable):
    """Drop what a call has not yet said of its suggestions, queued or being spoken."""

    TYPE: ClassVar[str] = "cancel_suggestion"
    call_id: str | None = omit_default()

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> CancelSuggestion:
        call_id = data.get("call_id")
        if call_id is not None and not isinstance(call_id, str):
            raise BadMessage(f"call_id must be a string, got {kind(call_id)}", "call_id")
        return cls(call_id)


@dataclass(frozen=True)
class RequestSnapshot(Encodable):
    TYPE: ClassVar[str] = "snapshot"


@dataclass(frozen=True)
class Ping(Encodable):
    TYPE: ClassVar[str] = "ping"
    id: Any = omit_default()


Command = InjectSuggestion | Hangup | RequestSnapshot | Ping | CancelSuggestion


def decode_command(raw: str | bytes, max_bytes: int) -> Command:
    """One supervisor command from its text; BadMessage with the sentence to answer with."""
    data = load_object(raw, max_bytes)
    command_type = data.get("type")
    if command_type == "inject_suggestion":
        return InjectSuggestion.decode(data)
    if command_type == "hangup":
        return Hangup.decode(data)
    if command_type == "cancel_suggestion":
        return CancelSuggestion.decode(data)
    if command_type == "snapshot":
        return RequestSnapshot()
    if command_type == "ping":
        # Echoed as it came: the id is the sender's, whatever JSON value it chose.
        return Ping(data.get("id"))
    shown = command_type if isinstance(command_type, str) else kind(command_type)
    raise BadMessage(
        f"unknown command type {shown[:64]!s}; expected inject_suggestion, cancel_suggestion, "
        "hangup, snapshot or ping",
        "type",
    )
