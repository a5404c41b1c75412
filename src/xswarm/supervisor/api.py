"""The supervisor's HTTP and WebSocket surface on port 9999 (aiohttp).

``WS /ws`` is the operator API (docs/SUPERVISOR_API.md). Every outbound message to an operator
goes through that operator's queue and one writer task, so replies, the snapshot and live
events reach it in the order they were produced, and a stalled operator never stalls the
others or the upstreams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiohttp import WSMsgType, web

from xswarm import __version__
from xswarm.supervisor import auth, messages
from xswarm.supervisor.hub import Hub, Operator

log = logging.getLogger("xswarm.supervisor.api")

HUB_KEY = web.AppKey("hub", Hub)
THROTTLE_KEY = web.AppKey("throttle", auth.BadTokenThrottle)

# Frames above this are refused by the WebSocket layer itself (close 1009); between
# messages.MAX_MESSAGE_BYTES and this, the operator gets an error and the connection stays.
TRANSPORT_MAX_BYTES = 1 << 20
AUTH_TIMEOUT = 10.0
DEFAULT_HISTORY = 100
MAX_HISTORY = 1000
_PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def peer_address(request: web.Request) -> str | None:
    """The peer to trust for "loopback": None when a proxy forwarded it (its clients are not)."""
    if any(h in request.headers for h in _PROXY_HEADERS):
        return None
    return request.remote


def build_app(hub: Hub) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[HUB_KEY] = hub
    app[THROTTLE_KEY] = auth.BadTokenThrottle()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/instances", api_instances)
    app.router.add_get("/api/calls", api_calls)
    app.router.add_get("/ws", operator_ws)
    return app


# -- HTTP ----------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _lockout(request: web.Request) -> auth.Verdict | None:
    """A refusal when this address has failed so often that its tokens are not checked now."""
    wait = request.app[THROTTLE_KEY].locked_out(str(request.remote), time.monotonic())
    if wait <= 0:
        return None
    return auth.Verdict(
        False, f"too many failed authentications from {request.remote}; try again in {wait:.0f} s"
    )


async def _http_auth(request: web.Request) -> web.Response | None:
    """None when the request may proceed; else the 401 to send (after the slow-down)."""
    hub = request.app[HUB_KEY]
    header = request.headers.get("Authorization")
    peer = peer_address(request)
    if header is None and auth.is_loopback(peer):
        return None
    if (locked := _lockout(request)) is not None:
        return web.json_response(
            {"error": locked.message}, status=429, headers={"Retry-After": "30"}
        )
    verdict = auth.check(hub.token, auth.bearer_token(header), peer)
    if verdict.ok:
        request.app[THROTTLE_KEY].record_success(str(request.remote))
        return None
    hub.counters.auth_failures += 1
    delay = request.app[THROTTLE_KEY].record_failure(str(request.remote), time.monotonic())
    await asyncio.sleep(delay)
    return web.json_response(
        {"error": verdict.message},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="xswarm"'},
    )


async def metrics(request: web.Request) -> web.Response:
    if (refused := await _http_auth(request)) is not None:
        return refused
    return web.Response(
        text=render_metrics(request.app[HUB_KEY]),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def api_instances(request: web.Request) -> web.Response:
    if (refused := await _http_auth(request)) is not None:
        return refused
    hub = request.app[HUB_KEY]
    return web.json_response([i.to_dict() for i in hub.fleet.instances.values()])


async def api_calls(request: web.Request) -> web.Response:
    if (refused := await _http_auth(request)) is not None:
        return refused
    raw = request.query.get("limit")
    limit = DEFAULT_HISTORY
    if raw is not None:
        try:
            limit = int(raw)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_HISTORY or not raw.strip().isdigit():
            shown = raw if len(raw) <= 20 else raw[:20] + "…"
            return web.json_response(
                {"error": f"limit must be a whole number from 1 to {MAX_HISTORY}, got {shown!r}"},
                status=400,
            )
    hub = request.app[HUB_KEY]
    return web.json_response(hub.store.history(limit))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(hub: Hub) -> str:
    """Prometheus text exposition of the supervisor's own state."""
    c = hub.counters
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{labels} {value:g}")

    def lbl(**labels: str) -> str:
        inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
        return "{" + inner + "}"

    instances = list(hub.fleet.instances.values())
    metric(
        "xswarm_supervisor_info",
        "gauge",
        "Version of the supervisor.",
        [(lbl(version=__version__), 1)],
    )
    metric(
        "xswarm_supervisor_uptime_seconds",
        "gauge",
        "Seconds since the supervisor started.",
        [("", round(time.time() - hub.started_at, 3))],
    )
    metric(
        "xswarm_supervisor_instance_up",
        "gauge",
        "1 when the instance is connected and reporting (up or draining).",
        [(lbl(instance=i.name), 1 if i.state in ("up", "draining") else 0) for i in instances],
    )
    metric(
        "xswarm_supervisor_instance_state",
        "gauge",
        "The state of each instance, one-hot.",
        [
            (lbl(instance=i.name, state=s), 1 if i.state == s else 0)
            for i in instances
            for s in ("up", "down", "stale", "draining")
        ],
    )
    metric(
        "xswarm_supervisor_instance_restarts_total",
        "counter",
        "Times an instance came back with a new pid.",
        [(lbl(instance=i.name), i.restarts) for i in instances],
    )
    active: dict[str, int] = {i.name: 0 for i in instances}
    for call in hub.fleet.calls.values():
        if call.state == "active" and call.instance in active:
            active[call.instance] += 1
    metric(
        "xswarm_supervisor_active_calls",
        "gauge",
        "Live calls per instance.",
        [(lbl(instance=n), v) for n, v in active.items()],
    )
    upstreams = list(hub.upstreams.values())
    metric(
        "xswarm_supervisor_upstream_connects_total",
        "counter",
        "Successful connections to each instance's control channel.",
        [(lbl(instance=u.name), u.connects) for u in upstreams],
    )
    metric(
        "xswarm_supervisor_upstream_failures_total",
        "counter",
        "Lost or refused connections to each instance's control channel.",
        [(lbl(instance=u.name), u.failures) for u in upstreams],
    )
    metric(
        "xswarm_supervisor_upstream_bad_messages_total",
        "counter",
        "Messages from an instance that were not JSON events.",
        [(lbl(instance=u.name), u.bad_messages) for u in upstreams],
    )
    metric(
        "xswarm_supervisor_events_received_total",
        "counter",
        "Events received from all instances.",
        [("", c.events_in)],
    )
    metric(
        "xswarm_supervisor_messages_sent_total",
        "counter",
        "Messages queued to operators.",
        [("", c.events_out)],
    )
    metric(
        "xswarm_supervisor_operators",
        "gauge",
        "Open operator connections.",
        [("", len(hub.operators))],
    )
    metric(
        "xswarm_supervisor_operators_dropped_total",
        "counter",
        "Operators closed for falling behind (slow) or flooding.",
        [
            (lbl(reason="slow"), c.operators_dropped_slow),
            (lbl(reason="flood"), c.operators_flooding),
        ],
    )
    metric(
        "xswarm_supervisor_auth_failures_total",
        "counter",
        "Refused authentications (HTTP and WebSocket).",
        [("", c.auth_failures)],
    )
    metric(
        "xswarm_supervisor_operator_errors_total",
        "counter",
        "Malformed or unknown operator messages.",
        [("", c.operator_errors)],
    )
    metric(
        "xswarm_supervisor_suggestions_total",
        "counter",
        "Operator suggestions.",
        [
            (lbl(outcome="forwarded"), c.suggestions_forwarded),
            (lbl(outcome="rejected_locally"), c.suggestions_rejected_locally),
        ],
    )
    metric(
        "xswarm_supervisor_hangups_total",
        "counter",
        "Hang-ups forwarded to instances.",
        [("", c.hangups_forwarded)],
    )
    metric(
        "xswarm_supervisor_calls_recorded_total",
        "counter",
        "Finished calls written to the history.",
        [("", c.calls_recorded)],
    )
    metric(
        "xswarm_supervisor_store_errors_total",
        "counter",
        "History writes that failed.",
        [("", c.store_errors)],
    )
    metric(
        "xswarm_supervisor_history_rows",
        "gauge",
        "Finished calls kept in the history.",
        [("", hub.store.finished_count())],
    )
    return "\n".join(lines) + "\n"


