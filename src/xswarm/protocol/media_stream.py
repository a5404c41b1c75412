"""What the carriers' media-stream protocols share, sans-I/O: events, limits, JSON readers.

Twilio, Telnyx, Plivo and Exotel each speak a dialect of the same idea: JSON text messages
with an ``event`` field, a ``start`` naming the stream and its audio format, base64 audio in
``media.payload``, ``dtmf``, ``stop``, and the server answering with media, marks
(checkpoints) and a clear. Each carrier's module (``twilio``, ``telnyx``, ``plivo``,
``exotel``) turns its dialect into the carrier-neutral events here and back, so one bridge
transport (``xswarm.bridge.media_stream``) serves all four.

As for Twilio: events we do not know come back as :class:`Unknown` (carriers add events);
anything malformed raises :class:`ProtocolError` with the close code, 1007 for a malformed
message and 1003 for audio in a format we do not take. Identifiers end up in logs, events
and SQLite, so they are held to a small alphabet and length before they go anywhere.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xswarm.errors import ProtocolError

# The bridge's own token for carrier streams (none signs its media socket as Twilio does).
CARRIER_TOKEN_ENV = "XSWARM_CARRIER_TOKEN"
MAX_MESSAGE_BYTES = 64 * 1024  # a start with many custom parameters still fits
MAX_ID_CHARS = 128
# UUIDs, Telnyx's "v3:…" call control ids, and the carriers' hex sids.
_ID = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_ID_CHARS}}}")
DTMF_DIGITS = "0123456789*#ABCDabcd"
MAX_PARAMETERS = 64
MAX_PARAMETER_CHARS = 1024

INVALID = 1007  # WebSocket close code: invalid frame payload data
UNSUPPORTED = 1003  # WebSocket close code: unsupported data

MAX_NUMBER = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Connected:
    """The socket is up; the start follows (Telnyx, Exotel)."""


@dataclass(frozen=True, slots=True)
class Start:
    stream_id: str
    call_id: str
    encoding: str  # a name in ``xswarm.audio.wire.CODECS``
    caller: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    sample_rate: int = 8000  # wideband carriers (Exotel, Plivo L16) may ask for more
    callee: str | None = None  # the number called, when the carrier says (Twilio's "To")


@dataclass(frozen=True, slots=True)
class Media:
    payload: bytes
    timestamp_ms: int | None  # the carrier's media time, when it sends one
    inbound: bool = True  # False: the carrier echoes what we played (an outbound track)


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    """Audio up to a mark (Plivo: a checkpoint) we sent has played."""

    name: str


@dataclass(frozen=True, slots=True)
class Cleared:
    """The carrier dropped the audio we had queued, as we asked."""


@dataclass(frozen=True, slots=True)
class Stop:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Unknown:
    """An event this version does not know; the server counts it and carries on."""

    event: str


Event = Connected | Start | Media | Dtmf | Mark | Cleared | Stop | Unknown


class Outbound:
    """The messages a server sends on one stream, from pieces each carrier builds once per
    stream (its ids JSON-escaped there).

    ``media`` runs 50 times a second per call, so it only glues base64 between prebuilt
    strings: no ``json.dumps`` on the hot path. ``media_bytes`` is the same message as the
    UTF-8 bytes a WebSocket text frame carries (the JSON is ASCII), so the bridge can write
    it pre-framed without an encode. Every carrier's media message ends ``"}}``.
    """

    __slots__ = ("_clear", "_mark_prefix", "_mark_suffix", "_media_prefix", "_media_prefix_bytes")

    def __init__(
        self, media_prefix: str, mark_prefix: str, clear: str, mark_suffix: str = "}}"
    ) -> None:
        self._media_prefix = media_prefix
        self._media_prefix_bytes = media_prefix.encode()
        self._mark_prefix = mark_prefix
        self._mark_suffix = mark_suffix
        self._clear = clear

    def media(self, payload: bytes) -> str:
        return self._media_prefix + binascii.b2a_base64(payload, newline=False).decode() + '"}}'

    def media_bytes(self, payload: bytes) -> bytes:
        return self._media_prefix_bytes + binascii.b2a_base64(payload, newline=False) + b'"}}'

    def mark(self, name: str) -> str:
        return self._mark_prefix + json.dumps(name) + self._mark_suffix

    def clear(self) -> str:
        return self._clear


@dataclass(frozen=True, slots=True)
class Dialect:
    """One carrier's protocol as the bridge transport needs it."""

    carrier: str  # for people: "Telnyx"
    parse: Callable[[str | bytes], Event]
    outbound: Callable[[Start], Outbound]
    max_payload_bytes: int
    # The smallest media message the carrier plays cleanly, in bytes and in time: frames are
    # gathered up to both (Exotel asks for 3.2 KB and 100 ms a message); 0 and 0 send every
    # 20 ms frame as it is due.
    min_outbound_bytes: int = 0
    min_outbound_ms: int = 0
    # What people call the stream, in errors; empty: "<carrier>'s media stream".
    stream_name: str = ""


