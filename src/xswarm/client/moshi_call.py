"""One simulated app call over Kyutai's Moshi protocol (``/api/chat``), paced in real time.

The wire format is ``xswarm.protocol.moshi``: the server's handshake says the call is
admitted, then Ogg-Opus pages flow both ways (1920 samples, 80 ms, per page at 24 kHz, as
Kyutai's client sends them) and the model's words come back as text.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import numpy as np
import sphn

from xswarm.client.common import (
    ClientError,
    FrameTimes,
    describe_failure,
    listen_for_tail,
    sleep_until,
)
from xswarm.errors import ProtocolError
from xswarm.protocol import moshi

SAMPLE_RATE = 24_000
FRAME_SAMPLES = 1920
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE


@dataclass
class MoshiCallResult(FrameTimes):
    sent_at: list[float] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)  # when each 1920-sample frame was whole
    pcm: list[np.ndarray] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    handshake_s: float = 0.0
    close_code: int | None = None
    close_reason: str = ""
    errors: list[str] = field(default_factory=list)

    def reply_pcm(self) -> np.ndarray:
        return np.concatenate(self.pcm) if self.pcm else np.zeros(0, dtype=np.float32)


def opus_frames(pcm_24k: np.ndarray) -> list[np.ndarray]:
    pad = -len(pcm_24k) % FRAME_SAMPLES
    padded = np.concatenate([pcm_24k.astype(np.float32), np.zeros(pad, dtype=np.float32)])
    return [padded[i : i + FRAME_SAMPLES] for i in range(0, len(padded), FRAME_SAMPLES)]


async def place_moshi_call(
    url: str,
    pcm_24k: np.ndarray,
    tail_seconds: float = 1.0,
    on_text: Callable[[str], None] | None = None,
    connect_timeout: float = 10.0,
    tls: ssl.SSLContext | bool = True,
) -> MoshiCallResult:
    """Play ``pcm_24k`` as the caller; return what came back and when."""
    result = MoshiCallResult()
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        began = loop.time()
        try:
            ws = await asyncio.wait_for(session.ws_connect(url, ssl=tls), connect_timeout)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ClientError(describe_failure(url, exc)) from exc
        async with ws:
            await _await_handshake(ws, url, connect_timeout)
            result.handshake_s = loop.time() - began
            receiver = asyncio.create_task(_receive(ws, result, loop, on_text))
            writer = sphn.OpusStreamWriter(SAMPLE_RATE)
            frames = opus_frames(pcm_24k)
            start = loop.time()
            try:
                for index, frame in enumerate(frames):
                    if ws.closed:
                        break
                    await sleep_until(start + index * FRAME_SECONDS)
                    pages = writer.append_pcm(frame)
                    if pages:
                        await ws.send_bytes(moshi.audio(pages))
                    result.sent_at.append(loop.time())
                await listen_for_tail(start + len(frames) * FRAME_SECONDS, tail_seconds)
                if not ws.closed:
                    await ws.close()
            except ConnectionError as exc:
                result.errors.append(f"the bridge went away mid-call: {exc}")
            await receiver
            result.close_code = ws.close_code
    return result


async def _await_handshake(ws: aiohttp.ClientWebSocketResponse, url: str, wait_s: float) -> None:
    try:
        message = await ws.receive(wait_s)
    except TimeoutError:
        raise ClientError(
            f"{url}: connected, but no handshake within {wait_s:.0f} s; the bridge may be "
            "busy with another call"
        ) from None
    if message.type == aiohttp.WSMsgType.BINARY and moshi.is_handshake(message.data):
        return
    if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
        raise ClientError(f"{url}: the bridge closed the call: {ws.close_code} {message.extra}")
    raise ClientError(f"{url}: expected the 0x00 handshake, got {message.type.name} first")


async def _receive(
    ws: aiohttp.ClientWebSocketResponse,
    result: MoshiCallResult,
    loop: asyncio.AbstractEventLoop,
    on_text: Callable[[str], None] | None,
) -> None:
    reader = sphn.OpusStreamReader(SAMPLE_RATE)
    samples = 0
    while True:
        message = await ws.receive()
        if message.type == aiohttp.WSMsgType.BINARY:
            try:
                parsed = moshi.parse(message.data)
            except ProtocolError as exc:
                result.errors.append(f"bad message from the bridge: {exc}")
                continue
            if isinstance(parsed, moshi.Audio):
                try:
                    pcm = reader.append_bytes(parsed.pages)
                except Exception as exc:  # sphn raises plain exceptions on bad Ogg data
                    result.errors.append(f"undecodable audio from the bridge: {exc}")
                    continue
                if pcm.size:
                    now = loop.time()
                    result.pcm.append(pcm)
                    whole_before = samples // FRAME_SAMPLES
                    samples += pcm.size
                    result.received_at.extend([now] * (samples // FRAME_SAMPLES - whole_before))
            elif isinstance(parsed, moshi.Text):
                result.text.append(parsed.text)
                if on_text is not None:
                    on_text(parsed.text)
        elif message.type == aiohttp.WSMsgType.TEXT:
            result.errors.append("text message from the bridge: the Moshi protocol is binary")
        elif message.type == aiohttp.WSMsgType.CLOSE:
            result.close_reason = str(message.extra or "")
            return
        elif message.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            return
        elif message.type == aiohttp.WSMsgType.ERROR:
            result.errors.append(f"connection error: {message.data}")
            return
