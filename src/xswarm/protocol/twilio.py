"""Twilio Media Streams, sans-I/O: text in, events out; events in, text out.

Everything here is plain functions over strings, so the bridge, the clients and the tests
share one definition of the wire format and none of it needs a socket to be tested.

The wire format is Twilio's ("Media Streams - WebSocket Messages"): JSON text messages with
an ``event`` field. Numbers Twilio sends as strings (``sequenceNumber``, ``chunk``,
``timestamp``) are accepted as strings or integers. Events we do not know are returned as
:class:`Unknown` rather than refused, because Twilio adds events over time and a call must
not drop because of one. Anything else that is wrong raises :class:`ProtocolError` with the
WebSocket close code to answer with: 1007 for a malformed message, 1003 for audio in a
format we do not take.

Identifiers (``streamSid``, ``callSid``, ``accountSid``) end up in logs, events and SQLite, so
they are held to Twilio's alphabet (letters and digits; ``-`` and ``_`` are tolerated for test
tools) and at most ``MAX_SID_CHARS`` characters: anything else is refused with 1007 before it
goes anywhere (Twilio's own are two letters and 32 hex digits).

``parse`` is the bridge's hot path (at 300 calls, 15,000 media messages a second): it reads
the fields directly inside one ``try`` and only works out a precise message on failure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

from xswarm.errors import ProtocolError
from xswarm.protocol import media_stream as ms

FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law, what Twilio sends per media message
MAX_PAYLOAD_BYTES = 1600  # 200 ms; anything larger is not a media frame
MAX_MESSAGE_BYTES = ms.MAX_MESSAGE_BYTES
SAMPLE_RATE = 8000
ENCODING = "audio/x-mulaw"

MAX_SID_CHARS = 64
_SID = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_SID_CHARS}}}")

INVALID = ms.INVALID
UNSUPPORTED = ms.UNSUPPORTED

_MAX_B64_CHARS = (MAX_PAYLOAD_BYTES + 2) // 3 * 4


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]
    encoding: str
    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True, init=False)
class Media(ms.Media):
    """The carrier-neutral media event, which the bridge takes as it is (this is the hot
    path: no second event per message), plus Twilio's own numbering of the frame."""

    _: KW_ONLY  # after the inherited fields, whatever their defaults; __init__ is Twilio's
    track: str
    chunk: int
    sequence: int

    def __init__(
        self, payload: bytes, track: str, chunk: int, timestamp_ms: int, sequence: int
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "payload", payload)
        setattr_(self, "timestamp_ms", timestamp_ms)
        # Twilio's "outbound" track echoes what we played, as the other carriers' do.
        setattr_(self, "inbound", track != "outbound")
        setattr_(self, "track", track)
        setattr_(self, "chunk", chunk)
        setattr_(self, "sequence", sequence)


Mark = ms.Mark
Dtmf = ms.Dtmf
Unknown = ms.Unknown


@dataclass(frozen=True, slots=True)
class Stop:
    call_sid: str
    account_sid: str = ""


Event = Connected | Start | Media | Mark | Dtmf | Stop | Unknown


# ---------------------------------------------------------------------------------------
# Inbound (Twilio -> server)
# ---------------------------------------------------------------------------------------


def parse(text: str | bytes) -> Event:
    """One message from Twilio as an event; ProtocolError(message, close_code) if malformed."""
    message = ms.load(text)
    try:
        event = message["event"]
        if event == "media":
            media = message["media"]
            encoded = media["payload"]
            track = media.get("track", "inbound")
            if type(encoded) is str and 0 < len(encoded) <= _MAX_B64_CHARS and type(track) is str:
                payload = binascii.a2b_base64(encoded, strict_mode=True)
                if len(payload) > MAX_PAYLOAD_BYTES:
                    raise ValueError("payload too long")
                return Media(
                    payload,
                    track,
                    _fast_number(media["chunk"]),
                    _fast_number(media["timestamp"]),
                    _fast_number(message["sequenceNumber"]),
                )
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error):
        pass
    else:
        if event == "start":
            return _parse_start(message)
        if event == "connected":
            return Connected(ms.text(message, "protocol"), ms.text(message, "version"))
        if event == "mark":
            return Mark(ms.text(ms.obj(message, "mark"), "name", "mark.name"))
        if event == "dtmf":
            return Dtmf(ms.digit(ms.obj(message, "dtmf")))
        if event == "stop":
            stop = ms.obj(message, "stop")
            return Stop(
                _sid(stop, "callSid", "stop.callSid"),
                _sid(stop, "accountSid", "stop.accountSid", optional=True),
            )
        if event != "media":
            return Unknown(event[:64])
    _diagnose_media(message)
    raise AssertionError("unreachable: _diagnose_media always raises")  # pragma: no cover


