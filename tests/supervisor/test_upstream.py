"""The upstream subscription drops a bridge that says nothing for the silence limit."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from xswarm.supervisor.upstream import Upstream


async def test_a_silent_bridge_is_disconnected_after_the_silence_limit() -> None:
    async def control(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"type": "hello"}')
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/control", control)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    heard: list[str] = []
    lost: asyncio.Queue[str] = asyncio.Queue()
    async with aiohttp.ClientSession() as session:
        upstream = Upstream(
            "a",
            f"ws://127.0.0.1:{port}/control",
            session,
            lambda: None,
            on_connected=lambda _: None,
            on_message=lambda _, message: heard.append(message["type"]),
            on_disconnected=lambda _, why: lost.put_nowait(why),
            silence_limit=lambda: 0.3,
        )
        upstream.start()
        try:
            why = await asyncio.wait_for(lost.get(), 5)
        finally:
            await upstream.stop()
            await runner.cleanup()
    assert heard[:1] == ["hello"]
    assert why.startswith(f"no message from ws://127.0.0.1:{port}/control for 0.3 s")
