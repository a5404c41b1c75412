"""``WS /control``: the supervisor's view of this bridge (events out, commands in).

See docs/CONTROL.md for the messages. Authentication is a bearer token compared in constant
time; without ``XSWARM_SUPERVISOR_TOKEN`` only loopback peers are let in, for development, and
a request forwarded by a proxy is never loopback (protocol.auth holds the rule the supervisor
applies too). Commands are decoded by protocol.control.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from aiohttp import WSMsgType, web

from xswarm import __version__
from xswarm.bridge.events import EventHub, Subscriber
from xswarm.bridge.host import CONTROL_HOST
from xswarm.protocol import control
from xswarm.protocol.auth import TOKEN_ENV, Decision, bearer_token, decide, trusted_peer
from xswarm.protocol.values import BadMessage

log = logging.getLogger("xswarm.control")

_warned_open = False

_REFUSALS = {
    Decision.NOT_LOOPBACK: f"{TOKEN_ENV} is not set on the bridge; only loopback peers may connect",
    Decision.MISSING: f"missing bearer token: send Authorization: Bearer <{TOKEN_ENV}>",
    Decision.WRONG: "wrong bearer token",
}


def authorize(request: web.Request) -> str | None:
    """None when the request may subscribe, else the reason to answer 401 with."""
    global _warned_open
    header = request.headers.get("Authorization")
    decision = decide(
        os.environ.get(TOKEN_ENV, ""),
        bearer_token(header) if header is not None else None,
        trusted_peer(request.remote, request.headers),
    )
    if decision is Decision.LOOPBACK_OPEN and not _warned_open:
        _warned_open = True
        log.warning("%s is not set: /control is open to loopback peers only", TOKEN_ENV)
    return None if decision.ok else _REFUSALS[decision]


async def handle(request: web.Request) -> web.StreamResponse:
    bridge = request.app[CONTROL_HOST]
    problem = authorize(request)
    if problem is not None:
        return web.json_response(
            {"error": problem}, status=401, headers={"WWW-Authenticate": 'Bearer realm="xswarm"'}
        )
    ws = web.WebSocketResponse(
        max_msg_size=bridge.config.bridge.max_message_bytes, heartbeat=20, compress=False
    )
    await ws.prepare(request)
    subscriber = Subscriber(f"{request.remote}")
    hub = bridge.hub
    hub.add(subscriber)
    log.info("supervisor subscribed from %s", request.remote)
    sender = asyncio.create_task(_send_events(ws, subscriber))
    try:
        hello = control.Hello(__version__, os.getpid(), bridge.engine.name, bridge.max_calls)
        await ws.send_str(_message(hub, hello.encode()))
        await ws.send_str(hub.message("snapshot", bridge.snapshot()))
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                reply = await _command(bridge, message.data)
                if reply is not None:
                    await ws.send_str(_message(hub, reply))
            elif message.type == WSMsgType.BINARY:
                refusal = control.Error("binary message: commands are JSON text")
                await ws.send_str(_message(hub, refusal.encode()))
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


def _message(hub: EventHub, encoded: dict[str, Any]) -> str:
    """An encoded message stamped with the hub's ``ts`` and ``instance``, as text."""
    body = dict(encoded)
    return hub.message(body.pop("type"), body)


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
        command = control.decode_command(data, bridge.config.bridge.max_message_bytes)
    except BadMessage as exc:
        return control.Error(str(exc)).encode()
    if isinstance(command, control.Ping):
        reply = control.Pong().encode()
        if command.id is not None:
            reply["id"] = command.id
        return reply
    if isinstance(command, control.RequestSnapshot):
        return {"type": "snapshot", **bridge.snapshot()}
    if isinstance(command, control.InjectSuggestion):
        bridge.queue_suggestion(command.call_id, command.text, command.priority, command.request_id)
        return None
    problem = await bridge.hangup(command.call_id)
    return None if problem is None else control.Error(problem).encode()
