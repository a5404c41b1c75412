"""One subscription per voice instance: connect to its ``WS /control``, read forever, reconnect.

The supervisor only pulls: a bridge with no subscriber runs its calls unchanged, and a bridge
that is down costs us one refused connection per backoff step. The backoff is exponential with
full jitter and capped at 2 s, so an instance that comes back is seen again within about two
seconds while a fleet of supervisors does not reconnect in lockstep.

Across hosts the URL is ``wss://``: the bridge's certificate is checked against
``[dashboard] ca_file`` (or the system's CAs), hostname included. Every failure is classified
(:func:`classify_failure`) into the state operators see: ``down`` (the host answered, nothing
listens), ``unreachable`` (no answer: host or network), ``auth_refused`` (the bridge refused
our token or address, or we refused its certificate), each with a line naming the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from xswarm.protocol.auth import CONTROL_TOKEN_ENV, REFUSAL_HEADER
from xswarm.protocol.control import Command

log = logging.getLogger("xswarm.supervisor.upstream")

BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0
MAX_UPSTREAM_MESSAGE = 4 << 20
# Connecting, TLS and the upgrade together: a host that does not answer in this long counts
# as unreachable, so a lost host shows within the 2 s the fleet view promises.
CONNECT_TIMEOUT = 2.0
_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before reconnect ``attempt`` (0-based): jittered, at most BACKOFF_CAP."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt, 30))
    return (rng or random).uniform(ceiling / 2, ceiling)


# Why an instance is not connected, as operators and alerts see it (``state``):
DOWN = "down"  # the host answered but nothing listens there: the bridge is not running
UNREACHABLE = "unreachable"  # no answer in time, no route, no such name: host or network
AUTH_REFUSED = "auth_refused"  # the bridge refused us (401/403), or we refused its certificate
FAILURE_STATES = (DOWN, UNREACHABLE, AUTH_REFUSED)


@dataclass(frozen=True)
class Failure:
    """One failed or lost connection: the instance's state, a short code for machines
    (``connection_refused``, ``timeout``, ``no_route``, ``dns``, ``token_refused``,
    ``source_refused``, ``host_refused``, ``tls_untrusted``, ``tls_hostname``,
    ``tls_expired``, ``tls_failed``, ``closed``, ``silent``, ``http_error``…) and the line
    for people, which names the fix."""

    state: str
    code: str
    reason: str


def describe_failure(url: str, exc: BaseException) -> str:
    """One line saying why a connection to a bridge failed, and what to do about it."""
    return classify_failure(url, exc).reason


def classify_failure(url: str, exc: BaseException) -> Failure:
    """What a failed connection attempt means: which state, which code, which fix."""
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return _refused_upgrade(url, exc)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _untrusted(url, exc.certificate_error)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _untrusted(url, exc)
    if isinstance(exc, aiohttp.ClientConnectorSSLError | ssl.SSLError):
        return Failure(
            AUTH_REFUSED,
            "tls_failed",
            f"TLS handshake with {url} failed ({_ssl_reason(exc)}); does the bridge serve TLS "
            "([voice.bridge] tls_cert) on that port? Use ws:// for a bridge without it",
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, ConnectionRefusedError):
            return Failure(
                DOWN,
                "connection_refused",
                f"{url} refused the connection: the host is up but nothing listens on that "
                "port; is xswarm-voice running there (systemctl status xswarm-voice)?",
            )
        if isinstance(os_error, socket.gaierror):
            return Failure(
                UNREACHABLE,
                "dns",
                f"cannot resolve the host of {url} ({os_error.strerror or os_error}); check the "
                "name in [dashboard] instances and this host's DNS",
            )
        if isinstance(os_error, TimeoutError):
            return _timed_out(url)
        return Failure(
            UNREACHABLE,
            "no_route",
            f"cannot reach {url} ({os_error.strerror or os_error}): the host is down or the "
            "network (route, firewall, IPAddressAllow) does not let us through",
        )
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return _timed_out(url)
    if isinstance(exc, ConnectionRefusedError):
        return Failure(DOWN, "connection_refused", f"{url} refused the connection")
    return Failure(UNREACHABLE, "error", f"{url}: {type(exc).__name__}: {exc}")


def _timed_out(url: str) -> Failure:
    return Failure(
        UNREACHABLE,
        "timeout",
        f"{url} did not answer within {CONNECT_TIMEOUT:g} s: the host is down, a firewall "
        "drops the packets, or something there accepts connections but does not speak TLS "
        "or HTTP",
    )


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    inner = getattr(exc, "os_error", None) if reason is None else None
    if inner is not None:
        reason = getattr(inner, "reason", None) or str(inner)
    return str(reason or exc)


def _untrusted(url: str, error: BaseException) -> Failure:
    message = str(getattr(error, "verify_message", "") or error)
    lowered = message.lower()
    if "hostname mismatch" in lowered or "ip address mismatch" in lowered:
        return Failure(
            AUTH_REFUSED,
            "tls_hostname",
            f"{url}: the bridge's certificate is not valid for that host ({message}); put the "
            "name or address of the URL in the certificate's subjectAltName, or use a URL "
            "with a name it lists",
        )
    if "expired" in lowered:
        return Failure(
            AUTH_REFUSED,
            "tls_expired",
            f"{url}: the bridge's certificate has expired ({message}); renew it and reload "
            "xswarm-voice",
        )
    return Failure(
        AUTH_REFUSED,
        "tls_untrusted",
        f"{url}: the bridge's certificate is not trusted ({message}); set [dashboard] ca_file "
        "to the CA that signed it",
    )


def _refused_upgrade(url: str, exc: aiohttp.WSServerHandshakeError) -> Failure:
    if exc.status == 401:
        return Failure(
            AUTH_REFUSED,
            "token_refused",
            f"{url} refused our token (401); give the bridge and the supervisor the same "
            f"{CONTROL_TOKEN_ENV} (or this instance's own token, docs/SECURITY.md)",
        )
    rule = exc.headers.get(REFUSAL_HEADER) if exc.headers else None
    if exc.status == 403 and rule == "source":
        return Failure(
            AUTH_REFUSED,
            "source_refused",
            f"{url} refused our address (403): add the supervisor's network to the bridge's "
            "[voice.bridge] control_allow",
        )
    if exc.status == 403:
        return Failure(
            AUTH_REFUSED,
            "host_refused",
            f"{url} refused the upgrade (403): the bridge does not answer to that host "
            "name; add it to the bridge's [voice.bridge] server_names or use its IP address",
        )
    if exc.status == 429:
        return Failure(
            AUTH_REFUSED,
            "throttled",
            f"{url} refused us for too many wrong tokens (429); fix the token, the bridge "
            "lets us try again shortly",
        )
    return Failure(
        DOWN,
        "http_error",
        f"{url} refused the WebSocket upgrade (HTTP {exc.status} {exc.message}); is that the "
        "bridge's /control, on the bridge's port?",
    )


class Upstream:
    """The reconnecting subscription to one instance; runs as one task until ``stop``."""

    def __init__(
        self,
        name: str,
        url: str,
        session: aiohttp.ClientSession,
        token: Callable[[], str | None],
        on_connected: Callable[[str], None],
        on_message: Callable[[str, dict[str, Any]], None],
        on_disconnected: Callable[[str, str], None],
        silence_limit: Callable[[], float],
        tls: Callable[[], ssl.SSLContext | None] = lambda: None,
    ) -> None:
        self.name = name
        self.url = url
        self._session = session
        self._token = token
        self._on_connected = on_connected
        self._on_message = on_message
        self._on_disconnected = on_disconnected
        self._silence_limit = silence_limit
        # The client context for wss:// ([dashboard] ca_file), read per attempt: a reload
        # that changes the CA applies at the next connection. None: the system's CAs.
        self._tls = tls
        # Why the last attempt failed or the last connection ended; None while connected.
        self.failure: Failure | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Event loop time of the last message (the silence watchdog reads it).
        self._heard = 0.0
        self.connects = 0
        self.failures = 0
        self.messages = 0
        self.bad_messages = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"upstream {self.name}")

    async def stop(self) -> None:
        """Close the connection and end the task; idempotent."""
        self._stopping.set()
        if self._ws is not None and not self._ws.closed:
            await self._ws.close(code=1001, message=b"supervisor stopping")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def send(self, command: Command) -> bool:
        """Send a command to the bridge; False when not connected (nothing is queued)."""
        ws = self._ws
        if ws is None or ws.closed:
            return False
        try:
            await ws.send_str(json.dumps(command.encode()))
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            return False
        return True

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        """Open the control WebSocket: TCP, TLS for wss:// (verified, hostname included), the
        upgrade with our bearer token; all of it within CONNECT_TIMEOUT."""
        # Read per attempt: a reload that rotates the control token applies at the next
        # connection. This is the bridges' token, never the operators'.
        token = self._token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        context = self._tls() if self.url.startswith("wss:") else None
        return await asyncio.wait_for(
            self._session.ws_connect(
                self.url,
                headers=headers,
                max_msg_size=MAX_UPSTREAM_MESSAGE,
                autoping=True,
                ssl=context if context is not None else True,
            ),
            CONNECT_TIMEOUT,
        )

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            failure = Failure(DOWN, "closed", "connection closed")
            try:
                async with await self._connect() as ws:
                    self._ws = ws
                    self.connects += 1
                    attempt = 0
                    self.failure = None
                    log.info("connected to %s (%s)", self.name, self.url)
                    self._on_connected(self.name)
                    failure = await self._read(ws)
            except asyncio.CancelledError:
                raise
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                failure = classify_failure(self.url, exc)
            finally:
                self._ws = None
            if self._stopping.is_set():
                return
            self.failures += 1
            previous, self.failure = self.failure, failure
            self._on_disconnected(self.name, failure.reason)
            if attempt == 0 or previous is None or previous.code != failure.code:
                log.warning(
                    "instance %s is %s (%s): %s",
                    self.name,
                    failure.state,
                    failure.code,
                    failure.reason,
                )
            delay = backoff_delay(attempt)
            attempt += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _watch_silence(self, ws: aiohttp.ClientWebSocketResponse, why: list[Failure]) -> None:
        """Close a connection silent for the silence limit (and say so in ``why``).

        A watchdog rather than a timeout on every receive: a bridge sends thousands of
        messages a second, and arming a timer for each was a tenth of the supervisor's CPU.
        """
        loop = asyncio.get_running_loop()
        while not ws.closed:
            limit = self._silence_limit()
            await asyncio.sleep(limit / 4)
            if loop.time() - self._heard >= limit:
                silent = f"no message from {self.url} for {limit:.1f} s; reconnecting"
                why.append(Failure(UNREACHABLE, "silent", silent))
                await ws.close(code=1001, message=b"silent too long")
                return

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> Failure:
        """Pump messages until the connection ends; returns why it ended."""
        loop = asyncio.get_running_loop()
        self._heard = loop.time()
        silent: list[Failure] = []
        watchdog = asyncio.create_task(self._watch_silence(ws, silent))
        try:
            return await self._pump(ws, loop, silent)
        finally:
            watchdog.cancel()

    async def _pump(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        loop: asyncio.AbstractEventLoop,
        silent: list[Failure],
    ) -> Failure:
        while True:
            msg = await ws.receive()
            self._heard = loop.time()
            if silent:
                return silent[0]
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.messages += 1
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    data = None
                if not isinstance(data, dict) or not isinstance(data.get("type"), str):
                    self.bad_messages += 1
                    log.warning("instance %s sent a message that is not a JSON event", self.name)
                    continue
                try:
                    self._on_message(self.name, data)
                except Exception:
                    # A message we cannot digest must not end the subscription.
                    self.bad_messages += 1
                    log.exception(
                        "instance %s: failed to apply a %r message",
                        self.name,
                        str(data.get("type"))[:40],
                    )
            elif msg.type in _CLOSED:
                code = ws.close_code
                return Failure(DOWN, "closed", f"{self.url} closed the connection (code {code})")
            elif msg.type == aiohttp.WSMsgType.ERROR:
                return classify_failure(self.url, ws.exception() or ConnectionError("error"))
