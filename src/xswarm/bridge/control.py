"""``WS /control``: the supervisor's view of this bridge (events out, commands in).

See docs/CONTROL.md for the messages. Authentication is a bearer token compared in constant
time; without ``XSWARM_SUPERVISOR_TOKEN`` only loopback peers are let in, for development.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
from typing import Any

from aiohttp import WSMsgType, web

from xswarm import __version__
from xswarm.bridge.events import Subscriber
from xswarm.bridge.host import CONTROL_HOST

log = logging.getLogger("xswarm.control")

_warned_open = False


def _is_loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


def authorize(request: web.Request) -> str | None:
    """None when the request may subscribe, else the reason to answer 401 with."""
    global _warned_open
    token = os.environ.get("XSWARM_SUPERVISOR_TOKEN", "")
    if not token:
        if _is_loopback(request):
            if not _warned_open:
                _warned_open = True
                log.warning(
                    "XSWARM_SUPERVISOR_TOKEN is not set: /control is open to loopback peers only"
                )
            return None
        return "XSWARM_SUPERVISOR_TOKEN is not set on the bridge; only loopback peers may connect"
    header = request.headers.get("Authorization", "")
    scheme, _, offered = header.partition(" ")
    if scheme.lower() != "bearer" or not offered:
        return "missing bearer token: send Authorization: Bearer <XSWARM_SUPERVISOR_TOKEN>"
    if not hmac.compare_digest(offered.strip().encode(), token.encode()):
        return "wrong bearer token"
    return None


async def handle(request: web.Request) -> web.StreamResponse:
    bridge = request.app[CONTROL_HOST]
    problem = authorize(request)
    if problem is not None:
        return web.json_response(
            {"error": problem}, status=401, headers={"WWW-Authenticate": 'Bearer realm="xswarm"'}
        )
    ws = web.WebSocketResponse(
        max_msg_size=bridge.bridge_settings["max_message_bytes"], heartbeat=20, compress=False
    )
    await ws.prepare(request)
    subscriber = Subscriber(f"{request.remote}")
    hub = bridge.hub
    hub.add(subscriber)
    log.info("supervisor subscribed from %s", request.remote)
    sender = asyncio.create_task(_send_events(ws, subscriber))
    try:
        await ws.send_str(
            hub.message(
                "hello",
                {
                    "version": __version__,
                    "pid": os.getpid(),
                    "engine": bridge.engine.name,
                    "max_concurrent_calls": bridge.max_calls,
                },
            )
        )
        await ws.send_str(hub.message("snapshot", bridge.snapshot()))
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                reply = await _command(bridge, message.data)
                if reply is not None:
                    await ws.send_str(hub.message(reply.pop("type"), reply))
            elif message.type == WSMsgType.BINARY:
                await ws.send_str(
                    hub.message("error", {"message": "binary message: commands are JSON text"})
                )
            if subscriber.closed:
                await ws.close(code=1008, message=b"subscriber too slow; reconnect for a snapshot")
                break
    except (ConnectionError, RuntimeError):
        pass
    finally:
        hub.remove(subscriber)
        sender.cancel()
        log.info("supervisor from %s unsubscribed", request.remote)
    return ws


async def _send_events(ws: web.WebSocketResponse, subscriber: Subscriber) -> None:
    try:
        while not ws.closed:
            text = await subscriber.queue.get()
            await ws.send_str(text)
            if subscriber.closed:
                await ws.close(code=1008, message=b"subscriber too slow; reconnect for a snapshot")
                return
    except (ConnectionError, RuntimeError):
        return


async def _command(bridge: Any, data: str) -> dict[str, Any] | None:
    """Run one command; returns a direct reply (pong, snapshot, error) or None."""
    try:
        message = json.loads(data)
    except ValueError as exc:
        return {"type": "error", "message": f"invalid JSON: {exc}"}
    if not isinstance(message, dict):
        return {"type": "error", "message": "a command must be a JSON object with a type"}
    kind = message.get("type")
    if kind == "ping":
        reply: dict[str, Any] = {"type": "pong"}
        if "id" in message:
            reply["id"] = message["id"]
        return reply
    if kind == "snapshot":
        return {"type": "snapshot", **bridge.snapshot()}
    if kind == "inject_suggestion":
        call_id = message.get("call_id")
        if call_id is not None and not isinstance(call_id, str):
            return {"type": "error", "message": "call_id must be a string"}
        bridge.queue_suggestion(
            call_id,
            message.get("text"),
            message.get("priority", "normal"),
            message.get("request_id"),
        )
        return None
    if kind == "hangup":
        problem = await bridge.hangup(message.get("call_id"))
        return {"type": "error", "message": problem} if problem else None
    shown = kind if isinstance(kind, str) else json.dumps(kind)
    return {
        "type": "error",
        "message": f"unknown command type {shown[:64]!s}; expected inject_suggestion, hangup, "
        "snapshot or ping",
    }
