"""``WS /telnyx``, ``/plivo``, ``/exotel``: the other carriers' media streams, and their auth.

Each is a ``MediaStreamSession`` with its carrier's dialect. None of the three signs its
media socket's upgrade as Twilio does, so with ``XSWARM_CARRIER_TOKEN`` (or its ``_FILE``)
set, each upgrade must carry that token in one of the ways the carriers can send it:

- ``Authorization: Bearer <token>``: Telnyx's ``stream_auth_token`` on streaming_start;
- HTTP Basic with the token as password: Exotel's ``wss://user:<token>@host/exotel``;
- ``?token=<token>`` in the stream URL: Plivo's Stream XML, or any carrier.

A missing or wrong token is answered 403 and counted as an ``auth`` rejection, before the
call is admitted. Unset, the endpoints are open, as ``/twilio`` is without TWILIO_AUTH_TOKEN.
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from xswarm.bridge.host import CALL_HOST
from xswarm.bridge.media_stream import MediaStreamSession
from xswarm.bridge.session import refuse, serve_call
from xswarm.protocol import exotel, media_stream, plivo, telnyx
from xswarm.protocol.auth import bearer_token, tokens_match
from xswarm.tokens import TokenError, read_token

CARRIER_TOKEN_ENV = media_stream.CARRIER_TOKEN_ENV
TOKEN_QUERY_PARAMETER = "token"


class TelnyxSession(MediaStreamSession):
    transport_name = "telnyx"
    dialect = telnyx.DIALECT


class PlivoSession(MediaStreamSession):
    transport_name = "plivo"
    dialect = plivo.DIALECT


class ExotelSession(MediaStreamSession):
    transport_name = "exotel"
    dialect = exotel.DIALECT


def presented_token(request: web.Request) -> str | None:
    """The token an upgrade carries: Bearer, Basic's password, or ``?token=``; None if none."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(":")[2] or None
    return bearer_token(header) or request.query.get(TOKEN_QUERY_PARAMETER) or None


def auth_refusal(request: web.Request) -> web.Response | None:
    """403 when a carrier token is configured and the upgrade does not carry it."""
    try:
        expected = read_token(CARRIER_TOKEN_ENV)
    except TokenError as exc:
        return refuse(503, str(exc))
    if expected is None:
        return None
    if tokens_match(presented_token(request), expected):
        return None
    request.app[CALL_HOST].count_rejection("auth")
    return refuse(
        403,
        f"{CARRIER_TOKEN_ENV} is configured: send it as a Bearer token, a Basic password or "
        f"?{TOKEN_QUERY_PARAMETER}=",
    )


async def _serve(
    request: web.Request, session_type: type[MediaStreamSession]
) -> web.StreamResponse:
    refusal = auth_refusal(request)
    if refusal is not None:
        return refusal
    return await serve_call(request, session_type)


async def handle_telnyx(request: web.Request) -> web.StreamResponse:
    return await _serve(request, TelnyxSession)


async def handle_plivo(request: web.Request) -> web.StreamResponse:
    return await _serve(request, PlivoSession)


async def handle_exotel(request: web.Request) -> web.StreamResponse:
    return await _serve(request, ExotelSession)
