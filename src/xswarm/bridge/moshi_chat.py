"""``WS /api/chat``: Kyutai's Moshi client protocol, so their own web client works against us.

The wire format is ``xswarm.protocol.moshi``: we send the handshake once the call is admitted,
Ogg-Opus pages flow both ways (through ``sphn``) and the model's words go to the client as
text. The other kinds of Kyutai's protocol, and text from the client, are ignored; a kind
outside the protocol closes the call.
"""

from __future__ import annotations

import time

import numpy as np
import sphn
from aiohttp import WSMsgType, web

from xswarm.bridge.host import CallHost
from xswarm.bridge.session import (
    CLOSE_INVALID_DATA,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN,
    CLOSE_UNSUPPORTED,
    CallClosed,
    CallSession,
    serve_call,
)
from xswarm.errors import ProtocolError
from xswarm.protocol import control, moshi


class MoshiSession(CallSession):
    transport_name = "moshi"

    def __init__(self, host: CallHost, request: web.Request, ws: web.WebSocketResponse) -> None:
        super().__init__(host, request, ws)
        rate = host.engine.sample_rate
        self._reader = sphn.OpusStreamReader(rate)
        self._writer = sphn.OpusStreamWriter(rate)
        self._rate = rate
        self._heard = False

    async def run(self) -> None:
        if not self.begin():
            await self.hangup("engine_error", CLOSE_TRY_AGAIN, "no engine slot free; try again")
            return
        reason = "disconnected"
        try:
            await self.send_bytes(moshi.HANDSHAKE)
            reason = await self._receive()
        except ProtocolError as exc:
            self.log.warning("protocol error: %s", exc)
            await self.hangup("protocol_error", exc.close_code, str(exc))
        except CallClosed as closed:
            await self.hangup(closed.reason, closed.code, closed.message)
        finally:
            self.finish(reason)

    async def _receive(self) -> str:
        while True:
            try:
                message = await self.receive()
            except TimeoutError:
                if not self._heard:
                    raise CallClosed(
                        "inactive",
                        CLOSE_POLICY,
                        f"inactive: no audio within {self.first_media_timeout:g} s of connecting",
                    ) from None
                raise self.inactive() from None
            if message.type == WSMsgType.BINARY:
                await self._handle(message.data)
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
            elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                break
        return "caller_hangup" if self.ws.close_code in (1000, 1001) else "disconnected"

    async def _handle(self, data: bytes) -> None:
        self.spend_message(len(data))
        message = moshi.parse(data)
        if isinstance(message, moshi.Unknown):
            raise moshi.unknown_kind(message)
        if not isinstance(message, moshi.Audio):
            return
        self._heard = True
        self.note_media()
        try:
            pcm = self._reader.append_bytes(message.pages)
        except ValueError as exc:
            raise ProtocolError(f"undecodable Ogg-Opus audio: {exc}", CLOSE_INVALID_DATA) from None
        if len(pcm):
            self.spend_audio(len(pcm) / self._rate)
            speech_ms = self.call.push_audio(pcm.astype(np.float32, copy=False), time.monotonic())
            if speech_ms is not None:
                self.host.publish(control.UserSpeech(self.call.call_id, speech_ms))
            await self.host.serve_arrived(self.call)

    async def deliver(self, pcm: np.ndarray | None, text: str, latency_s: float | None) -> None:
        if text:
            self.host.publish(control.Text(self.call.call_id, text))
            if self.writable():
                await self.send_bytes(moshi.text(text))
        if pcm is None:
            return
        pages = self._writer.append_pcm(pcm)
        if pages and self.writable():
            await self.send_bytes(moshi.audio(pages))
            self.call.frames_out += 1
            self.call.note_output(pcm, latency_s)


async def handle(request: web.Request) -> web.StreamResponse:
    return await serve_call(request, MoshiSession)
