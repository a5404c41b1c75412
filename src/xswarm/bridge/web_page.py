"""``GET /``: the browser client (package data in ``bridge/web/``), and the optional call token.

The page is served only while ``[voice.bridge] web_client`` is true (read per request, so a
reload turns it on or off); otherwise ``/`` and ``/web/…`` are 404 as if they did not exist.
Every file is read from the package once, at start, and answered with a Content-Security-Policy
that allows nothing but this origin, so the page runs no inline or foreign script.

``XSWARM_CALL_TOKEN`` (or ``XSWARM_CALL_TOKEN_FILE``), when set, is required on every
``/api/chat`` upgrade: a browser cannot set headers on a WebSocket, so the page sends it as the
``token`` query parameter; other clients may send ``Authorization: Bearer …`` instead. The
bridge keeps no access log, so the query string is not written anywhere by us.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from xswarm.bridge.host import CALL_HOST
from xswarm.bridge.session import refuse
from xswarm.protocol.auth import bearer_token, tokens_match
from xswarm.tokens import read_token

CALL_TOKEN_ENV = "XSWARM_CALL_TOKEN"
CALL_PATH = "/api/chat"
TOKEN_PARAMETER = "token"

# URL path -> (file in bridge/web/, content type); nothing else under /web/ is served.
PAGES = {
    "/": ("index.html", "text/html"),
    "/web/app.js": ("app.js", "text/javascript"),
    "/web/ogg.js": ("ogg.js", "text/javascript"),
    "/web/worklets.js": ("worklets.js", "text/javascript"),
    "/web/style.css": ("style.css", "text/css"),
    "/web/NOTICE": ("NOTICE", "text/plain"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
    "Cache-Control": "no-cache",
}


def install(app: web.Application) -> None:
    """Add the page's routes and, when ``XSWARM_CALL_TOKEN`` is set, its gate on /api/chat."""
    files = resources.files("xswarm.bridge") / "web"
    bodies = {path: (files / name).read_bytes() for path, (name, _) in PAGES.items()}

    async def page(request: web.Request) -> web.Response:
        if not request.app[CALL_HOST].config.bridge.web_client:
            raise web.HTTPNotFound()
        _, content_type = PAGES[request.path]
        return web.Response(
            body=bodies[request.path],
            content_type=content_type,
            charset="utf-8",
            headers=SECURITY_HEADERS,
        )

    for path in PAGES:
        app.router.add_get(path, page)
    token = read_token(CALL_TOKEN_ENV)
    if token:
        app.middlewares.append(_call_token_gate(token))


def _call_token_gate(expected: str) -> Middleware:
    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == CALL_PATH:
            given = request.query.get(TOKEN_PARAMETER) or bearer_token(
                request.headers.get("Authorization")
            )
            if not tokens_match(given, expected):
                what = "missing" if given is None else "wrong"
                return refuse(
                    401,
                    f"{what} call token: send {CALL_TOKEN_ENV} as ?{TOKEN_PARAMETER}= or "
                    "Authorization: Bearer",
                )
        return await handler(request)

    return gate
