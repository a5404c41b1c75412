"""Plivo Audio Streaming, sans-I/O: Plivo's JSON dialect to ``media_stream`` events and back.

Field names are from Plivo's docs, "Audio Streaming" and the XML "Stream" element
(``bidirectional="true"``, ``contentType="audio/x-mulaw;rate=8000"``, ``extraHeaders``):

- in: ``start`` with ``start.{streamId, callId, accountId, tracks}`` and
  ``start.mediaFormat.{encoding, sampleRate}`` (``audio/x-mulaw`` or ``audio/x-l16``);
  ``media`` with ``streamId``, ``sequenceNumber`` and ``media.{track, timestamp, chunk,
  payload}``; ``dtmf`` with ``dtmf.digit``; ``playedStream`` (a checkpoint we sent has
  played) with ``name``; ``clearedAudio``; ``stop``.
- out: ``{"event":"playAudio","media":{"contentType":…,"sampleRate":8000,"payload":…}}``,
  ``{"event":"checkpoint","streamId":…,"name":…}`` and ``{"event":"clearAudio","streamId":…}``.

Plivo does not sign the media socket's upgrade in any way it documents; the stream URL you
put in the Stream XML carries the bridge's carrier token as ``?token=`` instead.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from xswarm.protocol import media_stream as ms

CARRIER = "Plivo"
SAMPLE_RATE = 8000
CONTENT_TYPES = {"audio/x-mulaw": "PCMU", "audio/x-l16": "L16"}
# mu-law is 8 kHz only; L16 streams may be asked for at 16 kHz (contentType
# "audio/x-l16;rate=16000").
SAMPLE_RATES = {"PCMU": (8000,), "L16": (8000, 16000)}
MAX_PAYLOAD_BYTES = 6400  # 200 ms of 16-bit audio at 16 kHz; anything larger is not a frame


def parse(text: str | bytes) -> ms.Event:
    """One message from Plivo as an event; ProtocolError(message, close_code) if malformed."""
    message = ms.load(text)
    event = message["event"]
    if event == "media":
        return ms.media(message, MAX_PAYLOAD_BYTES)
    if event == "start":
        return _parse_start(message)
    if event == "dtmf":
        return ms.Dtmf(ms.digit(ms.obj(message, "dtmf")))
    if event == "playedStream":
        return ms.Mark(ms.text(message, "name")[:128])
    if event == "clearedAudio":
        return ms.Cleared()
    if event == "stop":
        return ms.Stop()
    return ms.Unknown(event[:64])


def _parse_start(message: dict[str, Any]) -> ms.Start:
    start = ms.obj(message, "start")
    media_format = ms.obj(start, "mediaFormat", "start.mediaFormat")
    content_type = media_format.get("encoding")
    rate = media_format.get("sampleRate")
    encoding = CONTENT_TYPES.get(content_type) if isinstance(content_type, str) else None
    sample_rate = ms.loose_int(rate)
    if encoding is None or sample_rate is None or sample_rate not in SAMPLE_RATES[encoding]:
        raise ms.unsupported(
            CARRIER,
            content_type,
            rate,
            "audio/x-mulaw at 8000 Hz or audio/x-l16 at 8000 or 16000 Hz",
        )
    return ms.Start(
        stream_id=ms.identifier(start, "streamId", "start.streamId"),
        call_id=ms.identifier(start, "callId", "start.callId"),
        encoding=encoding,
        sample_rate=sample_rate,
    )


class Outbound(ms.Outbound):
    """What the bridge sends on one Plivo stream, in the stream's own content type."""

    __slots__ = ()

    def __init__(self, stream_id: str, encoding: str, sample_rate: int = SAMPLE_RATE) -> None:
        content_type = next(name for name, code in CONTENT_TYPES.items() if code == encoding)
        sid = json.dumps(stream_id)
        super().__init__(
            '{"event":"playAudio","media":{"contentType":"'
            f'{content_type}","sampleRate":{sample_rate},"payload":"',
            f'{{"event":"checkpoint","streamId":{sid},"name":',
            f'{{"event":"clearAudio","streamId":{sid}}}',
            mark_suffix="}",
        )


def outbound(start: ms.Start) -> Outbound:
    return Outbound(start.stream_id, start.encoding, start.sample_rate)


DIALECT = ms.Dialect(CARRIER, parse, outbound, MAX_PAYLOAD_BYTES)


def parse_outbound(text: str | bytes) -> ms.OutEvent:
    """One message a server sent to Plivo (what a simulated Plivo reads back)."""
    message = ms.load(text)
    event = message["event"]
    if event == "playAudio":
        media = ms.obj(message, "media")
        content_type = ms.text(media, "contentType", "media.contentType")
        if content_type not in CONTENT_TYPES:
            raise ms.unsupported(CARRIER, content_type, media.get("sampleRate"), "mu-law or L16")
        return ms.OutMedia(ms.payload(media, MAX_PAYLOAD_BYTES))
    if event == "checkpoint":
        return ms.OutMark(ms.text(message, "name"))
    if event == "clearAudio":
        return ms.OutClear()
    raise ms.not_server_event(CARRIER, event, "playAudio, checkpoint, clearAudio")


class Caller:
    """What Plivo sends on one stream, for the simulated callers and the tests."""

    def __init__(self, encoding: str = "PCMU", sample_rate: int = SAMPLE_RATE) -> None:
        content_type = next((n for n, code in CONTENT_TYPES.items() if code == encoding), None)
        if content_type is None:
            raise ValueError(f"Plivo streams carry PCMU or L16, not {encoding!r}")
        if sample_rate not in SAMPLE_RATES[encoding]:
            raise ValueError(
                f"Plivo streams {encoding} at {SAMPLE_RATES[encoding]} Hz, not {sample_rate}"
            )
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.content_type = content_type
        self.stream_id = str(uuid.uuid4())
        self.call_id = str(uuid.uuid4())
        self._sid = json.dumps(self.stream_id)

    def opening(self) -> list[str]:
        start = {
            "callId": self.call_id,
            "streamId": self.stream_id,
            "accountId": "MA" + "0" * 18,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": self.content_type, "sampleRate": self.sample_rate},
        }
        return [json.dumps({"event": "start", "sequenceNumber": 0, "start": start})]

    def media(self, sequence: int, chunk: int, timestamp_ms: int, payload: bytes) -> str:
        return (
            f'{{"event":"media","sequenceNumber":{sequence},"streamId":{self._sid},'
            f'"media":{{"track":"inbound","timestamp":"{timestamp_ms}","chunk":{chunk},'
            f'"payload":"{ms.b64(payload)}"}}}}'
        )

    def dtmf(self, sequence: int, digit: str) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "sequenceNumber": sequence,
                "streamId": self.stream_id,
                "dtmf": {"track": "inbound", "digit": digit},
            }
        )

    def played(self, sequence: int, name: str) -> str:
        return json.dumps(
            {
                "event": "playedStream",
                "sequenceNumber": sequence,
                "streamId": self.stream_id,
                "name": name,
            }
        )

    def stop(self, sequence: int) -> str:
        return json.dumps({"event": "stop", "sequenceNumber": sequence, "streamId": self.stream_id})
