"""Issue 9, item 1: per-call budgets. A stranger's call that sends what no real call sends is
closed as ``abuse`` (1008/1009), counted in /metrics, and the bridge's memory stays bounded
while a genuine call on the same bridge keeps getting its audio back."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
import numpy as np
import pytest
import sphn

from tests.security.support import LiveCall, rss_kib
from tests.support.bridge import BridgeProcess, metric, running_bridge
from tests.support.calls import TwilioCaller, tone
from tests.support.waiting import eventually
from xswarm.config import defaults
from xswarm.protocol import twilio

CAP = defaults().bridge.max_buffered_input_bytes
FLOOD_BYTES = 30 << 20


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    """An echo bridge with the shipped budgets (only the per-source limit raised: every
    attacker here connects from loopback too)."""
    config = '[voice.bridge]\nengine = "echo"\nmax_calls_per_source = 1000\n'
    with running_bridge(tmp_path_factory.mktemp("budgets"), config) as b:
        yield b


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        value = byte << 24
        for _ in range(8):
            value = ((value << 1) ^ 0x04C11DB7) if value & 0x80000000 else value << 1
        table.append(value & 0xFFFFFFFF)
    return table


CRC_TABLE = _crc_table()


def ogg_page(serial: int, sequence: int, continued: bool, segments: int = 255) -> bytes:
    """A valid Ogg page whose packet goes on into the next page: every lacing value 255,
    granule -1 (no packet ends here)."""
    lacing = bytes([255] * segments)
    header = struct.pack(
        "<4sBBqII4sB", b"OggS", 0, 1 if continued else 0, -1, serial, sequence, b"\0" * 4, segments
    )
    page = header + lacing + b"\x55" * (255 * segments)
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ CRC_TABLE[((crc >> 24) & 0xFF) ^ byte]
    return page[:22] + struct.pack("<I", crc) + page[26:]


def opus_headers() -> tuple[bytes, int, int]:
    """A real stream's OpusHead and OpusTags pages, its serial and the next page number."""
    writer = sphn.OpusStreamWriter(24000)
    first = b""
    while not first:
        first = writer.append_pcm(np.zeros(1920, dtype=np.float32))
    pages, offset = [], 0
    while offset < len(first):
        count = first[offset + 26]
        size = 27 + count + sum(first[offset + 27 : offset + 27 + count])
        pages.append(first[offset : offset + size])
        offset += size
    serial, sequence = struct.unpack("<II", pages[1][14:22])
    return pages[0] + pages[1], serial, sequence + 1


