"""``WS /twilio``: Twilio Media Streams, bidirectional, as Twilio documents it, and its auth.

In: connected, start, media (20 ms of 8 kHz mu-law), mark, dtmf, stop. Out: media, mark,
clear, every one carrying the stream's ``streamSid``. The wire format is the sans-I/O
``xswarm.protocol.twilio``, one ``media_stream`` dialect among the carriers', so the call is
the carriers' ``MediaStreamSession``; what is Twilio's own is how it proves who it is: the
upgrade's X-Twilio-Signature and, when configured, a stream token in the start.
"""

from __future__ import annotations

import os
import time
from urllib.parse import urlsplit

from aiohttp import web

from xswarm.bridge.host import CALL_HOST
from xswarm.bridge.media_stream import MediaStreamSession
from xswarm.bridge.session import CLOSE_POLICY, refuse, serve_call
from xswarm.errors import ProtocolError
from xswarm.protocol import media_stream as ms
from xswarm.protocol import twilio


class TwilioSession(MediaStreamSession):
    transport_name = "twilio"
    dialect = twilio.DIALECT

    def check_start(self, event: ms.Start) -> None:
        token = os.environ.get("TWILIO_AUTH_TOKEN")
        if self.host.config.bridge.twilio_stream_token and token:
            problem = twilio.token_problem(token, event.call_id, event.parameters, time.time())
            if problem is not None:
                self.host.count_rejection("auth")
                raise ProtocolError(f"stream token refused: {problem}", CLOSE_POLICY)


def _signature_url(request: web.Request, public_url: str) -> str:
    """The URL Twilio signed: ``public_url`` (its path prefix kept) followed by our path.

    Without ``public_url`` (it is required once TWILIO_AUTH_TOKEN is set) only what this
    socket itself saw is used, never a client's X-Forwarded-* headers.
    """
    if public_url:
        base = urlsplit(public_url)
        prefix = base.path.rstrip("/")
        path = request.path
        if prefix.endswith(path):  # public_url already names the stream's own path
            prefix = prefix[: -len(path)]
        query = f"?{request.query_string}" if request.query_string else ""
        return f"{base.scheme}://{base.netloc}{prefix}{path}{query}"
    scheme = "wss" if request.secure else "ws"
    return f"{scheme}://{request.host}{request.path_qs}"


async def handle(request: web.Request) -> web.StreamResponse:
    host = request.app[CALL_HOST]
    token = os.environ.get("TWILIO_AUTH_TOKEN")
    if token:
        signature = request.headers.get("X-Twilio-Signature", "")
        url = _signature_url(request, host.config.bridge.public_url)
        if not signature or not twilio.validate_signature(token, url, {}, signature):
            host.count_rejection("auth")
            return refuse(403, "X-Twilio-Signature is missing or does not match this URL")
    return await serve_call(request, TwilioSession)
