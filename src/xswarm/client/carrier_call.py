"""One simulated carrier call (Twilio, Telnyx, Plivo or Exotel), paced in real time.

It sends what the carrier sends (its opening, a 20 ms media frame every 20 ms, DTMF, stop)
and reads what a server may send back (media, marks, clears), answering each mark as the
carrier does once the audio before it has played (here: once it has arrived). What differs
between carriers is only their dialect and their upgrade's auth, both in ``carriers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from xswarm.audio import wire
from xswarm.client.carriers import CallerSide, Carrier
from xswarm.client.common import (
    ClientError,
    FrameTimes,
    describe_failure,
    listen_for_tail,
    sleep_until,
)
from xswarm.errors import ProtocolError
from xswarm.protocol import media_stream as ms

FRAME_SECONDS = 0.020


@dataclass
class CallResult(FrameTimes):
    """What came back and when; the reply decoded with the stream's own codec, at the
    stream's rate."""

    stream_sid: str
    sent_at: list[float] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)
    clears: int = 0
    close_code: int | None = None
    close_reason: str = ""
    errors: list[str] = field(default_factory=list)
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


def dtmf_schedule(digits: str, frame_count: int) -> dict[int, str]:
    """Spread the digits evenly through the call: frame index -> digit."""
    step = frame_count // (len(digits) + 1) if digits else 0
    return {step * (i + 1): digit for i, digit in enumerate(digits)}


async def place_carrier_call(
    url: str,
    carrier: Carrier,
    pcm: np.ndarray,
    tail_seconds: float = 1.0,
    dtmf: str = "",
    encoding: str | None = None,
    connect_timeout: float = 10.0,
    sample_rate: int = wire.SAMPLE_RATE,
    signed_url: str | None = None,
    tls: ssl.SSLContext | bool = True,
) -> CallResult:
    """Play ``pcm`` (at ``sample_rate``) as the caller; return what came back and when.
    ``signed_url``: the URL the bridge sees, when a carrier signs it and it is not ``url``."""
    codec = carrier.codec(encoding)
    carrier.check_rate(codec.name, sample_rate)
    frames = wire_frames(pcm, codec, sample_rate)
    digits = dtmf_schedule(dtmf, len(frames))
    caller = carrier.caller(codec.name, sample_rate)
    result = CallResult(caller.stream_id, codec=codec, sample_rate=sample_rate)
    headers = carrier.headers(signed_url or url)
    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientWSTimeout(ws_close=5.0)
    async with aiohttp.ClientSession() as session:
        try:
            ws = await asyncio.wait_for(
                session.ws_connect(url, headers=headers, timeout=timeout, ssl=tls),
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
                # A call the bridge ended early is over: no tail to wait out.
                if not ws.closed:
                    await listen_for_tail(start + len(frames) * FRAME_SECONDS, tail_seconds)
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
    result: CallResult,
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
            if event.stream_sid and event.stream_sid != caller.stream_id:
                result.errors.append(f"message for stream {event.stream_sid!r}, not ours")
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