# -- WS /ws --------------------------------------------------------------------------------


async def _writer(op: Operator) -> None:
    while True:
        text = await op.queue.get()
        try:
            await op.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            op.closing = True
            return
        finally:
            op.queue.task_done()


async def _flush(op: Operator, within: float = 2.0) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(op.queue.join(), within)


async def _refuse(
    request: web.Request, op: Operator, verdict: auth.Verdict, counted: bool = True
) -> None:
    """A failed authentication: wait the slow-down (when counted), answer, close with 1008."""
    hub = request.app[HUB_KEY]
    hub.counters.auth_failures += 1
    log.warning("operator %s failed to authenticate: %s", request.remote, verdict.message)
    if counted:
        delay = request.app[THROTTLE_KEY].record_failure(str(request.remote), time.monotonic())
        await asyncio.sleep(delay)
    hub.send_to(op, {"type": "auth_result", "success": False, "message": verdict.message})
    await _flush(op)
    op.closing = True
    await op.ws.close(code=1008, message=b"authentication failed")


async def operator_ws(request: web.Request) -> web.WebSocketResponse:
    hub = request.app[HUB_KEY]
    ws = web.WebSocketResponse(max_msg_size=TRANSPORT_MAX_BYTES, heartbeat=30.0)
    await ws.prepare(request)
    op = Operator(ws=ws, peer=str(request.remote))
    writer = asyncio.create_task(_writer(op), name=f"operator writer {op.peer}")
    hub.operators.add(op)
    try:
        await _serve_operator(request, hub, op)
    finally:
        hub.operators.discard(op)
        await _flush(op, within=1.0)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        if not ws.closed:
            await ws.close()
    return ws


