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
from collections import Counter
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from xswarm import __version__
from xswarm.metrics import Exposition
from xswarm.protocol import operator
from xswarm.protocol.auth import (
    SUPERVISOR_TOKEN_ENV,
    AuthThrottle,
    Decision,
    FloodGuard,
    bearer_token,
    browser_refusal,
    decide,
    is_loopback,
    trusted_peer,
)
from xswarm.protocol.operator import INSTANCE_STATES
from xswarm.protocol.values import BadMessage
from xswarm.supervisor.hub import Operator, OperatorHub

log = logging.getLogger("xswarm.supervisor.api")


@dataclass
class Access:
    """What the API accepts besides the token: the host names operators reach it by.

    Mutable so that a reload can change it on the running app.
    """

    server_names: frozenset[str] = frozenset()


HUB_KEY = web.AppKey("hub", OperatorHub)
THROTTLE_KEY = web.AppKey("throttle", AuthThrottle)
ACCESS_KEY = web.AppKey("access", Access)

# Frames above this are refused by the WebSocket layer itself (close 1009); between
# operator.MAX_MESSAGE_BYTES and this, the operator gets an error and the connection stays.
TRANSPORT_MAX_BYTES = 1 << 20
AUTH_TIMEOUT = 10.0
DEFAULT_HISTORY = 100
MAX_HISTORY = 1000


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str
    decision: Decision | None = None


_VERDICTS = {
    Decision.TOKEN_OK: "authenticated",
    Decision.LOOPBACK_OPEN: (
        f"authenticated: {SUPERVISOR_TOKEN_ENV} is not set, so loopback peers are accepted "
        "without a token (development only)"
    ),
    Decision.NOT_LOOPBACK: (
        f"{SUPERVISOR_TOKEN_ENV} is not set on the supervisor, so only loopback peers are "
        "accepted; set it in /opt/xswarm/.env and restart xswarm-dashboard"
    ),
    Decision.MISSING: 'a token is required: send {"type":"auth","token":…}',
    Decision.WRONG: f"invalid token; use the {SUPERVISOR_TOKEN_ENV} of the supervisor",
}


def check(expected: str | None, given: str | None, peer: str | None) -> Verdict:
    """Decide one authentication attempt (protocol.auth's rule) in the operator's words."""
    decision = decide(expected, given, peer)
    return Verdict(decision.ok, _VERDICTS[decision], decision)


def peer_address(request: web.Request) -> str | None:
    """The peer to trust for "loopback": None when a proxy forwarded it (its clients are not)."""
    return trusted_peer(request.remote, request.headers)


def build_app(hub: OperatorHub, access: Access | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[HUB_KEY] = hub
    app[THROTTLE_KEY] = AuthThrottle()
    app[ACCESS_KEY] = access or Access()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/instances", api_instances)
    app.router.add_get("/api/calls", api_calls)
    app.router.add_get("/ws", operator_ws)
    return app


# -- HTTP ----------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _lockout(request: web.Request) -> Verdict | None:
    """After a wrong token: a refusal when failures from here are not even answered now."""
    wait = request.app[THROTTLE_KEY].locked_out(request.remote, time.monotonic())
    if wait <= 0:
        return None
    return Verdict(
        False, f"too many failed authentications from {request.remote}; try again in {wait:.0f} s"
    )


def _browser_refusal(request: web.Request) -> web.Response | None:
    """403 for a request a web page may have made (foreign Host or Origin): DNS rebinding."""
    problem = browser_refusal(request.headers, request.app[ACCESS_KEY].server_names)
    if problem is None:
        return None
    request.app[HUB_KEY].counters.auth_failures += 1
    log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote, problem)
    return web.json_response({"error": problem}, status=403)


async def _http_auth(request: web.Request, loopback_open: bool = False) -> web.Response | None:
    """None when the request may proceed; else the refusal to send (after the slow-down).

    With a token configured every API call needs it, loopback included; ``loopback_open``
    lets a loopback peer without an Authorization header through anyway (``/metrics``, which
    a local Prometheus scrapes and which holds no caller data).
    """
    if (refused := _browser_refusal(request)) is not None:
        return refused
    hub = request.app[HUB_KEY]
    header = request.headers.get("Authorization")
    peer = peer_address(request)
    if loopback_open and header is None and is_loopback(peer):
        return None
    verdict = check(hub.token, bearer_token(header), peer)
    throttle = request.app[THROTTLE_KEY]
    if verdict.ok:
        throttle.record_success(request.remote)
        return None
    hub.counters.auth_failures += 1
    if verdict.decision is Decision.WRONG:
        if (locked := _lockout(request)) is not None:
            return web.json_response(
                {"error": locked.message}, status=429, headers={"Retry-After": "30"}
            )
        await asyncio.sleep(throttle.record_failure(request.remote, time.monotonic()))
    return web.json_response(
        {"error": verdict.message},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="xswarm"'},
    )


