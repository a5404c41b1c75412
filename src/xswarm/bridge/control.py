"""``WS /control``: the supervisor's view of this bridge (events out, commands in).

See docs/CONTROL.md for the messages. Authentication is ``XSWARM_CONTROL_TOKEN`` (the bridges'
token, never the operators'), compared in constant time and read at start and on reload by
:func:`load_access`; without it only loopback peers are let in, for development, and a request
forwarded by a proxy is never loopback (protocol.auth holds the rule the supervisor applies
too). A source outside ``[voice.bridge] control_allow`` is refused with 403 before the token
is looked at, and a foreign Host or a browser Origin with 403 too (DNS rebinding). Commands are
decoded by protocol.control.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from xswarm import __version__
from xswarm.bridge.events import GOODBYE, Subscriber
from xswarm.bridge.host import CONTROL_HOST, ControlHost
from xswarm.config import Config
from xswarm.protocol import control
from xswarm.protocol.auth import (
    CONTROL_TOKEN_ENV,
    REFUSAL_HEADER,
    SUPERVISOR_TOKEN_ENV,
    AuthThrottle,
    Decision,
    bearer_token,
    browser_refusal,
    decide,
    source_refusal,
    trusted_peer,
)
from xswarm.protocol.budgets import Network, trusted_networks
from xswarm.protocol.values import BadMessage
from xswarm.tokens import read_token

log = logging.getLogger("xswarm.control")

_warned_open = False

_REFUSALS = {
    Decision.NOT_LOOPBACK: (
        f"{CONTROL_TOKEN_ENV} is not set on the bridge; only loopback peers may connect"
    ),
    Decision.MISSING: f"missing bearer token: send Authorization: Bearer <{CONTROL_TOKEN_ENV}>",
    Decision.WRONG: "wrong bearer token",
}


@dataclass(frozen=True)
class ControlAccess:
    """Who may subscribe: the control token, the host names /control answers to, and the
    networks it may be reached from (``control_allow``; empty: any)."""

    token: str | None
    server_names: frozenset[str]
    allow: tuple[Network, ...] = ()


_access: ControlAccess | None = None

# Wrong tokens are slowed per source and across all sources; a right one never waits.
_throttle = AuthThrottle()


def load_access(config: Config) -> ControlAccess:
    """Read the control token (TokenError, exit 78, when its file is unsafe) and the names."""
    if os.environ.get(SUPERVISOR_TOKEN_ENV):
        log.warning(
            "%s is in the bridge's environment but the bridge does not use it; give the bridge "
            "only %s so it never holds the operators' token",
            SUPERVISOR_TOKEN_ENV,
            CONTROL_TOKEN_ENV,
        )
    names = set(config.bridge.server_names.replace(",", " ").split())
    names.add(config.bridge.host)
    if config.bridge.public_url:
        names.add(urlsplit(config.bridge.public_url).hostname or "")
    return ControlAccess(
        read_token(CONTROL_TOKEN_ENV),
        frozenset(n.lower() for n in names if n),
        trusted_networks(config.bridge.control_allow),
    )


def use(access: ControlAccess) -> ControlAccess:
    """Make ``access`` the rule for new subscriptions (at start, and on a good reload)."""
    global _access
    _access = access
    return access


@dataclass(frozen=True)
class Refusal:
    """An upgrade /control refuses: the status, the sentence for the body and the log, and
    which rule refused (``REFUSAL_HEADER``), counted in ``xswarm_control_refused_total``."""

    status: int
    problem: str
    rule: str


async def authorize(request: web.Request) -> Refusal | None:
    """None when the request may subscribe, else how to refuse it.

    A source outside ``control_allow`` is refused before its token is even looked at. A
    wrong token is answered only after the throttle's delay (429 at once while its queue
    is full), so guesses cannot be multiplied by opening sockets in parallel."""
    global _warned_open
    access = _access or use(load_access(request.app[CONTROL_HOST].config))
    problem = source_refusal(request.remote, request.headers, access.allow)
    if problem is not None:
        return Refusal(403, problem, "source")
    problem = browser_refusal(request.headers, access.server_names)
    if problem is not None:
        return Refusal(403, problem, "host")
    header = request.headers.get("Authorization")
    decision = decide(
        access.token,
        bearer_token(header) if header is not None else None,
        trusted_peer(request.remote, request.headers),
    )
    if decision is Decision.LOOPBACK_OPEN and not _warned_open:
        _warned_open = True
        log.warning("%s is not set: /control is open to loopback peers only", CONTROL_TOKEN_ENV)
    if decision.ok:
        _throttle.record_success(request.remote)
        return None
    if decision is Decision.WRONG:
        if _throttle.locked_out(request.remote, time.monotonic()) > 0:
            return Refusal(
                429, "too many wrong tokens from this address; try again later", "throttled"
            )
        await asyncio.sleep(_throttle.record_failure(request.remote, time.monotonic()))
    return Refusal(401, _REFUSALS[decision], "token")


async def handle(request: web.Request) -> web.StreamResponse:
    bridge = request.app[CONTROL_HOST]
    refused = await authorize(request)
    if refused is not None:
        status = refused.status
        bridge.hub.refused[refused.rule] += 1
        log.warning("refused /control from %s (%d): %s", request.remote, status, refused.problem)
        headers = {REFUSAL_HEADER: refused.rule}
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="xswarm"'
        return web.json_response({"error": refused.problem}, status=status, headers=headers)
    ws = web.WebSocketResponse(
        max_msg_size=bridge.config.bridge.max_message_bytes, heartbeat=20, compress=False
    )
    await ws.prepare(request)
    subscriber = Subscriber(f"{request.remote}")
    hub = bridge.hub
    hub.add(subscriber)
    log.info("supervisor subscribed from %s", request.remote)
    # Commands are read in a task of their own, so that the sender can stop reading before it
    # closes: aiohttp's close() waits for the peer's close frame only when nothing else is
    # receiving, and without that wait a peer whose reply came late saw 1006, not our code.
    receiver: asyncio.Task[None] | None = None
    sender: asyncio.Task[None] | None = None
    try:
        receiver = asyncio.create_task(_receive_commands(ws, bridge, subscriber))
        sender = asyncio.create_task(_send_events(ws, subscriber, receiver))
        hello = control.Hello(__version__, os.getpid(), bridge.engine.name, bridge.max_calls)
        await ws.send_str(hub.message(hello))
        await ws.send_str(hub.message(bridge.snapshot()))
        # Until the peer goes, or the sender stops the reading to close.
        await asyncio.wait({receiver})
        if receiver.cancelled():  # only the sender's _close cancels it here
            await asyncio.wait({sender})
        else:
            receiver.result()  # a failure in a command is this handler's, as it always was
    except (ConnectionError, RuntimeError):
        pass
    finally:
        for task in (receiver, sender):
            if task is not None:
                task.cancel()
        # Last: the shutdown waits for every subscriber to be removed before it goes on.
        hub.remove(subscriber)
        log.info("supervisor from %s unsubscribed", request.remote)
    return ws


async def _receive_commands(
    ws: web.WebSocketResponse, bridge: ControlHost, subscriber: Subscriber
) -> None:
    hub = bridge.hub
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                reply = await _command(bridge, message.data)
                if reply is not None:
                    await ws.send_str(hub.message(reply))
            elif message.type == WSMsgType.BINARY:
                refusal = control.Error("binary message: commands are JSON text")
                await ws.send_str(hub.message(refusal))
            if subscriber.closed:
                await ws.close(code=1008, message=b"subscriber too slow; reconnect for a snapshot")
                return
    except (ConnectionError, RuntimeError):
        return


async def _send_events(
    ws: web.WebSocketResponse, subscriber: Subscriber, receiver: asyncio.Task[None]
) -> None:
    """Send what the hub queues. To close (the bridge stops, or the peer reads too slowly) it
    first stops the reading, so that the close waits for the peer's close frame."""
    try:
        while not ws.closed:
            text = await subscriber.queue.get()
            if text == GOODBYE:
                await _close(ws, receiver, 1001, b"bridge shutting down")
                return
            await ws.send_str(text)
            if subscriber.closed:
                reason = b"subscriber too slow; reconnect for a snapshot"
                await _close(ws, receiver, 1008, reason)
                return
    except (ConnectionError, RuntimeError):
        return


async def _close(
    ws: web.WebSocketResponse, receiver: asyncio.Task[None], code: int, reason: bytes
) -> None:
    receiver.cancel()
    await asyncio.wait({receiver})
    await ws.close(code=code, message=reason)


async def _command(bridge: ControlHost, data: str) -> control.Event | None:
    """Run one command; returns a direct reply (pong, snapshot, error) or None."""
    try:
        command = control.decode_command(data, bridge.config.bridge.max_message_bytes)
    except BadMessage as exc:
        return control.Error(str(exc))
    if isinstance(command, control.Ping):
        # Echoed as it came: the id is the sender's, whatever JSON value it chose.
        return control.Pong(command.id)
    if isinstance(command, control.RequestSnapshot):
        return bridge.snapshot()
    if isinstance(command, control.InjectSuggestion):
        bridge.queue_suggestion(command.call_id, command.text, command.priority, command.request_id)
        return None
    if isinstance(command, control.CancelSuggestion):
        problem = bridge.cancel_suggestion(command.call_id)
        return None if problem is None else control.Error(problem)
    problem = await bridge.hangup(command.call_id)
    return None if problem is None else control.Error(problem)
