"""The dashboard's link to the supervisor's operator API (``WS /ws``, docs/SUPERVISOR_API.md).

The wire format (building commands, decoding answers, the backoff schedule) is plain functions
with no I/O. ``SupervisorLink.run`` is the connection loop the app runs as an exclusive
worker: authenticate, subscribe, post every message up to the app, and after any loss wait
and try again, forever. Only a refused token stops it, because retrying the same token only
earns the growing delay the supervisor gives bad tokens; the operator retries with ``r``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
from textual.message import Message

from xswarm.protocol import operator
from xswarm.protocol.control import suggestion_problem
from xswarm.tui.messages import BadSupervisorMessage, ConnectionChanged, SupervisorMessage

AUTH_TIMEOUT_S = 10.0
HEARTBEAT_S = 5.0
MAX_MESSAGE_BYTES = 32 << 20


class Backoff:
    """Delays between reconnection attempts: doubling from ``initial`` up to ``cap``."""

    def __init__(self, initial: float = 0.25, cap: float = 5.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


def decode(raw: str | bytes) -> dict[str, Any]:
    """One supervisor message as a dict; ValueError names what is wrong with it."""
    if isinstance(raw, bytes):
        raise ValueError(f"binary message of {len(raw)} bytes; the API sends JSON text")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(data, dict):
        raise ValueError(f"a JSON {type(data).__name__}, expected an object")
    if not isinstance(data.get("type"), str):
        raise ValueError("an object without a string 'type'")
    return data


def auth_message(token: str) -> dict[str, Any]:
    return operator.Auth(token).encode()


def subscribe_message() -> dict[str, Any]:
    """Subscribe asking for batches: at fleet scale, one message a second, not thousands."""
    return operator.Subscribe(batch=True).encode()


def watch_message(call_ids: list[str]) -> dict[str, Any]:
    """The calls on the operator's screens: their updates come every batch, the rest slower."""
    return operator.Watch(tuple(call_ids[: operator.MAX_WATCHED])).encode()


def inject_message(
    call_id: str, text: str, request_id: str, priority: str = "normal"
) -> dict[str, Any]:
    """An ``inject_suggestion`` command; refuses what the supervisor would refuse anyway."""
    text = text.strip()
    problem = suggestion_problem(text, priority)
    if problem is not None:
        raise ValueError(f"cannot send the suggestion: {problem}")
    return operator.InjectSuggestion(
        text, priority=priority, call_id=call_id, request_id=request_id
    ).encode()


def hangup_message(call_id: str) -> dict[str, Any]:
    return operator.Hangup(call_id).encode()


class AuthRefused(Exception):
    """The supervisor said no to our token."""


class SupervisorLink:
    """One operator connection to the supervisor, reconnecting until told to stop."""

    def __init__(
        self,
        url: str,
        token: str,
        post: Callable[[Message], bool],
        backoff: Backoff | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.url = url
        self.token = token
        self.post = post
        self.backoff = backoff or Backoff()
        self.max_message_bytes = max_message_bytes
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._wake = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def send(self, payload: dict[str, Any]) -> bool:
        """Send one command; False when there is no live connection to send it on."""
        ws = self._ws
        if ws is None or ws.closed:
            return False
        try:
            await ws.send_str(json.dumps(payload))
        except (ConnectionError, aiohttp.ClientError):
            return False
        return True

    def retry_now(self) -> None:
        """Cut the current backoff wait short (the operator pressed ``r``)."""
        self._wake.set()

    async def close(self) -> None:
        ws = self._ws
        if ws is not None and not ws.closed:
            await ws.close()

    async def run(self) -> None:
        """Connect, authenticate, subscribe and stream, forever; returns only on a refused token."""
        async with aiohttp.ClientSession() as session:
            while True:
                self.post(ConnectionChanged("connecting", f"connecting to {self.url}"))
                try:
                    reason = await self._session(session)
                except AuthRefused as exc:
                    self.post(ConnectionChanged("refused", str(exc)))
                    return
                except aiohttp.WSServerHandshakeError as exc:
                    if exc.status in (401, 403):
                        self.post(ConnectionChanged("refused", _refusal(f"HTTP {exc.status}")))
                        return
                    reason = f"the supervisor answered HTTP {exc.status} to the upgrade"
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    reason = _describe_failure(self.url, exc)
                finally:
                    self._ws = None
                delay = self.backoff.next_delay()
                self.post(
                    ConnectionChanged(
                        "down",
                        f"{reason}; retrying in {delay:.1f}s (attempt {self.backoff.attempt})",
                    )
                )
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                except TimeoutError:
                    pass

    async def _session(self, session: aiohttp.ClientSession) -> str:
        async with session.ws_connect(
            self.url, heartbeat=HEARTBEAT_S, max_msg_size=self.max_message_bytes, autoping=True
        ) as ws:
            self._ws = ws
            await ws.send_str(json.dumps(auth_message(self.token)))
            greeting = await self._await_auth(ws)
            await ws.send_str(json.dumps(subscribe_message()))
            self.backoff.reset()
            self.post(ConnectionChanged("up", greeting))
            async for frame in ws:
                if frame.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    try:
                        self.post(SupervisorMessage(decode(frame.data)))
                    except ValueError as exc:
                        self.post(BadSupervisorMessage(str(exc)))
                    # A flush arrives as several batches at once: let keys in between them.
                    await asyncio.sleep(0)
                elif frame.type == aiohttp.WSMsgType.ERROR:
                    return f"the connection failed: {frame.data or ws.exception()}"
            code = ws.close_code
            if code == 1008:
                return "the supervisor closed the connection for a policy violation (1008)"
            return f"the supervisor closed the connection (code {code})"

    async def _await_auth(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Wait for ``auth_result``; whatever else comes first is dropped."""
        async with asyncio.timeout(AUTH_TIMEOUT_S):
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = decode(frame.data)
                except ValueError as exc:
                    self.post(BadSupervisorMessage(str(exc)))
                    continue
                if data["type"] != operator.AuthResult.TYPE:
                    continue
                result = operator.AuthResult.decode(data)
                if result.success:
                    return result.message or "authenticated"
                raise AuthRefused(_refusal(result.message or "no reason given"))
        if ws.close_code == 1008:
            raise AuthRefused(_refusal("connection closed with 1008"))
        raise ConnectionError(
            f"the supervisor closed the connection before auth_result (code {ws.close_code})"
        )


def _refusal(detail: str) -> str:
    return (
        f"the supervisor refused the token ({detail}); pass --token-file or set "
        "XSWARM_SUPERVISOR_TOKEN to the supervisor's token, then press r to retry"
    )


def _describe_failure(url: str, exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer from {url} in time"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return (
                f"cannot reach the supervisor at {url}: connection refused "
                "(is xswarm-dashboard running? check --url)"
            )
        return f"cannot reach the supervisor at {url} ({exc.os_error.strerror or exc.os_error})"
    text = str(exc) or type(exc).__name__
    return f"lost the supervisor at {url}: {text}"
