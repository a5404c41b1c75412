"""The bridge's one HTTP/WebSocket listener: which path is served by what.

``/twilio``, ``/telnyx``, ``/plivo``, ``/exotel`` and ``/api/chat`` are the call transports
(they see the registry as their ``CallHost``), ``/control`` is the supervisor's connection (it
sees the ``ControlHost``), and ``/healthz``, ``/readyz`` and ``/metrics`` answer from the
status board. ``/twilio/voice`` and ``/twilio/status`` are Twilio's call webhooks, answered
from the registry's state.
"""

from __future__ import annotations

import os

from aiohttp import web

from xswarm.bridge import carriers, control, moshi_chat, twilio_media, twilio_voice, web_page
from xswarm.bridge.host import CALL_HOST, CONTROL_HOST, ControlHost
from xswarm.bridge.registry import CallRegistry
from xswarm.bridge.status import StatusBoard

STATUS: web.AppKey[StatusBoard] = web.AppKey("status", StatusBoard)
# Upgrades and health checks only: no request of ours has a body worth more.
MAX_REQUEST_BYTES = 64 * 1024


def build_app(
    calls: CallRegistry, status: StatusBoard, control_host: ControlHost
) -> web.Application:
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[CALL_HOST] = calls
    app[CONTROL_HOST] = control_host
    app[STATUS] = status
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/twilio", twilio_media.handle)
    twilio_webhooks = twilio_voice.TwilioWebhooks(calls)
    app.router.add_post("/twilio/voice", twilio_webhooks.voice)
    app.router.add_post("/twilio/status", twilio_webhooks.status)
    app.router.add_get("/telnyx", carriers.handle_telnyx)
    app.router.add_get("/plivo", carriers.handle_plivo)
    app.router.add_get("/exotel", carriers.handle_exotel)
    app.router.add_get("/api/chat", moshi_chat.handle)
    app.router.add_get("/control", control.handle)
    web_page.install(app)
    return app


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATUS].calls.state
    return web.json_response({"status": "ok", "state": state, "pid": os.getpid()})


async def readyz(request: web.Request) -> web.Response:
    status, body = request.app[STATUS].readiness()
    return web.json_response(body, status=status)


async def metrics(request: web.Request) -> web.Response:
    text = request.app[STATUS].metrics_text()
    return web.Response(text=text, content_type="text/plain", charset="utf-8")
