"""Real WebSocket peers for tests: a Twilio-speaking caller and a /control subscriber."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import numpy as np

from tests.support.waiting import eventually
from xswarm.audio import mulaw
from xswarm.protocol import twilio


def tone(seconds: float, rate: int = 8000, freq: float = 440.0, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


class TwilioCaller:
    """Speaks Twilio Media Streams to the bridge, as Twilio's own media servers do."""

    def __init__(
        self, session: aiohttp.ClientSession, ws_url: str, headers: dict[str, str] | None = None
    ):
        self.session = session
        self.url = ws_url + "/twilio"
        self.headers = headers or {}
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.stream_sid = twilio.new_stream_sid()
        self.call_sid = twilio.new_call_sid()
        self.sequence = 0
        self.chunk = 0
        self.received: list[Any] = []
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    async def connect(self, start: bool = True, custom: dict[str, str] | None = None) -> None:
        self.ws = await self.session.ws_connect(self.url, headers=self.headers, max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send(twilio.connected_message())
        if start:
            await self.send(
                twilio.start_message(self.stream_sid, self.call_sid, custom_parameters=custom)
            )

    async def send(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send_str(text)

    async def ping(self, data: bytes) -> None:
        assert self.ws is not None
        await self.ws.ping(data)

    async def send_audio(self, pcm8k: np.ndarray, pace: bool = True) -> int:
        """Send 20 ms media frames, paced in real time; returns how many were sent."""
        payload = mulaw.encode(pcm8k)
        loop = asyncio.get_running_loop()
        due = loop.time()
        frames = 0
        for start in range(0, len(payload) - twilio.FRAME_BYTES + 1, twilio.FRAME_BYTES):
            self.sequence += 1
            self.chunk += 1
            await self.send(
                twilio.inbound_media_message(
                    self.stream_sid,
                    self.sequence,
                    self.chunk,
                    self.chunk * 20,
                    payload[start : start + twilio.FRAME_BYTES],
                )
            )
            frames += 1
            if pace:
                due += 0.02
                await asyncio.sleep(max(0.0, due - loop.time()))
        return frames

    async def stop(self) -> None:
        self.sequence += 1
        await self.send(twilio.stop_message(self.stream_sid, self.sequence, self.call_sid, "AC1"))

    async def _read(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.received.append(twilio.parse_outbound(message.data))
        self.closed.set()

    def media(self) -> list[twilio.OutMedia]:
        return [m for m in self.received if isinstance(m, twilio.OutMedia)]

    async def hears_back(self, sent: int) -> None:
        """Until the echo of every one of the ``sent`` frames came back. Hang up only then: a
        hang-up rightly ends the audio still on its way back."""
        await eventually(lambda: len(self.media()), lambda count: count == sent)

    def audio(self) -> np.ndarray:
        chunks = [mulaw.decode(m.payload) for m in self.media()]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code if self.ws is not None else None

    async def wait_closed(self, timeout: float = 10) -> int | None:
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)


class ControlClient:
    """A /control subscriber that records every event and can wait for one."""

    def __init__(self, session: aiohttp.ClientSession, ws_url: str, token: str | None = None):
        self.session = session
        self.url = ws_url + "/control"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ControlClient:
        self.ws = await self.session.ws_connect(self.url, headers=self.headers)
        self._reader = asyncio.create_task(self._read())
        await self.wait_for("snapshot")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()

    async def _read(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                async with self._changed:
                    self.events.append(json.loads(message.data))
                    self._changed.notify_all()

    async def send(self, body: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(body))

    def of_type(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["type"] == kind and all(e.get(k) == v for k, v in fields.items())
        ]

    async def wait_for(self, kind: str, timeout: float = 10, **fields: Any) -> dict[str, Any]:
        async def found() -> dict[str, Any]:
            async with self._changed:
                while True:
                    matches = self.of_type(kind, **fields)
                    if matches:
                        return matches[-1]
                    await self._changed.wait()

        return await asyncio.wait_for(found(), timeout)


async def idle_call(session: aiohttp.ClientSession, ws_url: str, stop: asyncio.Event) -> None:
    """A started Twilio call that sends no audio and reads everything, until ``stop``."""
    async with session.ws_connect(ws_url + "/twilio") as ws:
        await ws.send_str(twilio.connected_message())
        await ws.send_str(twilio.start_message(twilio.new_stream_sid(), twilio.new_call_sid()))
        reader = asyncio.create_task(_read_all(ws))
        await stop.wait()
        reader.cancel()


async def _read_all(ws: aiohttp.ClientWebSocketResponse) -> None:
    async for _ in ws:
        pass
