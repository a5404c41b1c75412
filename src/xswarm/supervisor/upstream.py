"""One subscription per voice instance: connect to its ``WS /control``, read forever, reconnect.

The supervisor only pulls: a bridge with no subscriber runs its calls unchanged, and a bridge
that is down costs us one refused connection per backoff step. The backoff is exponential with
full jitter and capped at 2 s, so an instance that comes back is seen again within about two
seconds while a fleet of supervisors does not reconnect in lockstep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable
from typing import Any

import aiohttp

from xswarm.protocol.auth import CONTROL_TOKEN_ENV
from xswarm.protocol.control import Command

log = logging.getLogger("xswarm.supervisor.upstream")

BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0
MAX_UPSTREAM_MESSAGE = 4 << 20
_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before reconnect ``attempt`` (0-based): jittered, at most BACKOFF_CAP."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt, 30))
    return (rng or random).uniform(ceiling / 2, ceiling)


def describe_failure(url: str, exc: BaseException) -> str:
    """One line saying why a connection to a bridge failed, and what to do about it."""
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        if exc.status == 401:
            return (
                f"{url} refused our token (401); give the bridge and the supervisor the same "
                f"{CONTROL_TOKEN_ENV}"
            )
        if exc.status == 403:
            return (
                f"{url} refused the upgrade (403): the bridge does not answer to that host "
                "name; add it to the bridge's [voice.bridge] server_names or use its IP address"
            )
        return f"{url} refused the WebSocket upgrade (HTTP {exc.status} {exc.message})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return f"{url} refused the connection; is xswarm-voice running there?"
        return f"cannot connect to {url}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, asyncio.TimeoutError):
        return f"{url} did not answer in time"
    return f"{url}: {type(exc).__name__}: {exc}"


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
    ) -> None:
        self.name = name
        self.url = url
        self._session = session
        self._token = token
        self._on_connected = on_connected
        self._on_message = on_message
        self._on_disconnected = on_disconnected
        self._silence_limit = silence_limit
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

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            reason = "connection closed"
            # Read per attempt: a reload that rotates the control token applies at the next
            # connection. This is the bridges' token, never the operators'.
            token = self._token()
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                async with self._session.ws_connect(
                    self.url,
                    headers=headers,
                    max_msg_size=MAX_UPSTREAM_MESSAGE,
                    autoping=True,
                ) as ws:
                    self._ws = ws
                    self.connects += 1
                    attempt = 0
                    log.info("connected to %s (%s)", self.name, self.url)
                    self._on_connected(self.name)
                    reason = await self._read(ws)
            except asyncio.CancelledError:
                raise
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                reason = describe_failure(self.url, exc)
            finally:
                self._ws = None
            if self._stopping.is_set():
                return
            self.failures += 1
            self._on_disconnected(self.name, reason)
            if attempt == 0:
                log.warning("instance %s is down: %s", self.name, reason)
            delay = backoff_delay(attempt)
            attempt += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _watch_silence(self, ws: aiohttp.ClientWebSocketResponse, why: list[str]) -> None:
        """Close a connection silent for the silence limit (and say so in ``why``).

        A watchdog rather than a timeout on every receive: a bridge sends thousands of
        messages a second, and arming a timer for each was a tenth of the supervisor's CPU.
        """
        loop = asyncio.get_running_loop()
        while not ws.closed:
            limit = self._silence_limit()
            await asyncio.sleep(limit / 4)
            if loop.time() - self._heard >= limit:
                why.append(f"no message from {self.url} for {limit:.1f} s; reconnecting")
                await ws.close(code=1001, message=b"silent too long")
                return

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Pump messages until the connection ends; returns why it ended."""
        loop = asyncio.get_running_loop()
        self._heard = loop.time()
        silent: list[str] = []
        watchdog = asyncio.create_task(self._watch_silence(ws, silent))
        try:
            return await self._pump(ws, loop, silent)
        finally:
            watchdog.cancel()

    async def _pump(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        loop: asyncio.AbstractEventLoop,
        silent: list[str],
    ) -> str:
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
                return f"{self.url} closed the connection (code {code})"
            elif msg.type == aiohttp.WSMsgType.ERROR:
                return describe_failure(self.url, ws.exception() or ConnectionError("error"))
