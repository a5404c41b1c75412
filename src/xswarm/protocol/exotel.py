"""Exotel Voicebot/Stream applet, sans-I/O: Exotel's JSON dialect to ``media_stream`` events.

Field names are from Exotel's support docs, "Working with the Stream and Voicebot Applet"
(all snake_case): ``connected``; ``start`` with ``stream_sid`` and ``start.{stream_sid,
call_sid, account_sid, from, to, custom_parameters, media_format}``; ``media`` with
``stream_sid``, ``sequence_number`` and ``media.{chunk, timestamp, payload}``; ``dtmf`` with
``dtmf.{digit, duration}``; ``mark`` with ``mark.name``; ``stop`` with ``stop.reason``. Out:
``media`` with ``stream_sid`` and ``media.payload``, ``mark`` and ``clear``.

Exotel's audio is raw 16-bit signed little-endian PCM ("slin"), mono, base64 in
``media.payload``; ``media_format.encoding`` says ``base64``. It is 8 kHz unless the applet's
stream URL asks for 16 or 24 kHz (``?sample-rate=16000``), which ``media_format.sample_rate``
then names; the bridge serves the rate the start names. The socket is authenticated the way
Exotel documents for its applet: ``wss://user:token@host/exotel`` (HTTP Basic on the
upgrade), which the bridge checks against its carrier token (``xswarm.bridge.carriers``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from xswarm.errors import ProtocolError
from xswarm.protocol import media_stream as ms

CARRIER = "Exotel"
SAMPLE_RATE = 8000
SAMPLE_RATES = (8000, 16000, 24000)
ENCODINGS = ("base64", "raw/slin", "slin", "audio/x-l16")  # every name for the same L16
MAX_PAYLOAD_BYTES = 48000  # 1 s of 16-bit audio at 24 kHz; Exotel's chunks are far smaller
# Exotel's Voicebot applet plays a chunk cleanly from 3.2 KB, "100 ms of data", in multiples
# of 320 bytes ("Working with the Stream and Voicebot Applet", chunk size requirements). 3.2 KB
# is 200 ms at 8 kHz and 67 ms at 24 kHz, so a chunk is at least both. A 20 ms frame is 320,
# 640 or 960 bytes at 8, 16 or 24 kHz, so chunks of whole frames are multiples of 320.
MIN_OUTBOUND_BYTES = 3200
MIN_OUTBOUND_MS = 100


def parse(text: str | bytes) -> ms.Event:
    """One message from Exotel as an event; ProtocolError(message, close_code) if malformed."""
    message = ms.load(text)
    event = message["event"]
    if event == "media":
        media = ms.obj(message, "media")
        return ms.Media(
            ms.payload(media, MAX_PAYLOAD_BYTES),
            ms.number(media, "timestamp", "media.timestamp", optional=True),
        )
    if event == "start":
        return _parse_start(message)
    if event == "connected":
        return ms.Connected()
    if event == "dtmf":
        return ms.Dtmf(ms.digit(ms.obj(message, "dtmf")))
    if event == "mark":
        return ms.Mark(ms.text(ms.obj(message, "mark"), "name", "mark.name")[:128])
    if event == "stop":
        stop = message.get("stop")
        reason = ms.optional_text(stop, "reason", "stop.reason", 64) if type(stop) is dict else None
        return ms.Stop(reason or "")
    return ms.Unknown(event[:64])


def _parse_start(message: dict[str, Any]) -> ms.Start:
    start = ms.obj(message, "start")
    media_format = start.get("media_format") or {}
    if type(media_format) is not dict:
        raise ProtocolError(
            f'"start.media_format" must be an object, got {ms.kind(media_format)}', ms.INVALID
        )
    encoding = media_format.get("encoding", "base64")
    rate = media_format.get("sample_rate", SAMPLE_RATE)
    sample_rate = ms.loose_int(rate)
    if encoding not in ENCODINGS or sample_rate is None or sample_rate not in SAMPLE_RATES:
        raise ms.unsupported(
            CARRIER, encoding, rate, "16-bit linear PCM at 8000 Hz, 16000 Hz or 24000 Hz"
        )
    stream_sid = message.get("stream_sid", start.get("stream_sid"))
    return ms.Start(
        stream_id=ms.identifier({"stream_sid": stream_sid}, "stream_sid", "stream_sid"),
        call_id=ms.identifier(start, "call_sid", "start.call_sid"),
        encoding="L16",
        caller=ms.optional_text(start, "from", "start.from"),
        parameters=ms.parameters(start, "custom_parameters", "start.custom_parameters"),
        sample_rate=sample_rate,
    )


class Outbound(ms.Outbound):
    """What the bridge sends on one Exotel stream, every message naming its ``stream_sid``."""

    __slots__ = ()

    def __init__(self, stream_sid: str) -> None:
        sid = json.dumps(stream_sid)
        super().__init__(
            f'{{"event":"media","stream_sid":{sid},"media":{{"payload":"',
            f'{{"event":"mark","stream_sid":{sid},"mark":{{"name":',
            f'{{"event":"clear","stream_sid":{sid}}}',
        )


def outbound(start: ms.Start) -> Outbound:
    return Outbound(start.stream_id)


DIALECT = ms.Dialect(
    CARRIER, parse, outbound, MAX_PAYLOAD_BYTES, MIN_OUTBOUND_BYTES, MIN_OUTBOUND_MS
)


def parse_outbound(text: str | bytes) -> ms.OutEvent:
    """One message a server sent to Exotel (what a simulated Exotel reads back)."""
    return ms.read_outbound(text, CARRIER, MAX_PAYLOAD_BYTES)


class Caller:
    """What Exotel sends on one stream, for the simulated callers and the tests."""

    def __init__(
        self,
        encoding: str = "L16",
        caller: str | None = None,
        custom_parameters: Mapping[str, str] | None = None,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        if encoding != "L16":
            raise ValueError(f"Exotel streams carry 16-bit linear PCM (L16), not {encoding!r}")
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"Exotel streams at 8000, 16000 or 24000 Hz, not {sample_rate}")
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.caller = caller
        self.custom_parameters = dict(custom_parameters or {})
        self.stream_id = uuid.uuid4().hex
        self.call_id = uuid.uuid4().hex
        self._sid = json.dumps(self.stream_id)

    def opening(self) -> list[str]:
        start = {
            "stream_sid": self.stream_id,
            "call_sid": self.call_id,
            "account_sid": "exotel-account",
            "from": self.caller or "",
            "to": "",
            "custom_parameters": self.custom_parameters,
            "media_format": {
                "encoding": "base64",
                "sample_rate": str(self.sample_rate),
                "bit_rate": f"{self.sample_rate * 16 // 1000}kbps",
            },
        }
        return [
            '{"event":"connected"}',
            json.dumps(
                {
                    "event": "start",
                    "sequence_number": 1,
                    "stream_sid": self.stream_id,
                    "start": start,
                }
            ),
        ]

    def media(self, sequence: int, chunk: int, timestamp_ms: int, payload: bytes) -> str:
        return (
            f'{{"event":"media","sequence_number":{sequence},"stream_sid":{self._sid},'
            f'"media":{{"chunk":{chunk},"timestamp":"{timestamp_ms}",'
            f'"payload":"{ms.b64(payload)}"}}}}'
        )

    def dtmf(self, sequence: int, digit: str) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "sequence_number": sequence,
                "stream_sid": self.stream_id,
                "dtmf": {"duration": "100", "digit": digit},
            }
        )

    def played(self, sequence: int, name: str) -> str:
        return json.dumps(
            {
                "event": "mark",
                "sequence_number": sequence,
                "stream_sid": self.stream_id,
                "mark": {"name": name},
            }
        )

    def stop(self, sequence: int) -> str:
        return json.dumps(
            {
                "event": "stop",
                "sequence_number": sequence,
                "stream_sid": self.stream_id,
                "stop": {
                    "call_sid": self.call_id,
                    "account_sid": "exotel-account",
                    "reason": "callended",
                },
            }
        )
