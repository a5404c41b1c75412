"""One simulated Twilio phone call: the caller side of Media Streams, paced in real time.

It sends what Twilio sends (connected, start, a 20 ms media frame every 20 ms, dtmf, stop)
and reads what a server may send back (media, mark, clear), answering each mark as Twilio
does once the audio before it has played (here: once it has arrived).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from xswarm.audio import mulaw
from xswarm.client.common import ClientError, describe_failure, sleep_until
from xswarm.errors import ProtocolError
from xswarm.protocol import twilio

FRAME_SECONDS = 0.020
SILENT_BYTE = b"\xff"  # mu-law zero


@dataclass
class TwilioCallResult:
    stream_sid: str
    sent_at: list[float] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)
    clears: int = 0
    close_code: int | None = None
    close_reason: str = ""
    errors: list[str] = field(default_factory=list)

    def reply_pcm(self) -> np.ndarray:
        return mulaw.decode(b"".join(self.payloads))

    def round_trips(self) -> list[float]:
        """The k-th frame back against the k-th frame sent (exact with the echo engine)."""
        return [back - out for out, back in zip(self.sent_at, self.received_at, strict=False)]

    def time_to_first_audio(self) -> float | None:
        if not self.sent_at or not self.received_at:
            return None
        return self.received_at[0] - self.sent_at[0]


def mulaw_frames(pcm_8k: np.ndarray) -> list[bytes]:
    """The caller's audio as 160-byte frames; the last one padded with silence."""
    encoded = mulaw.encode(pcm_8k)
    pad = -len(encoded) % twilio.FRAME_BYTES
    encoded += SILENT_BYTE * pad
    return [encoded[i : i + twilio.FRAME_BYTES] for i in range(0, len(encoded), twilio.FRAME_BYTES)]


def dtmf_schedule(digits: str, frame_count: int) -> dict[int, str]:
    """Spread the digits evenly through the call: frame index -> digit."""
    step = frame_count // (len(digits) + 1) if digits else 0
    return {step * (i + 1): digit for i, digit in enumerate(digits)}


async def place_twilio_call(
    url: str,
    pcm_8k: np.ndarray,
    tail_seconds: float = 1.0,
    dtmf: str = "",
    signed_url: str | None = None,
    connect_timeout: float = 10.0,
    tls: ssl.SSLContext | bool = True,
) -> TwilioCallResult:
    """Play ``pcm_8k`` as the caller; return what came back and when."""
    frames = mulaw_frames(pcm_8k)
    digits = dtmf_schedule(dtmf, len(frames))
    stream_sid, call_sid = twilio.new_stream_sid(), twilio.new_call_sid()
    account_sid = "AC" + "0" * 32
    result = TwilioCallResult(stream_sid)
    headers = {}
    token = os.environ.get("TWILIO_AUTH_TOKEN")
    if token:
        headers["X-Twilio-Signature"] = twilio.expected_signature(token, signed_url or url, {})
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
            receiver = asyncio.create_task(_receive(ws, result, loop))
            sequence = 1
            await ws.send_str(twilio.connected_message())
            await ws.send_str(twilio.start_message(stream_sid, call_sid, account_sid))
            media = twilio.InboundMedia(stream_sid)
            start = loop.time()
            try:
                for index, frame in enumerate(frames):
                    if ws.closed:
                        break
                    await sleep_until(start + index * FRAME_SECONDS)
                    sequence += 1
                    await ws.send_str(media.message(sequence, index + 1, index * 20, frame))
                    result.sent_at.append(loop.time())
                    if index in digits:
                        sequence += 1
                        await ws.send_str(twilio.dtmf_message(stream_sid, sequence, digits[index]))
                # A call the bridge ended early is over: no tail to wait out.
                if not ws.closed:
                    await sleep_until(start + len(frames) * FRAME_SECONDS + tail_seconds)
                if not ws.closed:
                    sequence += 1
                    await ws.send_str(
                        twilio.stop_message(stream_sid, sequence, call_sid, account_sid)
                    )
                    await ws.close()
            except ConnectionError as exc:
                result.errors.append(f"the bridge went away mid-call: {exc}")
            await receiver
            result.close_code = ws.close_code
    return result


async def _receive(
    ws: aiohttp.ClientWebSocketResponse, result: TwilioCallResult, loop: asyncio.AbstractEventLoop
) -> None:
    while True:
        message = await ws.receive()
        if message.type == aiohttp.WSMsgType.TEXT:
            now = loop.time()
            try:
                event = twilio.parse_outbound(message.data)
            except ProtocolError as exc:
                result.errors.append(f"bad message from the bridge: {exc}")
                continue
            if event.stream_sid != result.stream_sid:
                result.errors.append(f"message for streamSid {event.stream_sid!r}, not ours")
            if isinstance(event, twilio.OutMedia):
                result.received_at.append(now)
                result.payloads.append(event.payload)
            elif isinstance(event, twilio.OutMark):
                result.marks.append(event.name)
                sequence = len(result.sent_at) + len(result.marks) + 1
                with contextlib.suppress(ConnectionError):
                    await ws.send_str(
                        twilio.mark_in_message(result.stream_sid, sequence, event.name)
                    )
            else:
                result.clears += 1
        elif message.type == aiohttp.WSMsgType.BINARY:
            result.errors.append("binary message from the bridge: Twilio only sends text")
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
