"""The TUI's one network surface is the supervisor's stream; here a hostile peer feeds it junk.

The real supervisor never sends these, so a small aiohttp server in the test plays a broken or
malicious one: invalid JSON, binary frames, objects without a type, wrong field types, markup
in every string, and a frame over the size limit. The TUI must log each, stay up, and
reconnect after the oversized frame (it subscribes a second time).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from tests.tui.helpers import until
from xswarm.tui.app import XswarmDashboard
from xswarm.tui.client import Backoff, SupervisorLink
from xswarm.tui.widgets.calls import CallsTable

Script = Callable[[web.WebSocketResponse], Awaitable[None]]


@asynccontextmanager
async def hostile_peer(
    script: Script,
) -> AsyncIterator[tuple[str, list[dict[str, Any]], asyncio.Queue[None]]]:
    """Serve /ws on a free loopback port; answers auth, then runs ``script`` per subscribe."""
    received: list[dict[str, Any]] = []
    subscribed: asyncio.Queue[None] = asyncio.Queue()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            data = json.loads(msg.data)
            received.append(data)
            if data["type"] == "auth":
                await ws.send_json({"type": "auth_result", "success": True, "message": "ok"})
            elif data["type"] == "subscribe":
                subscribed.put_nowait(None)
                await script(ws)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"ws://127.0.0.1:{port}/ws", received, subscribed
    finally:
        await runner.cleanup()


async def junk(ws: web.WebSocketResponse) -> None:
    await ws.send_str(
        json.dumps(
            {
                "type": "snapshot",
                "instances": [{"name": "[/]"}],
                "calls": [{"call_id": "c-1", "caller": "[bold red]x[/]", "instance": "[/]"}],
            }
        )
    )
    await ws.send_str("{not json")
    await ws.send_bytes(b"\x00\xff binary")
    await ws.send_str("[1,2,3]")
    await ws.send_str('{"no_type": true}')
    await ws.send_str(
        json.dumps(
            {
                "type": "call_stats",
                "call_id": "c-1",
                "latency_p50_ms": "x",
                "duration_s": [1],
                "late_frames": {"a": 1},
            }
        )
    )
    await ws.send_str(json.dumps({"type": "error", "message": "[/]" * 200}))
    await ws.send_str(
        json.dumps(
            {
                "type": "suggestion_rejected",
                "call_id": "c-1",
                "reason": "[bold]no[/]",
                "request_id": {"x": 1},
            }
        )
    )
    await ws.send_str(json.dumps({"type": "text", "call_id": "c-1", "text": "[/]" * 5000}))


async def test_junk_from_the_supervisor_is_logged_and_the_tui_stays_up() -> None:
    async with hostile_peer(junk) as (url, received, _):
        app = XswarmDashboard(url=url, token="t")
        async with app.run_test(size=(80, 24)) as pilot:
            await until(
                pilot,
                lambda: len(app.model.calls["c-1"].transcript) if "c-1" in app.model.calls else 0,
            )
            await pilot.pause(0.5)
            assert app.is_running and app.model.connected
            texts = [e.text for e in app.model.events if e.kind == "error"]
            assert any("invalid JSON" in t for t in texts)
            assert any("binary message" in t for t in texts)
            assert any("a JSON list" in t for t in texts)
            assert any("without a string 'type'" in t for t in texts)
            table = app.screen.query_one("#calls", CallsTable)
            assert table.get_cell("c-1", "caller").plain == "[bold red]x[/]"
            assert app.model.calls["c-1"].latency_p50_ms is None
            assert [m["type"] for m in received] == ["auth", "subscribe"]


async def oversized(ws: web.WebSocketResponse) -> None:
    await ws.send_str(
        json.dumps({"type": "snapshot", "instances": [], "calls": [], "padding": "x" * 4096})
    )


async def test_an_oversized_frame_drops_the_link_which_comes_back() -> None:
    async with hostile_peer(oversized) as (url, _, subscribed):
        posted: list[Any] = []

        def post(message: Any) -> bool:
            posted.append(message)
            return True

        link = SupervisorLink(
            url, "t", post, Backoff(initial=0.05, cap=0.05), max_message_bytes=1024
        )
        task = asyncio.create_task(link.run())
        try:
            async with asyncio.timeout(20):
                await subscribed.get()
                await subscribed.get()
        finally:
            task.cancel()
        downs = [m.detail for m in posted if getattr(m, "state", None) == "down"]
        assert downs and "retrying in" in downs[0], downs
        assert "exceeds limit 1024" in downs[0]
        assert not any(type(m).__name__ == "SupervisorMessage" for m in posted)