async def metrics(request: web.Request) -> web.Response:
    if (refused := await _http_auth(request, loopback_open=True)) is not None:
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
    instances = [i.to_dict() for i in hub.fleet.instances.values()]
    if request.query.get("totals") not in ("1", "true"):
        return web.json_response(instances)
    # The list alone stays the default answer (clients read it as a list); with totals=1
    # it comes wrapped, beside the fleet's capacity per host and in total.
    return web.json_response({"instances": instances} | hub.fleet.capacity().encode())


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


def render_metrics(hub: OperatorHub) -> str:
    """Prometheus text exposition of the supervisor's own state."""
    expo = Exposition()
    expo.metric(
        "xswarm_supervisor_info",
        "gauge",
        "Version of the supervisor.",
        [({"version": __version__}, 1)],
    )
    expo.metric(
        "xswarm_supervisor_uptime_seconds",
        "gauge",
        "Seconds since the supervisor started.",
        round(time.time() - hub.started_at, 3),
    )
    _instance_metrics(expo, hub)
    _upstream_metrics(expo, hub)
    _operator_metrics(expo, hub)
    _history_metrics(expo, hub)
    return expo.text()


def _instance_metrics(expo: Exposition, hub: OperatorHub) -> None:
    instances = list(hub.fleet.instances.values())
    expo.metric(
        "xswarm_supervisor_instance_up",
        "gauge",
        "1 when the instance is connected and reporting (up or draining).",
        [({"instance": i.name}, int(i.state in ("up", "draining"))) for i in instances],
    )
    expo.metric(
        "xswarm_supervisor_instance_state",
        "gauge",
        "The state of each instance, one-hot.",
        [
            ({"instance": i.name, "state": s}, int(i.state == s))
            for i in instances
            for s in INSTANCE_STATES
        ],
    )
    expo.metric(
        "xswarm_supervisor_instance_failure",
        "gauge",
        "1 for why an instance is not connected (tls_untrusted, token_refused, timeout…).",
        [({"instance": i.name, "failure": i.failure}, 1) for i in instances if i.failure],
    )
    capacity = hub.fleet.capacity()
    for figure, help_text in (
        ("slots", "Call slots of the instances that are up or draining, per host."),
        ("free", "Free call slots of the instances that admit calls, per host."),
    ):
        expo.metric(
            f"xswarm_supervisor_host_{figure}",
            "gauge",
            help_text,
            [({"host": h}, getattr(c, figure)) for h, c in capacity.hosts.items()],
        )
    expo.metric(
        "xswarm_supervisor_instance_restarts_total",
        "counter",
        "Times an instance came back with a new pid.",
        [({"instance": i.name}, i.restarts) for i in instances],
    )
    active = Counter(c.instance for c in hub.fleet.calls.values() if c.state == "active")
    expo.metric(
        "xswarm_supervisor_active_calls",
        "gauge",
        "Live calls per instance.",
        [({"instance": i.name}, active[i.name]) for i in instances],
    )


def _upstream_metrics(expo: Exposition, hub: OperatorHub) -> None:
    upstreams = list(hub.upstreams.values())
    for counter, help_text in (
        ("connects", "Successful connections to each instance's control channel."),
        ("failures", "Lost or refused connections to each instance's control channel."),
        ("bad_messages", "Messages from an instance that were not JSON events."),
    ):
        expo.metric(
            f"xswarm_supervisor_upstream_{counter}_total",
            "counter",
            help_text,
            [({"instance": u.name}, getattr(u, counter)) for u in upstreams],
        )


def _operator_metrics(expo: Exposition, hub: OperatorHub) -> None:
    c = hub.counters
    expo.metric(
        "xswarm_supervisor_events_received_total",
        "counter",
        "Events received from all instances.",
        c.events_in,
    )
    expo.metric(
        "xswarm_supervisor_messages_sent_total",
        "counter",
        "Messages queued to operators.",
        c.events_out,
    )
    expo.metric(
        "xswarm_supervisor_operators", "gauge", "Open operator connections.", len(hub.operators)
    )
    expo.metric(
        "xswarm_supervisor_operators_dropped_total",
        "counter",
        "Operators closed for falling behind (slow) or flooding.",
        [
            ({"reason": "slow"}, c.operators_dropped_slow),
            ({"reason": "flood"}, c.operators_flooding),
        ],
    )
    expo.metric(
        "xswarm_supervisor_auth_failures_total",
        "counter",
        "Refused authentications (HTTP and WebSocket).",
        c.auth_failures,
    )
    expo.metric(
        "xswarm_supervisor_operator_errors_total",
        "counter",
        "Malformed or unknown operator messages.",
        c.operator_errors,
    )
    expo.metric(
        "xswarm_supervisor_suggestions_total",
        "counter",
        "Operator suggestions.",
        [
            ({"outcome": "forwarded"}, c.suggestions_forwarded),
            ({"outcome": "rejected_locally"}, c.suggestions_rejected_locally),
        ],
    )
    expo.metric(
        "xswarm_supervisor_hangups_total",
        "counter",
        "Hang-ups forwarded to instances.",
        c.hangups_forwarded,
    )


