"""Kyutai's Moshi client protocol (``/api/chat``), sans-I/O: bytes in, messages out, and back.

Every WebSocket message is binary and its first byte is the kind: the server sends the 0x00
handshake once the call is admitted; 0x01 carries Ogg-Opus pages both ways; 0x02 carries the
model's words as UTF-8. Kinds 0x03-0x07 exist in Kyutai's Rust protocol (control, metadata,
error, ping, colored text): a peer may send them, and :func:`parse` returns them as
:class:`Other` so that each end decides what to ignore. The bridge and the ``xswarm call``
client both read and write the protocol through this module, so the two cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from xswarm.errors import ProtocolError

INVALID = 1007  # WebSocket close code: invalid frame payload data
UNSUPPORTED = 1003  # WebSocket close code: unsupported data

OGG_MAGIC = b"OggS"


class Kind(IntEnum):
    HANDSHAKE = 0x00
    AUDIO = 0x01
    TEXT = 0x02
    CONTROL = 0x03
    METADATA = 0x04
    ERROR = 0x05
    PING = 0x06
    COLORED_TEXT = 0x07


# The server's handshake is the kind byte alone: Kyutai's web client needs nothing more.
HANDSHAKE = bytes([Kind.HANDSHAKE])


@dataclass(frozen=True, slots=True)
class Audio:
    """Ogg-Opus pages (always starting with ``OggS``)."""

    pages: bytes


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Other:
    """A kind this project does not act on (handshake from a client, control, ping, ...)."""

    kind: Kind
    payload: bytes


@dataclass(frozen=True, slots=True)
class Unknown:
    """A kind byte outside Kyutai's protocol; what to do with it is the receiver's call."""

    kind: int


Message = Audio | Text | Other | Unknown


def parse(data: bytes) -> Message:
    """One binary message as a Message; ProtocolError(message, close code) if malformed."""
    if not data:
        raise ProtocolError("empty message: expected a kind byte", INVALID)
    kind, payload = data[0], data[1:]
    if kind == Kind.AUDIO:
        if not payload.startswith(OGG_MAGIC):
            raise ProtocolError(
                "audio message is not Ogg-Opus: expected pages starting with OggS", INVALID
            )
        return Audio(payload)
    if kind == Kind.TEXT:
        return Text(payload.decode("utf-8", "replace"))
    if kind <= max(Kind):
        return Other(Kind(kind), payload)
    return Unknown(kind)


def is_handshake(data: bytes) -> bool:
    return data[:1] == HANDSHAKE


def audio(pages: bytes) -> bytes:
    return bytes([Kind.AUDIO]) + pages


def text(words: str) -> bytes:
    return bytes([Kind.TEXT]) + words.encode("utf-8")


def unknown_kind(message: Unknown) -> ProtocolError:
    """The error a receiver that refuses unknown kinds closes the connection with."""
    return ProtocolError(f"unknown message kind 0x{message.kind:02x}", UNSUPPORTED)
