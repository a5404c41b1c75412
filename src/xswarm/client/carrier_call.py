"""One simulated Telnyx, Plivo or Exotel call: ``twilio_call``'s caller, in another dialect.

It sends what the carrier sends (its opening, a 20 ms media frame every 20 ms, DTMF, stop)
and reads what a server may send back (media, marks, clears), answering each mark as the
carrier does once the audio before it has played (here: once it has arrived).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass

import aiohttp
import numpy as np

from xswarm.audio import wire
from xswarm.client.carriers import CallerSide, Carrier
from xswarm.client.common import ClientError, describe_failure, sleep_until
from xswarm.client.twilio_call import FRAME_SECONDS, TwilioCallResult, dtmf_schedule
from xswarm.errors import ProtocolError
from xswarm.protocol import media_stream as ms


@dataclass
class CarrierCallResult(TwilioCallResult):
    """What came back, as for Twilio; the reply decoded with the stream's own codec, at the
    stream's rate."""

    codec: wire.WireCodec = wire.PCMU
    sample_rate: int = wire.SAMPLE_RATE

    def reply_pcm(self) -> np.ndarray:
        return self.codec.decode(b"".join(self.payloads))


def wire_frames(
    pcm: np.ndarray, codec: wire.WireCodec, sample_rate: int = wire.SAMPLE_RATE
) -> list[bytes]:
    """The caller's audio (at ``sample_rate``) as 20 ms frames in ``codec``; the last one
    padded with silence."""
    encoded = codec.encode(pcm)
    size = wire.frame_samples(sample_rate) * codec.sample_bytes
    encoded += codec.silence * (-len(encoded) % size // codec.sample_bytes)
    return [encoded[i : i + size] for i in range(0, len(encoded), size)]


def auth_headers() -> dict[str, str]:
    """``XSWARM_CARRIER_TOKEN`` as a Bearer token (the bridge takes Telnyx's own header too)."""
    token = os.environ.get(ms.CARRIER_TOKEN_ENV)
    return {"Authorization": f"Bearer {token}"} if token else {}


async def place_carrier_call(
    url: str,
    carrier: Carrier,
    pcm: np.ndarray,
    tail_seconds: float = 1.0,
    dtmf: str = "",
    encoding: str | None = None,
    connect_timeout: float = 10.0,
    sample_rate: int = wire.SAMPLE_RATE,
) -> CarrierCallResult:
    """Play ``pcm`` (at ``sample_rate``) as the caller; return what came back and when."""
    codec = carrier.codec(encoding)
    carrier.check_rate(codec.name, sample_rate)
    frames = wire_frames(pcm, codec, sample_rate)
    digits = dtmf_schedule(dtmf, len(frames))
    caller = carrier.caller(codec.name, sample_rate)
    result = CarrierCallResult(caller.stream_id, codec=codec, sample_rate=sample_rate)
    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientWSTimeout(ws_close=5.0)
    async with aiohttp.ClientSession() as session:
        try:
            ws = await asyncio.wait_for(
                session.ws_connect(url, headers=auth_headers(), timeout=timeout),
                connect_timeout,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ClientError(describe_failure(url, exc)) from exc
        async with ws:
            receiver = asyncio.create_task(_receive(ws, carrier, caller, result, loop))
            sequence = 1
            for message in caller.opening():
                await ws.send_str(message)
            start = loop.time()
            try:
                for index, frame in enumerate(frames):
                    if ws.closed:
                        break
                    await sleep_until(start + index * FRAME_SECONDS)
                    sequence += 1
                    await ws.send_str(caller.media(sequence, index + 1, index * 20, frame))
                    result.sent_at.append(loop.time())
                    if index in digits:
                        sequence += 1
                        await ws.send_str(caller.dtmf(sequence, digits[index]))
                await sleep_until(start + len(frames) * FRAME_SECONDS + tail_seconds)
                if not ws.closed:
                    await ws.send_str(caller.stop(sequence + 1))
                    await ws.close()
            except ConnectionError as exc:
                result.errors.append(f"the bridge went away mid-call: {exc}")
            await receiver
            result.close_code = ws.close_code
    return result


async def _receive(
    ws: aiohttp.ClientWebSocketResponse,
    carrier: Carrier,
    caller: CallerSide,
    result: CarrierCallResult,
    loop: asyncio.AbstractEventLoop,
) -> None:
    while True:
        message = await ws.receive()
        if message.type == aiohttp.WSMsgType.TEXT:
            now = loop.time()
            try:
                event = carrier.parse_outbound(message.data)
            except ProtocolError as exc:
                result.errors.append(f"bad message from the bridge: {exc}")
                continue
            if isinstance(event, ms.OutMedia):
                result.received_at.append(now)
                result.payloads.append(event.payload)
            elif isinstance(event, ms.OutMark):
                result.marks.append(event.name)
                sequence = len(result.sent_at) + len(result.marks) + 1
                with contextlib.suppress(ConnectionError):
                    await ws.send_str(caller.played(sequence, event.name))
            else:
                result.clears += 1
        elif message.type == aiohttp.WSMsgType.BINARY:
            result.errors.append(f"binary message from the bridge: {carrier.name} only sends text")
        elif message.type == aiohttp.WSMsgType.CLOSE:
            result.close_reason = str(message.extra or "")
        elif message.type == aiohttp.WSMsgType.ERROR:
            result.errors.append(f"connection error: {message.data}")
        if message.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        ):
            return
