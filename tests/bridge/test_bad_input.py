"""Hostile and broken peers: each gets a precise close code and reason, nobody else notices."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from tests.support.bridge import BridgeProcess
from tests.support.calls import ControlClient, TwilioCaller, tone
from tests.support.waiting import eventually
from xswarm.protocol import twilio


async def _close_of(http, bridge: BridgeProcess, *messages: str | bytes) -> tuple[int | None, str]:
    async with http.ws_connect(bridge.ws_url + "/twilio") as ws:
        for message in messages:
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(message)
        reply = await ws.receive(timeout=10)
        while reply.type == aiohttp.WSMsgType.TEXT:
            reply = await ws.receive(timeout=10)
        return ws.close_code, (reply.extra or "")


START = twilio.start_message("MZbad", "CAbad")


@pytest.mark.parametrize(
    ("messages", "code", "words"),
    [
        (["not json at all"], 1007, "JSON"),
        (["[1, 2, 3]"], 1007, "object"),
        (
            [twilio.inbound_media_message("MZbad", 1, 1, 0, b"\xff" * 160)],
            1008,
            "media before start",
        ),
        (
            [
                START,
                '{"event":"media","sequenceNumber":"2","streamSid":"MZbad","media":{"track":"inbound","chunk":"1","timestamp":"0","payload":"@@not base64@@"}}',
            ],
            1007,
            "base64",
        ),
        ([START, twilio.inbound_media_message("MZbad", 2, 1, 0, b"\xff" * 4000)], 1007, "payload"),
        (
            [
                START,
                '{"event":"media","sequenceNumber":"2","streamSid":"MZbad","media":{"track":"inbound","chunk":"1","timestamp":"0","payload":""}}',
            ],
            1007,
            "payload",
        ),
        ([b"\x00\x01binary"], 1003, "binary"),
        ([START, START], 1008, "second start"),
        (['{"event": 5}'], 1007, "event"),
    ],
)
async def test_malformed_twilio_input_is_closed_with_a_precise_code(
    bridge, http, messages, code, words
) -> None:
    close_code, reason = await _close_of(http, bridge, *messages)
    assert close_code == code
    assert words.lower() in reason.lower()


async def test_oversized_message_is_closed_with_1009(bridge, http) -> None:
    async with http.ws_connect(bridge.ws_url + "/twilio") as ws:
        await ws.send_str('{"event":"connected","junk":"' + "x" * 100_000 + '"}')
        reply = await ws.receive(timeout=10)
        assert reply.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1009


async def test_a_start_that_never_comes_is_closed_after_the_start_timeout(bridge, http) -> None:
    # The timeout is 10 s in the bridge; a caller that connects and waits is closed with 1008.
    async with http.ws_connect(bridge.ws_url + "/twilio") as ws:
        await ws.send_str(twilio.connected_message())
        reply = await ws.receive(timeout=15)
        assert reply.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1008 and "no start event" in reply.extra


async def test_bad_callers_never_disturb_a_good_call_and_every_started_call_ends(
    bridge, http
) -> None:
    async with ControlClient(http, bridge.ws_url) as control:
        good = TwilioCaller(http, bridge.ws_url)
        await good.connect()
        good_id = (await control.wait_for("call_started"))["call_id"]
        talking = asyncio.create_task(good.send_audio(tone(2.0)))
        # A started call that then sends garbage, and one that vanishes mid-call.
        bad = TwilioCaller(http, bridge.ws_url)
        await bad.connect()
        await control.wait_for("call_started", stream_sid=bad.stream_sid)
        await bad.send("]]]")
        vanishing = TwilioCaller(http, bridge.ws_url)
        await vanishing.connect()
        await vanishing.send_audio(tone(0.2))
        assert vanishing.ws is not None
        transport = vanishing.ws._response.connection.transport  # type: ignore[union-attr]
        transport.abort()
        sent = await talking
        ended = await eventually(lambda: control.of_type("call_ended"), lambda e: len(e) >= 2)
        reasons = sorted(e["reason"] for e in ended)
        assert reasons == ["disconnected", "protocol_error"]
        await good.hears_back(sent)
        await good.stop()
        ended = await control.wait_for("call_ended", call_id=good_id)
        assert ended["reason"] == "caller_hangup"


async def test_a_client_that_stops_reading_is_bounded_and_then_closed(bridge, http) -> None:
    """Backpressure: a reader that never reads loses frames (counted), memory stays bounded."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: caps the window
    sock.connect(("127.0.0.1", bridge.port))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    sock.sendall(
        f"GET /twilio HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert b"101" in sock.recv(1024).split(b"\r\n")[0]

    def frame(text: str) -> bytes:
        data = text.encode()
        mask = b"\x01\x02\x03\x04"
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        length = len(data)
        header = (
            bytes([0x81, 0x80 | 126]) + length.to_bytes(2, "big")
            if length >= 126
            else bytes([0x81, 0x80 | length])
        )
        return header + mask + masked

    sock.sendall(
        frame(twilio.connected_message()) + frame(twilio.start_message("MZslow", "CAslow"))
    )
    async with ControlClient(http, bridge.ws_url) as control:
        good = TwilioCaller(http, bridge.ws_url)
        await good.connect()
        media = twilio.InboundMedia("MZslow")
        payload = b"\x10" * 160
        for n in range(1500):  # up to 30 s of audio at real-time pace, never reading a byte back
            sock.sendall(frame(media.message(n + 2, n + 1, n * 20, payload)))
            await asyncio.sleep(0.02)  # a frame every 20 ms: real time, as Twilio sends
            if control.of_type("call_ended"):
                break
        ended = await control.wait_for("call_ended", timeout=5)
        assert ended["reason"] == "slow_client"
        assert good.ws is not None and not good.ws.closed
        metrics = bridge.get("/metrics")[1]
        dropped = {
            m.split()[0]: float(m.split()[1])
            for m in metrics.splitlines()
            if m.startswith("xswarm_dropped_frames_total")
        }
        assert sum(dropped.values()) > 0
        assert dropped['xswarm_dropped_frames_total{reason="slow_client"}'] > 0
        await good.close()
    sock.close()


async def test_a_flood_of_connections_is_refused_cleanly_and_the_bridge_stays_healthy(
    bridge, http
) -> None:
    async def attempt() -> int:
        try:
            ws = await http.ws_connect(bridge.ws_url + "/twilio")
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await ws.send_str(twilio.connected_message())
        await ws.send_str(twilio.start_message(twilio.new_stream_sid(), "CA"))
        await asyncio.sleep(0.5)  # hold the call while the rest of the flood arrives
        await ws.close()
        return 101

    results = await asyncio.gather(*(attempt() for _ in range(60)))
    assert results.count(101) <= 20 and results.count(101) >= 1
    assert set(results) <= {101, 503}
    _, ready = await eventually(
        lambda: asyncio.to_thread(bridge.get, "/readyz"), lambda got: got[1]["active_calls"] == 0
    )
    assert bridge.get("/healthz")[0] == 200
    assert ready["active_calls"] == 0
