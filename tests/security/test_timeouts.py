"""Issue 9, item 2: timeouts everywhere and a per-source limit. A socket that never finishes
its headers, never starts, goes silent or stops answering pings is closed within its
configured timeout, so idle sockets cannot hold every slot; one address cannot hold more
than ``max_calls_per_source`` calls. A genuine call on the same bridge is never disturbed."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.security.support import LiveCall, genuine_call, rss_kib
from tests.support.bridge import metric, running_bridge
from tests.support.waiting import eventually
from xswarm.protocol import twilio

SHORT = (
    '[voice.bridge]\nengine = "echo"\nmax_concurrent_calls = 4\nheader_timeout = 1.0\n'
    "first_media_timeout = 1.0\ninactivity_timeout = 2.0\nheartbeat = 20.0\n"
)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def closed_after(port: int, trickle: bytes, limit: float) -> float:
    """Open a raw connection, send ``trickle`` a byte at a time every 0.2 s (never a whole
    request), and return how long the bridge took to close it."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        for byte in trickle:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return time.monotonic() - started
            sock.settimeout(0.2)
            try:
                if sock.recv(1024) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                pass
            except OSError:
                return time.monotonic() - started
            if time.monotonic() - started > limit:
                break
    raise AssertionError(f"the bridge kept a connection with unfinished headers for {limit} s")


async def test_a_connection_that_never_finishes_its_headers_is_closed(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    slow = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 200
    upgrade = b"GET /twilio HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n" + b"X" * 200
    with running_bridge(tmp_path, SHORT) as bridge:
        async with LiveCall(http, bridge) as genuine:
            for trickle in (slow, upgrade):
                took = await asyncio.to_thread(closed_after, bridge.port, trickle, 10)
                assert took < 4, f"closed after {took:.1f} s; header_timeout is 1 s"
            silent = socket.create_connection(("127.0.0.1", bridge.port))
            silent.settimeout(10)
            assert await asyncio.to_thread(silent.recv, 1) == b""
            silent.close()
            assert genuine.longest_silence() < 1.5


async def test_silent_sockets_no_longer_hold_every_slot(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The issue's case: max_concurrent_calls = 3, three silent sockets held every slot for
    over 95 s, the fourth caller got 503 and /readyz said full. Now each silent kind is
    closed within its timeout and the slots come back."""
    # 2 s to first audio: the three sockets and /readyz must all be done before any closes.
    config = SHORT.replace("max_concurrent_calls = 4", "max_concurrent_calls = 3").replace(
        "first_media_timeout = 1.0", "first_media_timeout = 2.0"
    )
    with running_bridge(tmp_path, config) as bridge:
        moshi = await http.ws_connect(bridge.ws_url + "/api/chat")  # never sends audio
        started = await http.ws_connect(bridge.ws_url + "/twilio")  # starts, then silence
        await started.send_str(twilio.connected_message())
        await started.send_str(twilio.start_message(twilio.new_stream_sid(), "CA1"))
        unstarted = await http.ws_connect(bridge.ws_url + "/twilio")  # never starts
        status, body = await asyncio.to_thread(bridge.get, "/readyz")
        assert status == 503 and "full" in str(body)
        began = time.monotonic()
        replies = {}
        for name, ws in (("moshi", moshi), ("started", started), ("unstarted", unstarted)):
            while (reply := await ws.receive(timeout=10)).type == aiohttp.WSMsgType.BINARY:
                pass
            replies[name] = (ws.close_code, reply.extra)
            await ws.close()
        assert time.monotonic() - began < 5
        assert replies["moshi"] == (1008, "inactive: no audio within 2 s of connecting")
        assert replies["started"] == (1008, "inactive: no audio for 2 s")
        assert replies["unstarted"][0] == 1008 and "no start event" in replies["unstarted"][1]
        await eventually(lambda: asyncio.to_thread(bridge.get, "/readyz"), lambda r: r[0] == 200)
        await genuine_call(bridge)
        assert metric(bridge, "xswarm_calls_total", outcome="inactive") == 2


async def test_a_peer_that_stops_answering_pings_is_dropped(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    config = SHORT.replace("inactivity_timeout = 2.0", "inactivity_timeout = 60.0").replace(
        "heartbeat = 20.0", "heartbeat = 1.0"
    )
    with running_bridge(tmp_path, config) as bridge:
        async with LiveCall(http, bridge) as genuine:
            deaf = await http.ws_connect(bridge.ws_url + "/twilio", autoping=False)
            await deaf.send_str(twilio.connected_message())
            await deaf.send_str(twilio.start_message(twilio.new_stream_sid(), "CA2"))
            began = time.monotonic()
            while (await deaf.receive(timeout=10)).type == aiohttp.WSMsgType.PING:
                pass  # heard, never answered
            assert time.monotonic() - began < 5
            await deaf.close()
            await eventually(
                lambda: asyncio.to_thread(
                    metric, bridge, "xswarm_calls_total", outcome="disconnected"
                ),
                lambda value: value == 1,
            )
            await asyncio.sleep(1.5)  # two more heartbeats: the genuine call answers them
            assert genuine.longest_silence() < 1.5


async def test_one_address_holds_at_most_max_calls_per_source(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    config = (
        SHORT.replace("max_concurrent_calls = 4", "max_concurrent_calls = 10").replace(
            "inactivity_timeout = 2.0", "inactivity_timeout = 60.0"
        )
        + 'max_calls_per_source = 2\ntrusted_proxies = ["127.0.0.1"]\n'
    )
    stop = asyncio.Event()

    async def hold(headers: dict[str, str]) -> int:
        """Hold a started call until ``stop``; returns the upgrade's status."""
        try:
            async with http.ws_connect(bridge.ws_url + "/twilio", headers=headers) as ws:
                await ws.send_str(twilio.connected_message())
                await ws.send_str(twilio.start_message(twilio.new_stream_sid(), "CA3"))
                await stop.wait()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status

    with running_bridge(tmp_path, config) as bridge:
        rss_before = rss_kib(bridge.proc.pid)
        stranger = {"X-Forwarded-For": "198.51.100.7"}
        spoofed = {"X-Forwarded-For": "203.0.113.1, 198.51.100.7"}  # the client wrote the first
        holders = [asyncio.create_task(hold(stranger)) for _ in range(2)]
        await eventually(
            lambda: asyncio.to_thread(metric, bridge, "xswarm_active_calls"), (2.0).__eq__
        )
        assert await hold(stranger) == 429
        assert await hold(spoofed) == 429
        loopback = [asyncio.create_task(hold({})) for _ in range(2)]
        await eventually(
            lambda: asyncio.to_thread(metric, bridge, "xswarm_active_calls"), (4.0).__eq__
        )
        assert await hold({}) == 429
        assert metric(bridge, "xswarm_calls_rejected_total", reason="per_source") == 3
        stop.set()
        assert await asyncio.gather(*holders, *loopback) == [101] * 4
        stop.clear()
        await eventually(
            lambda: asyncio.to_thread(metric, bridge, "xswarm_active_calls"), (0.0).__eq__
        )
        await genuine_call(bridge, headers=stranger)
        # The caller behind the proxy is who the call shows, in its log line and its remote.
        assert "twilio from 198.51.100.7 via 127.0.0.1:" in bridge.log()
        assert (rss_kib(bridge.proc.pid) - rss_before) < 8 * 1024