def _diagnose_media(message: dict[str, Any]) -> None:
    """The fast path failed: say exactly why, then raise."""
    media = ms.obj(message, "media")
    encoded = media.get("payload")
    if type(encoded) is not str:
        raise ProtocolError(f'"media.payload" must be a string, got {ms.kind(encoded)}', INVALID)
    if not encoded:
        raise ProtocolError('"media.payload" is empty', INVALID)
    too_long = ProtocolError(
        f'"media.payload" of {len(encoded)} base64 characters is more than '
        f"{MAX_PAYLOAD_BYTES} bytes (200 ms) of audio",
        INVALID,
    )
    if len(encoded) > _MAX_B64_CHARS:
        raise too_long
    try:
        payload = binascii.a2b_base64(encoded, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f'"media.payload" is not valid base64: {exc}', INVALID) from None
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise too_long
    track = media.get("track", "inbound")
    if type(track) is not str:
        raise ProtocolError(f'"media.track" must be a string, got {ms.kind(track)}', INVALID)
    for owner, key, label in (
        (media, "chunk", "media.chunk"),
        (media, "timestamp", "media.timestamp"),
        (message, "sequenceNumber", "sequenceNumber"),
    ):
        if key not in owner:
            raise ProtocolError(f'media message has no "{label}"', INVALID)
        ms.number(owner, key, label)
    raise ProtocolError("media message is malformed", INVALID)  # pragma: no cover


def _parse_start(message: dict[str, Any]) -> Start:
    start = ms.obj(message, "start")
    media_format = ms.obj(start, "mediaFormat", "start.mediaFormat")
    encoding = media_format.get("encoding")
    rate = media_format.get("sampleRate")
    channels = media_format.get("channels")
    if encoding != ENCODING or ms.loose_int(rate) != SAMPLE_RATE or ms.loose_int(channels) != 1:
        raise ProtocolError(
            f"start asks for {encoding!r} at {rate!r} Hz with {channels!r} channels; only "
            f"{ENCODING} at {SAMPLE_RATE} Hz mono is supported",
            UNSUPPORTED,
        )
    tracks = start.get("tracks", ["inbound"])
    if type(tracks) is not list or not all(type(track) is str for track in tracks):
        raise ProtocolError('"start.tracks" must be a list of strings', INVALID)
    custom = start.get("customParameters", {})
    if custom is None:
        custom = {}
    if type(custom) is not dict or not all(type(value) is str for value in custom.values()):
        raise ProtocolError('"start.customParameters" must be an object of string values', INVALID)
    return Start(
        stream_sid=_sid(start, "streamSid", "start.streamSid"),
        call_sid=_sid(start, "callSid", "start.callSid"),
        account_sid=_sid(start, "accountSid", "start.accountSid", optional=True),
        tracks=tuple(tracks),
        custom_parameters=dict(custom),
        encoding=encoding,
        sample_rate=SAMPLE_RATE,
        channels=1,
    )


def _sid(owner: dict[str, Any], key: str, label: str, optional: bool = False) -> str:
    """A Twilio identifier: letters, digits, ``-``, ``_``; 1 to MAX_SID_CHARS of them."""
    if optional and owner.get(key) in (None, ""):
        return ""
    value = ms.text(owner, key, label)
    if _SID.fullmatch(value) is None:
        raise ProtocolError(
            f'"{label}" must be 1 to {MAX_SID_CHARS} letters or digits, got {ms.kind(value)}'
            f"{' of ' + str(len(value)) + ' characters' if len(value) > 24 else ''}",
            INVALID,
        )
    return value


def _fast_number(value: object) -> int:
    """``ms.number`` for the hot path: ValueError instead of a worded error."""
    if type(value) is str and 0 < len(value) <= 19 and value.isascii() and value.isdigit():
        number = int(value)
    elif type(value) is int:
        number = value
    else:
        raise ValueError(value)
    if not 0 <= number <= ms.MAX_NUMBER:
        raise ValueError(value)
    return number


# ---------------------------------------------------------------------------------------
# Outbound (server -> Twilio)
# ---------------------------------------------------------------------------------------


