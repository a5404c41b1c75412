"""WS /api/chat with Kyutai's Moshi client protocol: handshake, Ogg-Opus both ways, bad input."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest
import sphn

from tests.support.calls import ControlClient, tone


async def test_handshake_then_opus_audio_comes_back(bridge, http) -> None:
    writer = sphn.OpusStreamWriter(24000)
    reader = sphn.OpusStreamReader(24000)
    pcm = tone(1.0, rate=24000)
    back = []
    async with (
        ControlClient(http, bridge.ws_url) as control,
        http.ws_connect(bridge.ws_url + "/api/chat") as ws,
    ):
        first = await ws.receive(timeout=5)
        assert first.data == b"\x00"
        started = await control.wait_for("call_started")
        assert started["transport"] == "moshi"
        for start in range(0, len(pcm), 1920):
            pages = writer.append_pcm(pcm[start : start + 1920])
            if pages:
                await ws.send_bytes(b"\x01" + pages)
            await asyncio.sleep(0.08)  # 1920 samples at 24 kHz: spoken in real time
        deadline = asyncio.get_running_loop().time() + 2
        while asyncio.get_running_loop().time() < deadline:
            try:
                message = await ws.receive(timeout=0.5)
            except TimeoutError:
                break
            assert message.type == aiohttp.WSMsgType.BINARY and message.data[0] == 1
            back.append(reader.append_bytes(message.data[1:]))
        await ws.close()
        ended = await control.wait_for("call_ended")
    assert ended["reason"] == "caller_hangup"
    audio = np.concatenate(back)
    assert len(audio) > 24000 * 0.6
    segment = audio[6000:18000]
    peak = np.argmax(np.abs(np.fft.rfft(segment))) * 24000 / len(segment)
    assert abs(peak - 440) < 5


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        (b"\x01not-ogg-at-all", 1007, "not Ogg-Opus"),
        (b"\x01OggS" + b"\x00" * 100, 1007, "undecodable"),
        (b"", 1007, "kind byte"),
        (b"\x42hello", 1003, "unknown message kind 0x42"),
        ("text frame", 1003, "binary"),
    ],
)
async def test_garbage_where_opus_is_expected_is_closed_precisely(
    bridge, http, message, code, words
) -> None:
    async with (
        ControlClient(http, bridge.ws_url) as control,
        http.ws_connect(bridge.ws_url + "/api/chat") as ws,
    ):
        assert (await ws.receive(timeout=5)).data == b"\x00"
        if isinstance(message, str):
            await ws.send_str(message)
        else:
            await ws.send_bytes(message)
        reply = await ws.receive(timeout=5)
        while reply.type == aiohttp.WSMsgType.BINARY:
            reply = await ws.receive(timeout=5)
        assert ws.close_code == code
        assert words in reply.extra
        ended = await control.wait_for("call_ended")
        assert ended["reason"] == "protocol_error"


async def test_ignored_kinds_and_client_text_do_not_end_the_call(bridge, http) -> None:
    async with http.ws_connect(bridge.ws_url + "/api/chat") as ws:
        assert (await ws.receive(timeout=5)).data == b"\x00"
        for kind in (0x02, 0x03, 0x06):
            await ws.send_bytes(bytes([kind]) + b"x")
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.5)
        assert not ws.closed