async def endless_packet(
    http: aiohttp.ClientSession, bridge: BridgeProcess
) -> tuple[int, int, str]:
    """One /api/chat call sending a packet that never ends; (bytes sent, close code, reason)."""
    headers, serial, sequence = opus_headers()
    async with http.ws_connect(bridge.ws_url + "/api/chat") as ws:
        assert (await ws.receive(timeout=10)).data == b"\x00"
        await ws.send_bytes(b"\x01" + headers)
        closing = asyncio.create_task(ws.receive(timeout=20))
        sent = 0
        for number in range(4 * CAP // (255 * 255) + 2):
            if closing.done():
                break
            page = ogg_page(serial, sequence + number, continued=number > 0)
            try:
                await ws.send_bytes(b"\x01" + page)
            except (ConnectionError, RuntimeError):
                break
            sent += len(page)
            await asyncio.sleep(0)
        reply = await closing
        assert reply.type == aiohttp.WSMsgType.CLOSE, reply
        return sent, int(ws.close_code or 0), str(reply.extra)


async def test_an_opus_packet_that_never_ends_is_cut_off_and_memory_stays_bounded(
    bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    before_abuse = metric(bridge, "xswarm_call_budget_exceeded_total", budget="buffered_bytes")
    before_calls = metric(bridge, "xswarm_calls_total", outcome="abuse")
    async with LiveCall(http, bridge) as genuine:
        await endless_packet(http, bridge)  # warm up: the first call's allocations are not growth
        rss_before = rss_kib(bridge.proc.pid)
        total, calls = 0, 0
        while total < FLOOD_BYTES:
            sent, code, reason = await endless_packet(http, bridge)
            assert code == 1009 and reason.startswith("abuse"), (code, reason)
            total, calls = total + sent, calls + 1
        rss_after = rss_kib(bridge.proc.pid)
        assert genuine.longest_silence() < 1.5
    growth_mib = (rss_after - rss_before) / 1024
    print(f"sent {total / 2**20:.1f} MiB in {calls} calls; RSS {rss_before} -> {rss_after} KiB")
    assert growth_mib < CAP / 2**20 + 4, f"RSS grew {growth_mib:.1f} MiB"
    await eventually(
        lambda: asyncio.to_thread(
            metric, bridge, "xswarm_call_budget_exceeded_total", budget="buffered_bytes"
        ),
        lambda value: value == before_abuse + calls + 1,
    )
    assert metric(bridge, "xswarm_calls_total", outcome="abuse") == before_calls + calls + 1


async def test_a_small_message_that_decodes_to_seconds_of_audio_is_refused(
    bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    writer = sphn.OpusStreamWriter(24000)
    pages = b"".join(writer.append_pcm(np.zeros(1920, dtype=np.float32)) for _ in range(50))
    assert len(pages) < 10_000  # 4 s of audio in about 8 KB
    before = metric(bridge, "xswarm_call_budget_exceeded_total", budget="audio_rate")
    async with LiveCall(http, bridge) as genuine:
        async with http.ws_connect(bridge.ws_url + "/api/chat") as ws:
            assert (await ws.receive(timeout=10)).data == b"\x00"
            await ws.send_bytes(b"\x01" + pages)
            while (reply := await ws.receive(timeout=10)).type == aiohttp.WSMsgType.BINARY:
                pass
            assert reply.type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1008 and "faster than 1.5x real time" in reply.extra
        assert genuine.longest_silence() < 1.5
    assert metric(bridge, "xswarm_call_budget_exceeded_total", budget="audio_rate") == before + 1


async def test_twilio_audio_sent_faster_than_real_time_is_refused(
    bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    before = metric(bridge, "xswarm_call_budget_exceeded_total", budget="audio_rate")
    async with LiveCall(http, bridge) as genuine:
        attacker = TwilioCaller(http, bridge.ws_url)
        await attacker.connect()
        sent = 0.0
        try:
            while not attacker.closed.is_set() and sent < 60:
                await attacker.send_audio(tone(1.0), pace=False)
                sent += 1.0
                await asyncio.sleep(0)
        except (ConnectionError, RuntimeError):
            pass
        assert await attacker.wait_closed() == 1008
        assert sent < 60
        await attacker.close()
        assert genuine.longest_silence() < 1.5
    assert metric(bridge, "xswarm_call_budget_exceeded_total", budget="audio_rate") == before + 1


async def flood(attacker: TwilioCaller, send: Callable[[], Awaitable[None]]) -> int:
    """Send as fast as the socket takes it until the bridge closes the call (or 100,000
    messages); returns how many were sent."""
    sent = 0
    try:
        while not attacker.closed.is_set() and sent < 100_000:
            await send()
            sent += 1
            if sent % 50 == 0:
                await asyncio.sleep(0)
    except (ConnectionError, RuntimeError):
        pass
    return sent


async def test_a_flood_of_small_messages_is_closed_at_the_message_rate(
    bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    before = metric(bridge, "xswarm_call_budget_exceeded_total", budget="message_rate")
    async with LiveCall(http, bridge) as genuine:
        attacker = TwilioCaller(http, bridge.ws_url)
        await attacker.connect()
        mark = json.dumps(
            {"event": "mark", "streamSid": attacker.stream_sid, "mark": {"name": "m"}}
        )
        sent = await flood(attacker, lambda: attacker.send(mark))
        assert await attacker.wait_closed() == 1008
        await attacker.close()
        assert genuine.longest_silence() < 1.5
    assert sent < 100_000
    assert metric(bridge, "xswarm_call_budget_exceeded_total", budget="message_rate") == before + 1
    assert twilio.FRAME_BYTES == 160  # the genuine call's 50 messages a second: far below 250


async def test_a_ping_flood_is_charged_to_the_message_budget(
    bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    """WebSocket pings are messages too: a flood of them closes the call at the message rate
    (aiohttp answered them itself before, uncounted), while a caller's occasional ping is
    still answered with a pong."""
    before = metric(bridge, "xswarm_call_budget_exceeded_total", budget="message_rate")
    async with LiveCall(http, bridge) as genuine:
        async with http.ws_connect(bridge.ws_url + "/twilio", autoping=False) as polite:
            await polite.ping(b"are you there")
            reply = await polite.receive(timeout=10)
            assert (reply.type, reply.data) == (aiohttp.WSMsgType.PONG, b"are you there")

        attacker = TwilioCaller(http, bridge.ws_url)
        await attacker.connect()
        sent = await flood(attacker, lambda: attacker.ping(b"x" * 100))
        assert await attacker.wait_closed() == 1008
        await attacker.close()
        assert genuine.longest_silence() < 1.5
    assert sent < 100_000
    assert metric(bridge, "xswarm_call_budget_exceeded_total", budget="message_rate") == before + 1