class Outbound(ms.Outbound):
    """The messages a server sends on one stream, every one naming its ``streamSid``."""

    __slots__ = ("stream_sid",)

    def __init__(self, stream_sid: str) -> None:
        if not isinstance(stream_sid, str) or not stream_sid:
            raise ValueError("streamSid must be a non-empty string")
        self.stream_sid = stream_sid
        sid = json.dumps(stream_sid)
        super().__init__(
            f'{{"event":"media","streamSid":{sid},"media":{{"payload":"',
            f'{{"event":"mark","streamSid":{sid},"mark":{{"name":',
            f'{{"event":"clear","streamSid":{sid}}}',
        )


def outbound(start: ms.Start) -> Outbound:
    return Outbound(start.stream_id)


def parse_stream(text: str | bytes) -> ms.Event:
    """``parse`` as the carrier-neutral events of ``media_stream``, for the bridge's one
    media-stream transport. Media, Mark, Dtmf and Unknown already are such events (media is
    the hot path), so only the once-a-call start, stop and connected are translated."""
    event = parse(text)
    if type(event) is Media:
        return event
    if isinstance(event, Start):
        custom = event.custom_parameters
        return ms.Start(
            stream_id=event.stream_sid,
            call_id=event.call_sid,
            encoding="PCMU",
            caller=custom.get("caller") or custom.get("From") or None,
            parameters=custom,
            sample_rate=SAMPLE_RATE,
            callee=custom.get("To") or None,
        )
    if isinstance(event, Stop):
        return ms.Stop()
    if isinstance(event, Connected):
        return ms.Connected()
    return event


DIALECT = ms.Dialect(
    "Twilio", parse_stream, outbound, MAX_PAYLOAD_BYTES, stream_name="Twilio Media Streams"
)


def media_message(stream_sid: str, payload: bytes) -> str:
    return Outbound(stream_sid).media(payload)


def mark_message(stream_sid: str, name: str) -> str:
    return Outbound(stream_sid).mark(name)


def clear_message(stream_sid: str) -> str:
    return Outbound(stream_sid).clear()


OutMedia = ms.OutMedia
OutMark = ms.OutMark
OutClear = ms.OutClear


