"""Telnyx Media Streaming, sans-I/O: Telnyx's JSON dialect to ``media_stream`` events and back.

Field names are from Telnyx's developer docs, "Media Streaming" (Programmable Voice) and the
Call Control "streaming_start" command (``stream_url``, ``stream_track``,
``stream_bidirectional_mode``, ``stream_bidirectional_codec``, ``stream_auth_token``):

- in: ``connected`` (``version``); ``start`` with ``stream_id`` and ``start.call_control_id``,
  ``start.media_format.{encoding, sample_rate, channels}`` (encoding ``PCMU`` or ``PCMA``);
  ``media`` with ``media.{track, chunk, timestamp, payload}`` and ``stream_id``; ``dtmf``
  with ``dtmf.digit``; ``mark`` with ``mark.name``; ``stop``; ``error`` with ``payload``.
  ``sequence_number``, ``chunk`` and ``timestamp`` arrive as decimal strings.
- out (bidirectional mode ``rtp``): ``{"event":"media","media":{"payload":…}}`` in the
  stream's codec, ``{"event":"mark","mark":{"name":…}}`` and ``{"event":"clear"}``; none
  carries the stream id, the socket is the stream.

The media socket itself is not signed (Telnyx's Ed25519 signatures are on webhooks); Telnyx
sends ``stream_auth_token`` as ``Authorization: Bearer …`` on the upgrade, which the bridge
checks (``xswarm.bridge.carriers``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from xswarm.protocol import media_stream as ms

CARRIER = "Telnyx"
ENCODINGS = ("PCMU", "PCMA")
SAMPLE_RATE = 8000
MAX_PAYLOAD_BYTES = 1600  # 200 ms of 8-bit audio; anything larger is not a media frame


def parse(text: str | bytes) -> ms.Event:
    """One message from Telnyx as an event; ProtocolError(message, close_code) if malformed."""
    message = ms.load(text)
    event = message["event"]
    if event == "media":
        return ms.media(message, MAX_PAYLOAD_BYTES)
    if event == "start":
        return _parse_start(message)
    if event == "connected":
        return ms.Connected()
    if event == "dtmf":
        return ms.Dtmf(ms.digit(ms.obj(message, "dtmf")))
    if event == "mark":
        return ms.Mark(ms.text(ms.obj(message, "mark"), "name", "mark.name")[:128])
    if event == "stop":
        return ms.Stop()
    return ms.Unknown(event[:64])


def _parse_start(message: dict[str, Any]) -> ms.Start:
    start = ms.obj(message, "start")
    media_format = ms.obj(start, "media_format", "start.media_format")
    encoding = media_format.get("encoding")
    rate = media_format.get("sample_rate")
    channels = media_format.get("channels", 1)
    if (
        encoding not in ENCODINGS
        or ms.loose_int(rate) != SAMPLE_RATE
        or ms.loose_int(channels) != 1
    ):
        raise ms.unsupported(CARRIER, encoding, rate, "PCMU or PCMA at 8000 Hz mono")
    assert isinstance(encoding, str)
    return ms.Start(
        stream_id=ms.identifier(message, "stream_id", "stream_id"),
        call_id=ms.identifier(start, "call_control_id", "start.call_control_id"),
        encoding=encoding,
        caller=ms.optional_text(start, "from", "start.from"),
        parameters=ms.parameters(start, "custom_parameters", "start.custom_parameters"),
    )


class Outbound(ms.Outbound):
    """What the bridge sends on one Telnyx stream; the socket is the stream, so no id."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(
            '{"event":"media","media":{"payload":"',
            '{"event":"mark","mark":{"name":',
            '{"event":"clear"}',
        )


def outbound(start: ms.Start) -> Outbound:
    return Outbound()


DIALECT = ms.Dialect(CARRIER, parse, outbound, MAX_PAYLOAD_BYTES)


def parse_outbound(text: str | bytes) -> ms.OutEvent:
    """One message a server sent to Telnyx (what a simulated Telnyx reads back)."""
    return ms.read_outbound(text, CARRIER, MAX_PAYLOAD_BYTES)


class Caller:
    """What Telnyx sends on one stream, for the simulated callers and the tests."""

    def __init__(self, encoding: str = "PCMU", caller: str | None = None) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"Telnyx streams carry PCMU or PCMA, not {encoding!r}")
        self.encoding = encoding
        self.caller = caller
        self.stream_id = str(uuid.uuid4())
        self.call_id = "v3:" + uuid.uuid4().hex
        self._sid = json.dumps(self.stream_id)

    def opening(self) -> list[str]:
        start: dict[str, Any] = {
            "user_id": str(uuid.uuid4()),
            "call_control_id": self.call_id,
            "client_state": None,
            "media_format": {"encoding": self.encoding, "sample_rate": SAMPLE_RATE, "channels": 1},
        }
        if self.caller:
            start["from"] = self.caller
        return [
            '{"event":"connected","version":"1.0.0"}',
            json.dumps(
                {
                    "event": "start",
                    "sequence_number": "1",
                    "start": start,
                    "stream_id": self.stream_id,
                }
            ),
        ]

    def media(self, sequence: int, chunk: int, timestamp_ms: int, payload: bytes) -> str:
        return (
            f'{{"event":"media","sequence_number":"{sequence}","media":{{"track":"inbound",'
            f'"chunk":"{chunk}","timestamp":"{timestamp_ms}","payload":"{ms.b64(payload)}"}},'
            f'"stream_id":{self._sid}}}'
        )

    def dtmf(self, sequence: int, digit: str) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "stream_id": self.stream_id,
                "sequence_number": str(sequence),
                "dtmf": {"digit": digit},
            }
        )

    def played(self, sequence: int, name: str) -> str:
        return json.dumps(
            {
                "event": "mark",
                "sequence_number": str(sequence),
                "stream_id": self.stream_id,
                "mark": {"name": name},
            }
        )

    def stop(self, sequence: int) -> str:
        return json.dumps(
            {
                "event": "stop",
                "sequence_number": str(sequence),
                "stop": {"user_id": "", "call_control_id": self.call_id},
                "stream_id": self.stream_id,
            }
        )
