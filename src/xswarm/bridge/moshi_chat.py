"""``WS /api/chat``: Kyutai's Moshi client protocol, so their own web client works against us.

Binary messages whose first byte is the kind: 0x00 handshake (we send it once the call is
admitted), 0x01 Ogg-Opus pages both ways (through ``sphn``), 0x02 UTF-8 text (the model's
words, to the client). Kinds 0x03-0x07 exist in Kyutai's Rust protocol (control, metadata,
error, ping, colored text); a client may send them and we ignore them.
"""

from __future__ import annotations

import time

import numpy as np
import sphn
from aiohttp import WSMsgType, web

from xswarm.bridge.session import (
    CLOSE_INVALID_DATA,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN,
    CLOSE_UNSUPPORTED,
    CallSession,
    serve_call,
)
from xswarm.errors import ProtocolError

HANDSHAKE = b"\x00"
AUDIO = 0x01
TEXT = 0x02
IGNORED_KINDS = frozenset(range(0x03, 0x08))
OGG_MAGIC = b"OggS"


class MoshiSession(CallSession):
    transport_name = "moshi"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        rate = self.bridge.engine.sample_rate
        self._reader = sphn.OpusStreamReader(rate)
        self._writer = sphn.OpusStreamWriter(rate)

    async def run(self) -> None:
        if not self.begin():
            await self.hangup("engine_error", CLOSE_TRY_AGAIN, "no engine slot free; try again")
            return
        reason = "disconnected"
        try:
            await self.send_bytes(HANDSHAKE)
            reason = await self._receive()
        except ProtocolError as exc:
            self.log.warning("protocol error: %s", exc)
            await self.hangup("protocol_error", exc.close_code, str(exc))
        finally:
            self.finish(reason)

    async def _receive(self) -> str:
        async for message in self.ws:
            if message.type == WSMsgType.BINARY:
                self._handle(message.data)
            elif message.type == WSMsgType.TEXT:
                raise ProtocolError(
                    "text message: the Moshi protocol sends binary messages whose first byte is "
                    "the kind",
                    CLOSE_UNSUPPORTED,
                )
            elif message.type == WSMsgType.ERROR:
                exc = self.ws.exception()
                return (
                    "protocol_error"
                    if getattr(exc, "code", None) == CLOSE_TOO_BIG
                    else "disconnected"
                )
        return "caller_hangup" if self.ws.close_code in (1000, 1001) else "disconnected"

    def _handle(self, data: bytes) -> None:
        if not data:
            raise ProtocolError("empty message: expected a kind byte", CLOSE_INVALID_DATA)
        kind = data[0]
        if kind == AUDIO:
            payload = data[1:]
            if not payload.startswith(OGG_MAGIC):
                raise ProtocolError(
                    "audio message is not Ogg-Opus: expected pages starting with OggS",
                    CLOSE_INVALID_DATA,
                )
            try:
                pcm = self._reader.append_bytes(payload)
            except ValueError as exc:
                raise ProtocolError(
                    f"undecodable Ogg-Opus audio: {exc}", CLOSE_INVALID_DATA
                ) from None
            if len(pcm):
                speech_ms = self.call.push_audio(
                    pcm.astype(np.float32, copy=False), time.monotonic()
                )
                if speech_ms is not None:
                    self.bridge.hub.publish(
                        "user_speech", {"call_id": self.call.call_id, "duration_ms": speech_ms}
                    )
        elif kind == TEXT or kind in IGNORED_KINDS or kind == 0x00:
            return
        else:
            raise ProtocolError(f"unknown message kind 0x{kind:02x}", CLOSE_UNSUPPORTED)

    async def deliver(self, pcm: np.ndarray | None, text: str, latency_s: float | None) -> None:
        if text:
            self.bridge.hub.publish("text", {"call_id": self.call.call_id, "text": text})
            if self.writable():
                await self.send_bytes(bytes([TEXT]) + text.encode("utf-8"))
        if pcm is None:
            return
        pages = self._writer.append_pcm(pcm)
        if pages and self.writable():
            await self.send_bytes(bytes([AUDIO]) + pages)
            self.call.frames_out += 1
            self.call.note_output(pcm, latency_s)


async def handle(request: web.Request) -> web.StreamResponse:
    return await serve_call(request, MoshiSession)