async def _serve_operator(request: web.Request, hub: Hub, op: Operator) -> None:
    ws = op.ws
    peer = peer_address(request)
    authenticated = False
    header = request.headers.get("Authorization")
    if header is not None:
        if (locked := _lockout(request)) is not None:
            await _refuse(request, op, locked, counted=False)
            return
        verdict = auth.check(hub.token, auth.bearer_token(header), peer)
        if not verdict.ok:
            await _refuse(request, op, verdict)
            return
        authenticated = True
        request.app[THROTTLE_KEY].record_success(str(request.remote))
        hub.send_to(op, {"type": "auth_result", "success": True, "message": verdict.message})
    elif not hub.token and auth.is_loopback(peer):
        # Development mode: a loopback peer needs no token; an auth message is still answered.
        authenticated = True
    deadline = time.monotonic() + AUTH_TIMEOUT
    guard = auth.FloodGuard()
    while not op.closing:
        timeout = None if authenticated else max(0.0, deadline - time.monotonic())
        try:
            msg = await ws.receive(timeout=timeout)
        except TimeoutError:
            await _refuse(
                request, op, auth.Verdict(False, f"no auth message within {AUTH_TIMEOUT:g} s")
            )
            return
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            continue
        if not guard.allow(time.monotonic()):
            hub.counters.operators_flooding += 1
            log.warning("operator %s flooded the supervisor; closing it", op.peer)
            hub.send_to(
                op,
                {
                    "type": "error",
                    "message": (f"flood: more than {guard.rate:g} messages per second; closing"),
                },
            )
            await _flush(op)
            op.closing = True
            await ws.close(code=1008, message=b"flood")
            return
        try:
            command = messages.parse(msg.data)
        except messages.BadMessage as exc:
            hub.counters.operator_errors += 1
            hub.send_to(op, {"type": "error", "message": str(exc)})
            continue
        if isinstance(command, messages.Auth):
            if (locked := _lockout(request)) is not None:
                await _refuse(request, op, locked, counted=False)
                return
            verdict = auth.check(hub.token, command.token, peer)
            if not verdict.ok:
                await _refuse(request, op, verdict)
                return
            authenticated = True
            request.app[THROTTLE_KEY].record_success(str(request.remote))
            hub.send_to(op, {"type": "auth_result", "success": True, "message": verdict.message})
            continue
        if not authenticated:
            hub.counters.operator_errors += 1
            hub.send_to(
                op,
                {
                    "type": "error",
                    "message": ('not authenticated: send {"type":"auth","token":"…"} first'),
                },
            )
            continue
        await _dispatch(hub, op, command)


async def _dispatch(hub: Hub, op: Operator, command: messages.Command) -> None:
    if isinstance(command, messages.Subscribe):
        op.subscribed = True
        hub.send_to(op, hub.fleet.snapshot())
    elif isinstance(command, messages.Ping):
        reply: dict[str, Any] = {"type": "pong"}
        if command.id is not None:
            reply["id"] = command.id
        hub.send_to(op, reply)
    elif isinstance(command, messages.InjectSuggestion):
        await hub.inject_suggestion(op, command)
    elif isinstance(command, messages.Hangup):
        problem = await hub.hangup(op, command)
        if problem is not None:
            hub.send_to(op, {"type": "error", "message": problem})