# What a server sent, as a simulated carrier reads it back; ``stream_sid`` is the stream the
# message names, for dialects whose messages name one (Twilio's), else empty.


@dataclass(frozen=True, slots=True)
class OutMedia:
    payload: bytes
    stream_sid: str = ""


@dataclass(frozen=True, slots=True)
class OutMark:
    name: str
    stream_sid: str = ""


@dataclass(frozen=True, slots=True)
class OutClear:
    stream_sid: str = ""


OutEvent = OutMedia | OutMark | OutClear


# ---------------------------------------------------------------------------------------
# Readers shared by the dialects
# ---------------------------------------------------------------------------------------


def load(text: str | bytes) -> dict[str, Any]:
    """One message as a JSON object with an ``event`` string; ProtocolError otherwise."""
    if len(text) > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            f"message of {len(text)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit", INVALID
        )
    try:
        message = json.loads(text)
    except UnicodeDecodeError:
        raise ProtocolError("message is not UTF-8 text", INVALID) from None
    except RecursionError:
        raise ProtocolError("message is not JSON: nested too deeply", INVALID) from None
    except ValueError as exc:
        reason = str(exc).split(":")[0]
        raise ProtocolError(f"message is not JSON: {reason}", INVALID) from None
    if type(message) is not dict:
        raise ProtocolError(f"message must be a JSON object, got {kind(message)}", INVALID)
    if "event" not in message:
        raise ProtocolError('message has no "event" field', INVALID)
    if type(message["event"]) is not str:
        raise ProtocolError(f'"event" must be a string, got {kind(message["event"])}', INVALID)
    return message


def obj(owner: dict[str, Any], key: str, label: str | None = None) -> dict[str, Any]:
    value = owner.get(key)
    if type(value) is not dict:
        what = "missing" if value is None else kind(value)
        raise ProtocolError(f'"{label or key}" must be an object, got {what}', INVALID)
    return value


def text(owner: dict[str, Any], key: str, label: str | None = None) -> str:
    value = owner.get(key)
    if type(value) is not str:
        what = "missing" if key not in owner else kind(value)
        raise ProtocolError(f'"{label or key}" must be a string, got {what}', INVALID)
    return value


def optional_text(owner: dict[str, Any], key: str, label: str, limit: int = 128) -> str | None:
    """A string the carrier may leave out (or send as null), cut to ``limit`` characters."""
    value = owner.get(key)
    if value is None:
        return None
    if type(value) is not str:
        raise ProtocolError(f'"{label}" must be a string, got {kind(value)}', INVALID)
    return value[:limit]


def identifier(owner: dict[str, Any], key: str, label: str) -> str:
    """A carrier's id: letters, digits, ``_ . : -``; 1 to MAX_ID_CHARS of them."""
    value = text(owner, key, label)
    if _ID.fullmatch(value) is None:
        raise ProtocolError(
            f'"{label}" must be 1 to {MAX_ID_CHARS} letters, digits or "_.:-", got {kind(value)}',
            INVALID,
        )
    return value