def parse_outbound(text: str | bytes) -> ms.OutEvent:
    """One message a server sent to Twilio (what a simulated Twilio reads back)."""
    message = ms.load(text)
    event = message["event"]
    stream_sid = ms.text(message, "streamSid")
    if event == "media":
        encoded = ms.text(ms.obj(message, "media"), "payload", "media.payload")
        if not encoded or len(encoded) > _MAX_B64_CHARS:
            raise ProtocolError(
                f'"media.payload" must hold 1 to {MAX_PAYLOAD_BYTES} bytes', INVALID
            )
        try:
            payload = binascii.a2b_base64(encoded, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(f'"media.payload" is not valid base64: {exc}', INVALID) from None
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ProtocolError(f'"media.payload" is more than {MAX_PAYLOAD_BYTES} bytes', INVALID)
        return OutMedia(payload, stream_sid)
    if event == "mark":
        return OutMark(ms.text(ms.obj(message, "mark"), "name", "mark.name"), stream_sid)
    if event == "clear":
        return OutClear(stream_sid)
    raise ms.not_server_event("Twilio", event, "media, mark, clear")


# ---------------------------------------------------------------------------------------
# What Twilio sends, for the simulated callers (`xswarm call`, `xswarm bench`, tests)
# ---------------------------------------------------------------------------------------


def new_stream_sid() -> str:
    return "MZ" + uuid.uuid4().hex


def new_call_sid() -> str:
    return "CA" + uuid.uuid4().hex


def connected_message() -> str:
    return '{"event":"connected","protocol":"Call","version":"1.0.0"}'


def start_message(
    stream_sid: str,
    call_sid: str,
    account_sid: str = "AC" + "0" * 32,
    custom_parameters: Mapping[str, str] | None = None,
    tracks: tuple[str, ...] = ("inbound",),
) -> str:
    start = {
        "accountSid": account_sid,
        "streamSid": stream_sid,
        "callSid": call_sid,
        "tracks": list(tracks),
        "customParameters": dict(custom_parameters or {}),
        "mediaFormat": {"encoding": ENCODING, "sampleRate": SAMPLE_RATE, "channels": 1},
    }
    return json.dumps(
        {"event": "start", "sequenceNumber": "1", "start": start, "streamSid": stream_sid}
    )


@dataclass(slots=True)
class InboundMedia:
    """Prebuilt pieces of one caller's media messages: only the numbers and audio change."""

    stream_sid: str
    _prefix: str = field(init=False)
    _sid: str = field(init=False)

    def __post_init__(self) -> None:
        self._sid = json.dumps(self.stream_sid)
        self._prefix = '{"event":"media","sequenceNumber":"'

    def message(self, sequence: int, chunk: int, timestamp_ms: int, payload: bytes) -> str:
        return (
            f'{self._prefix}{sequence}","media":{{"track":"inbound","chunk":"{chunk}",'
            f'"timestamp":"{timestamp_ms}","payload":"'
            f'{binascii.b2a_base64(payload, newline=False).decode()}"}},'
            f'"streamSid":{self._sid}}}'
        )


def inbound_media_message(
    stream_sid: str, sequence: int, chunk: int, timestamp_ms: int, payload: bytes
) -> str:
    return InboundMedia(stream_sid).message(sequence, chunk, timestamp_ms, payload)


def dtmf_message(stream_sid: str, sequence: int, digit: str) -> str:
    return json.dumps(
        {
            "event": "dtmf",
            "streamSid": stream_sid,
            "sequenceNumber": str(sequence),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def mark_in_message(stream_sid: str, sequence: int, name: str) -> str:
    return json.dumps(
        {
            "event": "mark",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "mark": {"name": name},
        }
    )


def stop_message(stream_sid: str, sequence: int, call_sid: str, account_sid: str) -> str:
    return json.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "stop": {"accountSid": account_sid, "callSid": call_sid},
        }
    )


class Caller:
    """What Twilio sends on one stream, for the simulated callers (``client.carriers``)."""

    def __init__(self, account_sid: str = "AC" + "0" * 32) -> None:
        self.stream_id = new_stream_sid()
        self.call_id = new_call_sid()
        self.account_sid = account_sid
        self._media = InboundMedia(self.stream_id)

    def opening(self) -> list[str]:
        return [connected_message(), start_message(self.stream_id, self.call_id, self.account_sid)]

    def media(self, sequence: int, chunk: int, timestamp_ms: int, payload: bytes) -> str:
        return self._media.message(sequence, chunk, timestamp_ms, payload)

    def dtmf(self, sequence: int, digit: str) -> str:
        return dtmf_message(self.stream_id, sequence, digit)

    def played(self, sequence: int, name: str) -> str:
        return mark_in_message(self.stream_id, sequence, name)

    def stop(self, sequence: int) -> str:
        return stop_message(self.stream_id, sequence, self.call_id, self.account_sid)


# ---------------------------------------------------------------------------------------
# X-Twilio-Signature
# ---------------------------------------------------------------------------------------


FormParams = Mapping[str, str] | Sequence[tuple[str, str]]


def expected_signature(auth_token: str, url: str, params: FormParams) -> str:
    """Twilio's request signature: HMAC-SHA1 over the URL followed by each POST parameter's
    name and value, sorted by name, keyed with the auth token, in base64. A WebSocket
    upgrade is a GET, so its ``params`` are empty and the URL alone is signed. A form field
    sent more than once is signed as Twilio's own validator does: each distinct value once,
    in sorted order, after its name."""
    pairs = params.items() if isinstance(params, Mapping) else params
    values: dict[str, set[str]] = {}
    for name, value in pairs:
        values.setdefault(name, set()).add(value)
    signed = url + "".join(
        name + value for name in sorted(values) for value in sorted(values[name])
    )
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


# ---------------------------------------------------------------------------------------
# The per-call stream token ([voice.bridge] twilio_stream_token)
# ---------------------------------------------------------------------------------------

STREAM_TOKEN_PARAMETER = "xswarm_token"
MAX_STREAM_TOKEN_LIFETIME = 24 * 3600


def stream_token(secret: str, call_sid: str, expires: int) -> str:
    """``<expires>.<mac>``: what the TwiML that starts a stream puts in its parameters as
    ``<Parameter name="xswarm_token" value="…"/>``, bound to one call and valid until
    ``expires`` (Unix seconds). ``secret`` is ``TWILIO_AUTH_TOKEN``, which that webhook holds
    anyway. X-Twilio-Signature covers only the URL, the same for every call, so a leaked
    signature would otherwise open streams forever."""
    message = f"xswarm-stream-token\0{call_sid}\0{expires}".encode()
    mac = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return f"{expires}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def stream_token_problem(secret: str, start: Start, now: float) -> str | None:
    """Why ``start`` does not carry a valid stream token for its call; None when it does."""
    return token_problem(secret, start.call_sid, start.custom_parameters, now)


def token_problem(
    secret: str, call_sid: str, parameters: Mapping[str, str], now: float
) -> str | None:
    """Why a stream of call ``call_sid`` with these custom ``parameters`` does not carry a
    valid stream token; None when it does."""
    given = parameters.get(STREAM_TOKEN_PARAMETER)
    if not given:
        return f'the stream has no "{STREAM_TOKEN_PARAMETER}" parameter'
    expires_text, _, _ = given.partition(".")
    if not (expires_text.isascii() and expires_text.isdigit() and len(expires_text) <= 12):
        return f'"{STREAM_TOKEN_PARAMETER}" is malformed'
    expires = int(expires_text)
    expected = stream_token(secret, call_sid, expires)
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
        return f'"{STREAM_TOKEN_PARAMETER}" does not match this call'
    if expires < now:
        return f'"{STREAM_TOKEN_PARAMETER}" expired {int(now - expires)} s ago'
    if expires > now + MAX_STREAM_TOKEN_LIFETIME:
        return f'"{STREAM_TOKEN_PARAMETER}" is valid for more than {MAX_STREAM_TOKEN_LIFETIME} s'
    return None


def validate_signature(auth_token: str, url: str, params: FormParams, signature: str) -> bool:
    expected = expected_signature(auth_token, url, params)
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


# ---------------------------------------------------------------------------------------
# Voice webhooks: the form Twilio POSTs for a call, and the TwiML answered
# ---------------------------------------------------------------------------------------

STREAM_PATH = "/twilio"
VOICE_PATH = "/twilio/voice"
STATUS_PATH = "/twilio/status"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 64 * 1024  # Twilio's call webhooks send about 30 short fields
MAX_FORM_FIELDS = 256
MAX_ADDRESS_CHARS = 128  # From/To: +E.164, client:NAME, sip:USER@HOST, "anonymous"
# What Twilio reports in CallStatus; a newer status is recorded as it comes if it is shaped
# like these (Twilio adds values over time and a report must not be lost for it).
CALL_STATUSES = (
    "queued",
    "initiated",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "failed",
    "no-answer",
    "canceled",
)
_WORD = re.compile(r"[a-z][a-z-]{0,31}")
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# How long a minted stream token stays valid: Twilio opens the stream right after the TwiML.
STREAM_TOKEN_TTL = 120


class FormError(ProtocolError):
    """A webhook request we refuse; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, INVALID)
        self.status = status


@dataclass(frozen=True, slots=True)
class CallWebhook:
    """What one of Twilio's call webhooks says about a call (voice URL or status callback)."""

    call_sid: str
    account_sid: str = ""
    caller: str = ""  # From
    callee: str = ""  # To
    direction: str = ""
    status: str = ""  # CallStatus
    duration_s: int | None = None  # CallDuration, on completed
    sequence: int | None = None  # SequenceNumber, on status callbacks


def parse_form(body: bytes, content_type: str) -> list[tuple[str, str]]:
    """A webhook's body as (name, value) pairs in order; FormError says why not."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != FORM_CONTENT_TYPE:
        raise FormError(
            f"Content-Type {media_type[:64] or 'missing'!r}: Twilio's webhooks send "
            f"{FORM_CONTENT_TYPE}",
            415,
        )
    if len(body) > MAX_FORM_BYTES:
        raise FormError(f"body of {len(body)} bytes exceeds {MAX_FORM_BYTES}", 413)
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise FormError("form is not URL-encoded text (raw non-ASCII bytes)") from None
    try:
        return parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=True,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError as exc:
        reason = "too many fields" if "Max number" in str(exc) else "malformed or not UTF-8"
        raise FormError(f"form is not a valid URL-encoded body: {reason}") from None


def parse_call_webhook(pairs: Sequence[tuple[str, str]], status_required: bool) -> CallWebhook:
    """The call fields of a webhook form; FormError names the field that is wrong."""
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields and fields[name] != value:
            raise FormError(f'"{name[:32]}" is sent twice with different values')
        fields[name] = value
    if "CallSid" not in fields:
        raise FormError('missing "CallSid": is this URL set as the number\'s voice webhook?')
    status = fields.get("CallStatus", "")
    if status_required and not status:
        raise FormError('missing "CallStatus": a status callback reports one')
    if status and _WORD.fullmatch(status) is None:
        raise FormError(f'"CallStatus" {status[:24]!r} is not a call status')
    direction = fields.get("Direction", "")
    if direction and _WORD.fullmatch(direction) is None:
        raise FormError(f'"Direction" {direction[:24]!r} is not a call direction')
    return CallWebhook(
        call_sid=_form_sid(fields, "CallSid"),
        account_sid=_form_sid(fields, "AccountSid") if fields.get("AccountSid") else "",
        caller=_address(fields, "From"),
        callee=_address(fields, "To"),
        direction=direction,
        status=status,
        duration_s=_form_count(fields, "CallDuration"),
        sequence=_form_count(fields, "SequenceNumber"),
    )


def _form_sid(fields: Mapping[str, str], name: str) -> str:
    value = fields[name]
    if _SID.fullmatch(value) is None:
        raise FormError(f'"{name}" must be 1 to {MAX_SID_CHARS} letters or digits')
    return value


def _address(fields: Mapping[str, str], name: str) -> str:
    value = fields.get(name, "")
    if len(value) > MAX_ADDRESS_CHARS or _UNPRINTABLE.search(value):
        raise FormError(
            f'"{name}" must be at most {MAX_ADDRESS_CHARS} printable characters '
            "(a phone number, client: or sip: address)"
        )
    return value


def _form_count(fields: Mapping[str, str], name: str) -> int | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 12):
        raise FormError(f'"{name}" must be a whole number, got {value[:24]!r}')
    return int(value)


def public_root(public_url: str) -> tuple[bool, str, str]:
    """``public_url`` as (secure, host[:port], path prefix): the bridge's root as Twilio
    reaches it. A ``public_url`` that names the stream itself (``…/twilio``) has that path
    taken off, as the stream's signature check does."""
    parts = urlsplit(public_url)
    prefix = parts.path.rstrip("/")
    if prefix.endswith(STREAM_PATH):
        prefix = prefix[: -len(STREAM_PATH)]
    return parts.scheme in ("wss", "https"), parts.netloc, prefix


def stream_url(public_url: str) -> str:
    """Where Twilio opens the media stream: ``wss://HOST/PREFIX/twilio``."""
    secure, netloc, prefix = public_root(public_url)
    return f"{'wss' if secure else 'ws'}://{netloc}{prefix}{STREAM_PATH}"


def webhook_url(public_url: str, path: str) -> str:
    """The https:// URL of one of this bridge's webhooks (``VOICE_PATH``, ``STATUS_PATH``)."""
    secure, netloc, prefix = public_root(public_url)
    return f"{'https' if secure else 'http'}://{netloc}{prefix}{path}"


def signed_url_variants(url: str) -> tuple[str, ...]:
    """``url`` as given, without its port and with the default one: Twilio's own validator
    accepts all three, because Twilio signs a URL with or without the port."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme in ("https", "wss") else 80
    bare = parts._replace(netloc=host).geturl()
    ported = parts._replace(netloc=f"{host}:{parts.port or default}").geturl()
    return tuple(dict.fromkeys((url, bare, ported)))


def connect_twiml(stream: str, parameters: Sequence[tuple[str, str]]) -> str:
    """TwiML that connects the call to a bidirectional media stream at ``stream``, each
    parameter reaching the stream's ``start`` as ``customParameters``."""
    lines = "".join(
        f'<Parameter name="{_xml(name)}" value="{_xml(value)}"/>' for name, value in parameters
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<Response><Connect><Stream url="{_xml(stream)}">{lines}</Stream></Connect></Response>'
    )


def say_hangup_twiml(message: str) -> str:
    """TwiML that tells the caller ``message`` and hangs up (the bridge cannot take the call)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Say>{_xml(message)}</Say><Hangup/></Response>"
    )


def _xml(text: str) -> str:
    """Text safe in an XML attribute or element; characters XML 1.0 forbids are dropped."""
    return escape(_UNPRINTABLE.sub("", text), {'"': "&quot;"})


_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def e164_problem(number: str) -> str | None:
    """Why ``number`` is not a phone number as Twilio's API takes it; None when it is."""
    if _E164.fullmatch(number) is None:
        return (
            f"{number[:32]!r} is not an E.164 number: + then the country code and number, "
            "e.g. +14155550100"
        )
    return None
