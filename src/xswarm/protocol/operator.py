"""The supervisor ⇄ operator wire (``WS /ws``, docs/SUPERVISOR_API.md), sans-I/O.

Operators (the TUI, scripts) send commands; :func:`decode_command` turns their text into a
typed command or a :class:`BadMessage` whose sentence goes back in an ``error``, because the
operator reading it is usually debugging their own client. Parsing never raises anything
else, whatever the bytes.

The supervisor answers with ``auth_result``, ``snapshot`` (:class:`InstanceInfo` and
:class:`CallInfo` records: the one shape of an instance and a call on this wire), the bridge
events of :mod:`xswarm.protocol.control` relayed under the supervisor's instance name, its own
``instance_state``/``instance_removed``, ``pong`` and ``error``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from xswarm.protocol.control import PRIORITIES, MemoryLimits

# The supervisor answers a ``ping`` and refuses a message with the bridge's own two replies.
from xswarm.protocol.control import Error as Error
from xswarm.protocol.control import Pong as Pong
from xswarm.protocol.values import (
    BadMessage,
    Encodable,
    Lenient,
    finite_number,
    load_object,
    mapping,
    message_type,
    nested,
    omit_default,
    optional_id,
    optional_text,
    required_text,
    text,
    unknown_type,
)

MAX_MESSAGE_BYTES = 64 * 1024
MAX_ID_CHARS = 128
# "down": the host answered but no bridge listens; "unreachable": no answer (host or
# network); "auth_refused": the bridge refused our token or address, or its certificate was
# not trusted. ``failure`` on the instance says which, as a short code.
INSTANCE_STATES = ("up", "down", "draining", "stale", "unreachable", "auth_refused")
# "unknown": the supervisor lost the call's instance and keeps the call until it knows.
CALL_STATES = ("active", "unknown")

# ---------------------------------------------------------------------------------------
# Operator -> supervisor
# ---------------------------------------------------------------------------------------

COMMAND_TYPES = ("auth", "subscribe", "ping", "inject_suggestion", "hangup", "watch")
# Call ids one ``watch`` may name: more than any screen shows.
MAX_WATCHED = 1000


@dataclass(frozen=True)
class Auth(Encodable):
    TYPE: ClassVar[str] = "auth"
    token: str


@dataclass(frozen=True)
class Subscribe(Encodable):
    """Live events after a snapshot; ``batch`` asks for per-call updates coalesced in
    :class:`Batch` messages (a plain ``subscribe`` gets every event as it happens)."""

    TYPE: ClassVar[str] = "subscribe"
    batch: bool = omit_default(False)


@dataclass(frozen=True)
class Ping(Encodable):
    TYPE: ClassVar[str] = "ping"
    id: str | int | None = omit_default()


@dataclass(frozen=True)
class InjectSuggestion(Encodable):
    TYPE: ClassVar[str] = "inject_suggestion"
    text: str
    priority: str = "normal"
    call_id: str | None = None
    request_id: str | int | None = None
    instance: str | None = None

    def body(self) -> dict[str, Any]:
        """Hand-written for its key order: ``call_id`` (left out when None) comes before
        ``text`` on the wire, but ``text`` is required, so the constructor takes it first."""
        fields: dict[str, Any] = {} if self.call_id is None else {"call_id": self.call_id}
        fields["text"] = self.text
        fields["priority"] = self.priority
        if self.request_id is not None:
            fields["request_id"] = self.request_id
        if self.instance is not None:
            fields["instance"] = self.instance
        return fields


@dataclass(frozen=True)
class Hangup(Encodable):
    TYPE: ClassVar[str] = "hangup"
    call_id: str
    instance: str | None = omit_default()


@dataclass(frozen=True)
class Watch(Encodable):
    """The calls a batching subscriber is looking at (the rows on its screen, an open call).

    Their updates keep coming every batch interval; the other calls' come every
    ``Batch.background_s``, still merged. ``None`` (the default before any ``watch``) means
    every call at the full rate. Sent only to a supervisor whose batches carry
    ``background_s``; an older one would answer an unknown-type error.
    """

    TYPE: ClassVar[str] = "watch"
    call_ids: tuple[str, ...] | None = None


Command = Auth | Subscribe | Ping | InjectSuggestion | Hangup | Watch


def decode_command(raw: str | bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Command:
    """Decode and validate one operator message."""
    data = load_object(raw, max_bytes)
    kind = message_type(data, COMMAND_TYPES)
    if kind == "auth":
        return Auth(token=required_text(data, "token", kind))
    if kind == "subscribe":
        batch = data.get("batch", False)
        if not isinstance(batch, bool):
            raise BadMessage(f'"batch" must be true or false, got {batch!r}', "batch")
        return Subscribe(batch=batch)
    if kind == "ping":
        return Ping(id=optional_id(data, "id", kind, MAX_ID_CHARS))
    if kind == "inject_suggestion":
        priority = optional_text(data, "priority", kind) or "normal"
        if priority not in PRIORITIES:
            raise BadMessage(
                f'"priority" must be one of {", ".join(PRIORITIES)}, got {priority!r}', "priority"
            )
        return InjectSuggestion(
            text=required_text(data, "text", kind, allow_empty=True),
            priority=priority,
            call_id=optional_text(data, "call_id", kind),
            request_id=optional_id(data, "request_id", kind, MAX_ID_CHARS),
            instance=optional_text(data, "instance", kind),
        )
    if kind == "hangup":
        return Hangup(
            call_id=required_text(data, "call_id", kind),
            instance=optional_text(data, "instance", kind),
        )
    if kind == "watch":
        return Watch(call_ids=_watched(data.get("call_ids")))
    raise unknown_type(kind, COMMAND_TYPES)


def _watched(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadMessage('"call_ids" must be a list of call id strings, or null', "call_ids")
    if len(value) > MAX_WATCHED:
        raise BadMessage(
            f'"call_ids" names {len(value)} calls; at most {MAX_WATCHED} (the rows on screen)',
            "call_ids",
        )
    return tuple(value)


# ---------------------------------------------------------------------------------------
# Supervisor -> operator
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthResult(Encodable):
    TYPE: ClassVar[str] = "auth_result"
    success: bool
    message: str

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> AuthResult:
        """Only ``success: true`` is success; a missing message reads as empty."""
        message = data.get("message")
        return cls(data.get("success") is True, "" if message is None else str(message))


@dataclass(frozen=True)
class InstanceInfo(Lenient):
    """One supervised voice instance as operators see it (``snapshot``, ``instance_state``)."""

    name: str
    url: str | None = None
    state: str | None = None
    engine: str | None = None
    active_calls: int | None = None
    max_concurrent_calls: int | None = None
    tick_p50_ms: float | None = None
    tick_p99_ms: float | None = None
    cpu: float | None = None
    rss: int | None = None
    limits: MemoryLimits = nested(MemoryLimits)
    restarts: int | None = None
    last_seen: str | None = None
    version: str | None = None
    pid: int | None = None
    error: str | None = None
    bridge_name: str | None = None
    # Upgrades the instance refused, all reasons: since it started, and in the last minute
    # as the supervisor saw the ``refused_total`` of its ``instance_status`` grow.
    refusals_total: int | None = None
    refusals_last_minute: int | None = None
    # Where the engine runs ("cuda:1"), the card (model and PCI bus id), the engine's slots.
    device: str | None = None
    gpu: str | None = None
    slots: int | None = None
    # The host of ``url`` (the fleet's capacity is summed per host), and why the instance
    # is not connected as a short code (``tls_untrusted``, ``token_refused``…; None when up).
    host: str | None = None
    failure: str | None = None


@dataclass
class CallInfo(Lenient):
    """One live call as operators see it (``snapshot``; ``started_at`` is ISO 8601 UTC).

    The one field list of a live call: the supervisor's ``LiveCall`` and the dashboard's
    ``CallView`` are CallInfos that they update in place as the bridge reports, which is why
    this record, unlike the others, is not frozen.
    """

    call_id: str
    instance: str | None = None
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
    suggestions: int | None = None
    state: str | None = None


@dataclass(frozen=True)
class Snapshot(Encodable):
    """Everything the supervisor knows now; entries without a usable name or id are skipped."""

    TYPE: ClassVar[str] = "snapshot"
    ts: str
    instances: tuple[InstanceInfo, ...] = ()
    calls: tuple[CallInfo, ...] = ()

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> Snapshot:
        return cls(
            ts=text(data.get("ts")) or "",
            instances=tuple(_each(data.get("instances"), InstanceInfo.decode)),
            calls=tuple(_each(data.get("calls"), CallInfo.decode)),
        )


def _each(value: object, decode: Any) -> list[Any]:
    out = []
    for item in value if isinstance(value, list) else []:
        if mapping(item) is None:
            continue
        try:
            out.append(decode(item))
        except BadMessage:
            continue
    return out


@dataclass(frozen=True)
class InstanceState(Encodable):
    """An instance changed state (one of ``INSTANCE_STATES``) and why."""

    TYPE: ClassVar[str] = "instance_state"
    ts: str
    instance: str
    state: str
    reason: str | None
    info: InstanceInfo = nested()


@dataclass(frozen=True)
class InstanceRemoved(Encodable):
    TYPE: ClassVar[str] = "instance_removed"
    instance: str
    ts: str


# Per-call events a batching subscriber gets coalesced, at most one of each kind per call per
# interval: the last ``call_stats`` (merged, so a field a later one lacks keeps its value),
# the last ``user_speech``, and ``text`` words joined in order.
BATCHED_EVENTS = frozenset({"call_stats", "user_speech", "text"})


@dataclass(frozen=True)
class Batch(Encodable):
    """Events for a subscriber that asked for batches, to be applied in the order listed.

    A flush carries the coalesced per-call updates of one interval; an event that cannot
    wait (``call_ended``, a suggestion's answer…) about a call with updates still held comes
    as a batch too, those updates first and the event last, so a call's figures never arrive
    after its end.
    """

    TYPE: ClassVar[str] = "batch"
    ts: str
    events: tuple[Mapping[str, Any], ...] = ()
    # Seconds between updates of calls a ``watch`` leaves out; None from a supervisor that
    # does not take ``watch``.
    background_s: float | None = omit_default()

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> Batch:
        """Tolerant: entries that are not objects with a string ``type`` are skipped."""
        events = data.get("events")
        background = finite_number(data.get("background_s"))
        return cls(
            background_s=None if background is None else float(background),
            ts=text(data.get("ts")) or "",
            events=tuple(
                event
                for event in (events if isinstance(events, list) else [])
                if isinstance(event, dict) and isinstance(event.get("type"), str)
            ),
        )
