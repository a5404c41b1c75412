"""Hostile and broken peers on /telnyx, /plivo and /exotel, against a real ``xswarm-voice``:
each gets its precise refusal (HTTP status or close code and reason), and a good Telnyx call
running alongside all of them keeps getting its audio back."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.bridge import BridgeProcess, running_bridge
from tests.support.waiting import eventually
from xswarm.client.carriers import CARRIERS
from xswarm.protocol import media_stream as ms

TOKEN = "carrier-s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    config = '[voice.bridge]\nengine = "echo"\nmax_concurrent_calls = 20\n'
    env = {ms.CARRIER_TOKEN_ENV: TOKEN}
    with running_bridge(tmp_path_factory.mktemp("carrier-bad"), config, env=env) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _close_of(
    http: aiohttp.ClientSession, bridge: BridgeProcess, path: str, *messages: str | bytes
) -> tuple[int | None, str]:
    async with http.ws_connect(bridge.ws_url + path, headers=AUTH) as ws:
        for message in messages:
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(message)
        reply = await ws.receive(timeout=10)
        while reply.type == aiohttp.WSMsgType.TEXT:
            reply = await ws.receive(timeout=10)
        return ws.close_code, (reply.extra or "")


def _start(carrier: str) -> str:
    return CARRIERS[carrier].caller(CARRIERS[carrier].encodings[0]).opening()[-1]


def _media(carrier: str, payload: bytes) -> str:
    return CARRIERS[carrier].caller(CARRIERS[carrier].encodings[0]).media(2, 1, 0, payload)


def _raw_media(carrier: str, encoded: object) -> str:
    message = json.loads(_media(carrier, b"\x00\x00"))
    message["media"]["payload"] = encoded
    return json.dumps(message)


BAD_FORMAT = {
    "telnyx": '{"event":"start","stream_id":"s1","start":{"call_control_id":"v3:x",'
    '"media_format":{"encoding":"OPUS","sample_rate":16000,"channels":1}}}',
    "plivo": '{"event":"start","start":{"streamId":"s1","callId":"c1",'
    '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":16000}}}',
    "exotel": '{"event":"start","stream_sid":"s1","start":{"call_sid":"c1",'
    '"media_format":{"encoding":"base64","sample_rate":"44100"}}}',
}


def _cases(carrier: str) -> list[tuple[list[str | bytes], tuple[int, ...], str]]:
    start = _start(carrier)
    return [
        (["not json at all"], (1007,), "JSON"),
        (["[1, 2, 3]"], (1007,), "object"),
        (['{"event": 12}'], (1007,), '"event" must be a string'),
        ([_media(carrier, b"\x00" * 320)], (1008,), "media before start"),
        ([start, _raw_media(carrier, "@@not base64@@")], (1007,), "base64"),
        ([start, _raw_media(carrier, 12345)], (1007,), "media.payload"),
        ([start, _raw_media(carrier, base64.b64encode(b"\0" * 48600).decode())], (1007,), "more than"),
        ([start, start], (1008,), "second start"),
        ([b"\x00\x01binary"], (1003,), "binary"),
        ([BAD_FORMAT[carrier]], (1003,), "8000 Hz"),
        (['{"event":"media","media":' + '{"a":' * 5000 + "1" + "}" * 5001 + "}"], (1007, 1009), ""),
    ]  # fmt: skip


async def _good_call(bridge: BridgeProcess, stop: asyncio.Event, state: dict[str, int]) -> None:
    """A good Telnyx call, sending and echoing until ``stop``."""
    caller = CARRIERS["telnyx"].caller("PCMU")
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(bridge.ws_url + "/telnyx", headers=AUTH) as ws:
            for message in caller.opening():
                await ws.send_str(message)

            async def read() -> None:
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT and '"media"' in message.data:
                        state["received"] += 1

            reader = asyncio.create_task(read())
            k = 0
            while not stop.is_set():
                k += 1
                await ws.send_str(caller.media(k + 1, k, k * 20, b"\x10" * 160))
                await asyncio.sleep(0.02)
            await ws.send_str(caller.stop(k + 2))
            await reader
            state["close_code"] = ws.close_code or 0


@pytest.mark.parametrize("carrier", ["telnyx", "plivo", "exotel"])
async def test_bad_messages_get_their_close_code_and_reason(
    http: aiohttp.ClientSession, bridge: BridgeProcess, carrier: str
) -> None:
    stop, bystander = asyncio.Event(), {"received": 0}
    good = asyncio.create_task(_good_call(bridge, stop, bystander))
    await asyncio.sleep(0.5)
    for messages, codes, words in _cases(carrier):
        code, reason = await _close_of(http, bridge, f"/{carrier}", *messages)
        assert code in codes, (carrier, messages[-1][:80], code, reason)
        assert words in reason, (carrier, messages[-1][:80], reason)
    # The good call still gets audio back after the flood.
    before = bystander["received"]
    await eventually(lambda: bystander["received"], lambda received: received > before)
    stop.set()
    await asyncio.wait_for(good, 10)
    assert bystander["close_code"] == 1000
    status, health = bridge.get("/healthz")
    assert status == 200 and health["status"] == "ok"


@pytest.mark.parametrize("carrier", ["telnyx", "plivo", "exotel"])
async def test_unknown_events_are_ignored_and_stop_ends_the_call_cleanly(
    http: aiohttp.ClientSession, bridge: BridgeProcess, carrier: str
) -> None:
    caller = CARRIERS[carrier].caller(CARRIERS[carrier].encodings[0])
    async with http.ws_connect(bridge.ws_url + f"/{carrier}", headers=AUTH) as ws:
        for message in caller.opening():
            await ws.send_str(message)
        await ws.send_str('{"event": "brandNewEvent", "whatever": [1, 2]}')
        await ws.send_str(caller.media(2, 1, 0, b"\x00" * 320))
        await ws.send_str(caller.dtmf(3, "5"))
        await ws.send_str(caller.stop(4))
        reply = await ws.receive(timeout=10)
        while reply.type == aiohttp.WSMsgType.TEXT:
            reply = await ws.receive(timeout=10)
        assert ws.close_code == 1000
    expected = f"ignoring unknown {carrier.capitalize()} event 'brandNewEvent'"
    assert expected in bridge.log()


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/telnyx", {}, 403),
        ("/telnyx", {"Authorization": "Bearer wrong"}, 403),
        ("/plivo?token=wrong", {}, 403),
        ("/exotel", {"Authorization": "Basic " + base64.b64encode(b"user:wrong").decode()}, 403),
        ("/exotel", {"Authorization": "Basic !!!"}, 403),
        ("/telnyx", AUTH, 101),
        # How Telnyx itself presents stream_auth_token (its media-streaming WebSocket reference).
        ("/telnyx", {"x-telnyx-streaming-auth-token": TOKEN}, 101),
        ("/telnyx", {"x-telnyx-streaming-auth-token": "wrong"}, 403),
        ("/plivo?token=" + TOKEN, {}, 101),
        ("/exotel", {"Authorization": "Basic " + base64.b64encode(f"u:{TOKEN}".encode()).decode()}, 101),
    ],
)  # fmt: skip
async def test_the_carrier_token_is_required_on_the_upgrade(
    http: aiohttp.ClientSession,
    bridge: BridgeProcess,
    path: str,
    headers: dict[str, str],
    status: int,
) -> None:
    before = _auth_rejections(bridge)
    if status == 101:
        async with http.ws_connect(bridge.ws_url + path, headers=headers) as ws:
            await ws.close()
        assert _auth_rejections(bridge) == before
        return
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(bridge.ws_url + path, headers=headers)
    assert refused.value.status == status
    assert _auth_rejections(bridge) == before + 1


def _auth_rejections(bridge: BridgeProcess) -> float:
    _, text = bridge.get("/metrics")
    for line in str(text).splitlines():
        if line.startswith('xswarm_calls_rejected_total{reason="auth"}'):
            return float(line.split()[-1])
    raise AssertionError("no auth rejection counter in /metrics")


def test_a_refusal_says_how_to_send_the_token(tmp_path: Path, bridge: BridgeProcess) -> None:
    status, body = bridge.get("/plivo")
    assert status == 403
    assert ms.CARRIER_TOKEN_ENV in body["error"] and "?token=" in body["error"]


@pytest.mark.parametrize(("rate", "least"), [(8000, 3200), (16000, 3200), (24000, 4800)])
async def test_exotel_receives_media_in_chunks_it_plays_cleanly(
    http: aiohttp.ClientSession, bridge: BridgeProcess, rate: int, least: int
) -> None:
    """Exotel plays a chunk cleanly from 3.2 KB ("100 ms") in multiples of 320 bytes: the
    bridge gathers its 20 ms frames into chunks of at least 3.2 KB and 100 ms on /exotel, at
    the stream's own rate."""
    caller = CARRIERS["exotel"].caller(CARRIERS["exotel"].encodings[0], rate)
    frame = b"\x10\x00" * (rate // 50)  # 20 ms of quiet 16-bit audio
    sizes: list[int] = []
    async with http.ws_connect(bridge.ws_url + "/exotel", headers=AUTH) as ws:
        for message in caller.opening():
            await ws.send_str(message)
        for n in range(50):  # 1 s of audio
            await ws.send_str(caller.media(n + 2, n + 1, n * 20, frame))
            await asyncio.sleep(0.02)  # paced as a caller speaks
        async with asyncio.timeout(10):
            while sum(sizes) < 4 * least:
                reply = await ws.receive()
                assert reply.type == aiohttp.WSMsgType.TEXT, reply
                event = CARRIERS["exotel"].parse_outbound(reply.data)
                if isinstance(event, ms.OutMedia):
                    sizes.append(len(event.payload))
    assert sizes and all(size >= least and size % 320 == 0 for size in sizes), sizes