def number(owner: dict[str, Any], key: str, label: str, optional: bool = False) -> int | None:
    """A non-negative integer, sent as a JSON number or a decimal string."""
    value = owner.get(key)
    if value is None and optional:
        return None
    if type(value) is int:
        result = value
    elif type(value) is str and 0 < len(value) <= 19 and value.isascii() and value.isdigit():
        result = int(value)
    else:
        what = "missing" if key not in owner else kind(value)
        raise ProtocolError(f'"{label}" must be a non-negative integer, got {what}', INVALID)
    if not 0 <= result <= MAX_NUMBER:
        raise ProtocolError(f'"{label}" is out of range', INVALID)
    return result


def loose_int(value: object) -> int | None:
    """A small integer sent as a number or a string ("8000"), else None."""
    if type(value) is int:
        return value
    if type(value) is str and value.isascii() and value.isdigit() and len(value) < 10:
        return int(value)
    return None


def payload(media: dict[str, Any], max_bytes: int, label: str = "media.payload") -> bytes:
    """``media.payload``: strict base64 of 1 to ``max_bytes`` bytes."""
    encoded = media.get("payload")
    if type(encoded) is not str:
        raise ProtocolError(f'"{label}" must be a string, got {kind(encoded)}', INVALID)
    if not encoded:
        raise ProtocolError(f'"{label}" is empty', INVALID)
    if len(encoded) > (max_bytes + 2) // 3 * 4:
        raise ProtocolError(
            f'"{label}" of {len(encoded)} base64 characters is more than {max_bytes} bytes',
            INVALID,
        )
    try:
        decoded = binascii.a2b_base64(encoded, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f'"{label}" is not valid base64: {exc}', INVALID) from None
    if len(decoded) > max_bytes:
        raise ProtocolError(f'"{label}" is more than {max_bytes} bytes', INVALID)
    return decoded


def media(message: dict[str, Any], max_bytes: int) -> Media:
    """A ``media`` event's ``media``: payload, optional timestamp, and its track: inbound
    unless the carrier names another (an echo of what we played)."""
    media = obj(message, "media")
    track = optional_text(media, "track", "media.track") or "inbound"
    return Media(
        payload(media, max_bytes),
        number(media, "timestamp", "media.timestamp", optional=True),
        inbound=track.startswith("inbound"),
    )


def read_outbound(raw: str | bytes, carrier: str, max_payload_bytes: int) -> OutEvent:
    """One message a server sent in the ``media``/``mark``/``clear`` shape Telnyx and Exotel
    share (what a simulated carrier reads back); any stream id in it is not checked."""
    message = load(raw)
    event = message["event"]
    if event == "media":
        return OutMedia(payload(obj(message, "media"), max_payload_bytes))
    if event == "mark":
        return OutMark(text(obj(message, "mark"), "name", "mark.name"))
    if event == "clear":
        return OutClear()
    raise not_server_event(carrier, event, "media, mark, clear")


def digit(dtmf: dict[str, Any], label: str = "dtmf.digit") -> str:
    value = text(dtmf, "digit", label)
    if len(value) != 1 or value not in DTMF_DIGITS:
        raise ProtocolError(f'"{label}" {value[:16]!r} is not a DTMF digit', INVALID)
    return value


def parameters(owner: dict[str, Any], key: str, label: str) -> dict[str, str]:
    """A carrier's custom parameters: an object of at most MAX_PARAMETERS string values."""
    value = owner.get(key)
    if value is None:
        return {}
    if (
        type(value) is not dict
        or len(value) > MAX_PARAMETERS
        or not all(type(item) is str for item in value.values())
    ):
        raise ProtocolError(
            f'"{label}" must be an object of at most {MAX_PARAMETERS} string values', INVALID
        )
    return {name[:128]: item[:MAX_PARAMETER_CHARS] for name, item in value.items()}


def unsupported(carrier: str, encoding: object, rate: object, accepted: str) -> ProtocolError:
    return ProtocolError(
        f"{carrier} stream asks for {encoding!r} at {rate!r} Hz; only {accepted} is supported",
        UNSUPPORTED,
    )


def not_server_event(carrier: str, event: object, allowed: str) -> ProtocolError:
    return ProtocolError(
        f"{kind(event)} is not an event a server may send to {carrier} ({allowed})", INVALID
    )


def kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {str(value)[:24]}"
    if isinstance(value, str):
        return f"the string {value[:24]!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode()