def _history_metrics(expo: Exposition, hub: OperatorHub) -> None:
    c = hub.counters
    expo.metric(
        "xswarm_supervisor_calls_recorded_total",
        "counter",
        "Finished calls written to the history.",
        c.calls_recorded,
    )
    expo.metric(
        "xswarm_supervisor_store_errors_total",
        "counter",
        "History writes that failed.",
        c.store_errors,
    )
    expo.metric(
        "xswarm_supervisor_history_rows",
        "gauge",
        "Finished calls kept in the history.",
        hub.store.finished_count(),
    )


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


async def _refuse(request: web.Request, op: Operator, verdict: Verdict) -> None:
    """A failed authentication: a wrong token waits the slow-down (or, when failures from here
    are locked out, is told to come back later); then the answer and close 1008."""
    hub = request.app[HUB_KEY]
    hub.counters.auth_failures += 1
    if verdict.decision is Decision.WRONG:
        if (locked := _lockout(request)) is not None:
            verdict = locked
        else:
            throttle = request.app[THROTTLE_KEY]
            await asyncio.sleep(throttle.record_failure(request.remote, time.monotonic()))
    log.warning("operator %s failed to authenticate: %s", request.remote, verdict.message)
    hub.send_to(op, operator.AuthResult(False, verdict.message).encode())
    await _flush(op)
    op.closing = True
    await op.ws.close(code=1008, message=b"authentication failed")


def _accept(request: web.Request, op: Operator, verdict: Verdict) -> None:
    request.app[THROTTLE_KEY].record_success(request.remote)
    request.app[HUB_KEY].send_to(op, operator.AuthResult(True, verdict.message).encode())


async def operator_ws(request: web.Request) -> web.StreamResponse:
    if (refused := _browser_refusal(request)) is not None:
        return refused
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


async def _serve_operator(request: web.Request, hub: OperatorHub, op: Operator) -> None:
    ws = op.ws
    peer = peer_address(request)
    authenticated = False
    header = request.headers.get("Authorization")
    if header is not None:
        verdict = check(hub.token, bearer_token(header), peer)
        if not verdict.ok:
            await _refuse(request, op, verdict)
            return
        authenticated = True
        _accept(request, op, verdict)
    elif not hub.token and is_loopback(peer):
        # Development mode: a loopback peer needs no token; an auth message is still answered.
        authenticated = True
    deadline = time.monotonic() + AUTH_TIMEOUT
    guard = FloodGuard()
    while not op.closing:
        timeout = None if authenticated else max(0.0, deadline - time.monotonic())
        try:
            msg = await ws.receive(timeout=timeout)
        except TimeoutError:
            await _refuse(request, op, Verdict(False, f"no auth message within {AUTH_TIMEOUT:g} s"))
            return
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            continue
        if not guard.allow(time.monotonic()):
            hub.counters.operators_flooding += 1
            log.warning("operator %s flooded the supervisor; closing it", op.peer)
            flood = f"flood: more than {guard.rate:g} messages per second; closing"
            hub.send_to(op, operator.Error(flood).encode())
            await _flush(op)
            op.closing = True
            await ws.close(code=1008, message=b"flood")
            return
        try:
            command = operator.decode_command(msg.data)
        except BadMessage as exc:
            hub.counters.operator_errors += 1
            hub.send_to(op, operator.Error(str(exc)).encode())
            continue
        if isinstance(command, operator.Auth):
            verdict = check(hub.token, command.token, peer)
            if not verdict.ok:
                await _refuse(request, op, verdict)
                return
            authenticated = True
            _accept(request, op, verdict)
            continue
        if not authenticated:
            hub.counters.operator_errors += 1
            refusal = 'not authenticated: send {"type":"auth","token":"…"} first'
            hub.send_to(op, operator.Error(refusal).encode())
            continue
        await _dispatch(hub, op, command)


async def _dispatch(hub: OperatorHub, op: Operator, command: operator.Command) -> None:
    if isinstance(command, operator.Subscribe):
        op.subscribed = True
        op.batched = command.batch
        hub.send_to(op, hub.fleet.snapshot())
    elif isinstance(command, operator.Ping):
        hub.send_to(op, operator.Pong(command.id).encode())
    elif isinstance(command, operator.Watch):
        hub.watch(op, command)
    elif isinstance(command, operator.InjectSuggestion):
        await hub.inject_suggestion(op, command)
    elif isinstance(command, operator.Hangup):
        problem = await hub.hangup(op, command)
        if problem is not None:
            hub.send_to(op, operator.Error(problem).encode())
