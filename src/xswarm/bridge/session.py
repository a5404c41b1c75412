"""What every transport's call session shares: admission, the engine slot, sending, ending.

A transport (Twilio, Moshi) subclasses ``CallSession``: it parses what its peer sends and
turns engine output into its peer's format. Sending never blocks the tick: before each write
we look at the socket's write buffer, and a peer that stops reading has frames dropped
(counted) and, if it stays stuck, is closed as ``slow_client``. So a slow client neither grows
memory nor stalls other calls.

Receiving is bounded the same way: every message is checked against the call's
``InputBudget`` before it is parsed or buffered (a call over budget ends as ``abuse``), and
every wait for the peer has a deadline: the first media, then caller audio at least every
``inactivity_timeout`` (else the call ends as ``inactive``), with WebSocket pings underneath.
See docs/SECURITY.md, "Budgets and timeouts".
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from typing import Any

import numpy as np
from aiohttp import WSMessage, WSMsgType, web

from xswarm.bridge.call import WIRE_FRAME_SECONDS, Call, CallState, LateFrameFilter, OutputPacer
from xswarm.bridge.host import CALL_HOST, CallHost
from xswarm.config import BridgeSection
from xswarm.logs import CallLogger
from xswarm.protocol.budgets import (
    Exceeded,
    InputBudget,
    Limits,
    call_source,
    forwarded_client,
    trusted_networks,
)

log = logging.getLogger("xswarm.call")

# WebSocket close codes we answer with (RFC 6455 §7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013

# Once its buffers are full, seconds a stuck client may keep dropping frames before we hang up.
SLOW_CLIENT_SECONDS = 2.0
# Kernel send buffer per call: real-time audio queued in the kernel is latency, so keep it
# small (the kernel doubles it) instead of letting autotuning buffer seconds of stale audio.
CALL_SNDBUF_BYTES = 32 * 1024
# What one outbound frame costs in the write buffer, for [voice.bridge] send_queue_frames.
FRAME_WIRE_BYTES = 256
# Caller audio that arrives later than this behind its own timeline is dropped unprocessed.
MAX_INPUT_LAG = 0.2
# How soon the media deadline is looked at again when it passed while a message was handled.
DEADLINE_RECHECK_SECONDS = 0.05


class CallClosed(Exception):
    """The call must end now: ``reason`` for call_ended, ``code`` and ``message`` for the peer."""

    def __init__(self, reason: str, code: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code
        self.message = message


def input_limits(settings: BridgeSection) -> Limits:
    return Limits(
        max_buffered_bytes=settings.max_buffered_input_bytes,
        audio_speed=settings.max_audio_speed,
        audio_burst_seconds=settings.audio_burst_seconds,
        messages_per_second=settings.max_messages_per_second,
    )


class CallSession:
    """One call's connection; the call's lifecycle is ``self.call.state`` (see ``CallState``)."""

    transport_name = "unknown"

    def __init__(self, host: CallHost, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.host = host
        self.request = request
        self.ws = ws
        remote, self.via = remote_of(request, host.config.bridge)
        margin_s = host.config.bridge.tick_margin_ms / 1000
        self.call = Call(
            self.transport_name,
            remote,
            host.engine.frame_samples,
            tick_margin_s=margin_s,
            # Until its jitter is measured, and unless the calls live on the engine (or the
            # last to end there) measured theirs (EngineLoop.attach), a call gets the slack
            # for a frame less a wire frame of it (MOSHI: 60 ms): a miss is a gap the caller
            # hears, a surplus goes in a pause.
            join_slack_s=host.engine.frame_seconds - WIRE_FRAME_SECONDS + margin_s,
        )
        self.log = CallLogger(log, {"call_id": self.call.call_id})
        bridge = host.config.bridge
        # Frames queued in the write buffer wait there: hold no more than max_output_age_ms.
        age_frames = max(2, round(bridge.max_output_age_ms / (WIRE_FRAME_SECONDS * 1000)))
        self._write_limit = min(bridge.send_queue_frames, age_frames) * FRAME_WIRE_BYTES
        self.call.output = OutputPacer(
            bridge.output_preroll_ms / 1000,
            bridge.max_output_age_ms / 1000,
            paced=host.engine.frame_seconds > WIRE_FRAME_SECONDS * 1.5,
        )
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CALL_SNDBUF_BYTES)
            except OSError:
                pass
        self._consecutive_drops = 0
        self._max_drops = max(1, int(SLOW_CLIENT_SECONDS / host.engine.frame_seconds))
        settings = host.config.bridge
        self.budget = InputBudget(input_limits(settings))
        self._late = LateFrameFilter(MAX_INPUT_LAG)
        self.stale_frames = 0
        self.inactivity_timeout = settings.inactivity_timeout
        self.first_media_timeout = settings.first_media_timeout
        self._media_deadline = time.monotonic() + settings.first_media_timeout
        self._watchdog: asyncio.TimerHandle | None = None
        self._receiver: asyncio.Task[Any] | None = None
        self._receiving = False
        self._deadline_hit = False

    # -- lifecycle -------------------------------------------------------------------------

    def begin(self) -> bool:
        """Attach to the engine and announce the call; False when the engine has no slot."""
        if not self.host.start_call(self):
            return False
        self.log.info(
            "call started: %s from %s%s%s",
            self.transport_name,
            self.call.remote,
            f" via {self.via}" if self.via else "",
            f" stream {self.call.stream_sid}" if self.call.stream_sid else "",
        )
        return True

    async def hangup(self, end_reason: str, code: int = CLOSE_NORMAL, message: str = "") -> None:
        """Record why the call ends and close the peer's socket; calling it twice is harmless."""
        if not self.host.end_call(self, end_reason):
            return
        if not self.ws.closed:
            try:
                await asyncio.wait_for(self.ws.close(code=code, message=message.encode()[:120]), 5)
            except (TimeoutError, ConnectionError, RuntimeError):
                pass

    def finish(self, end_reason: str) -> None:
        """The receive loop ended: record the end if nothing else already has."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self.host.end_call(self, end_reason)

    # -- receiving -------------------------------------------------------------------------

    async def receive(self) -> WSMessage:
        """The peer's next message; TimeoutError once the media deadline has passed.

        The deadline is watched by one timer per session (``_watch_deadline``), not by a
        timeout around every receive: at 50 messages a second per call, entering and leaving
        a timeout context per message cost more than the rest of aiohttp's receive."""
        if self._deadline_passed():
            raise TimeoutError
        if self._watchdog is None:
            loop = asyncio.get_running_loop()
            self._receiver = asyncio.current_task()
            self._watchdog = loop.call_at(self._media_deadline, self._watch_deadline)
        self._receiving = True
        try:
            while True:
                message = await self.ws.receive()
                if message.type is WSMsgType.PING:
                    # Answered here, not by aiohttp (autoping off), so that a ping flood is
                    # charged to the message budget like any other message.
                    self.spend_message(len(message.data))
                    await self.ws.pong(message.data)
                elif message.type is not WSMsgType.PONG:
                    return message
        except asyncio.CancelledError:
            task = self._receiver
            if self._deadline_hit and task is not None and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            self._receiving = False

    def _deadline_passed(self) -> bool:
        return self._deadline_hit or time.monotonic() >= self._media_deadline

    def _watch_deadline(self) -> None:
        """The timer behind ``receive``: re-armed for the deadline as media moved it, or,
        once it has passed, cancels the waiting receive (which then raises TimeoutError)."""
        self._watchdog = None
        if self.call.state in (CallState.ENDING, CallState.ENDED):
            return
        loop = asyncio.get_running_loop()
        if time.monotonic() < self._media_deadline:
            self._watchdog = loop.call_at(self._media_deadline, self._watch_deadline)
        elif not self._receiving or self._receiver is None:
            # Busy with a message (or a send): ``receive`` looks at the deadline next time.
            self._watchdog = loop.call_at(
                loop.time() + DEADLINE_RECHECK_SECONDS, self._watch_deadline
            )
        else:
            self._deadline_hit = True
            self._receiver.cancel()

    def inactive(self) -> CallClosed:
        """Why a call whose media deadline passed ends."""
        return CallClosed(
            "inactive",
            CLOSE_POLICY,
            f"inactive: no audio for {self.inactivity_timeout:g} s",
        )

    def note_media(self) -> None:
        """The peer sent caller audio: it has ``inactivity_timeout`` for the next."""
        self._media_deadline = time.monotonic() + self.inactivity_timeout

    def is_stale(self, timestamp_ms: int, arrived: float) -> bool:
        """True when the caller's frame stamped ``timestamp_ms`` is too late to play; it is
        then counted (``input_stale``) and must be dropped before any decoding."""
        if not self._late.is_stale(timestamp_ms, arrived):
            return False
        self.stale_frames += 1
        self.call.frames_in += 1
        self.call.drop("input_stale")
        if self.stale_frames == 1:
            self.log.warning(
                "dropping frames that arrive in a burst over %.0f ms late (bridge overloaded "
                "or network stall)",
                MAX_INPUT_LAG * 1000,
            )
        return True

    def spend_message(self, size: int) -> None:
        """Charge one received message to the budget; CallClosed (abuse) when it is spent."""
        self._check(self.budget.message(size, time.monotonic()))

    def spend_audio(self, seconds: float) -> None:
        """Charge decoded (or dropped) caller audio; CallClosed (abuse) when it is spent."""
        self._check(self.budget.audio(seconds, time.monotonic()))

    def _check(self, exceeded: Exceeded | None) -> None:
        if exceeded is None:
            return
        self.host.count_abuse(exceeded.budget)
        self.log.warning("closing: %s", exceeded.detail)
        raise CallClosed("abuse", exceeded.close_code, exceeded.detail)

    # -- sending ---------------------------------------------------------------------------

    def writable(self) -> bool:
        """False (and the frame is dropped) while the peer is not reading fast enough."""
        transport = self.request.transport
        if self.call.state is not CallState.STARTED or transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > self._write_limit:
            self.call.drop("slow_client")
            self._consecutive_drops += 1
            if self._consecutive_drops == self._max_drops:
                self.log.warning("peer stopped reading for %.0f s; closing", SLOW_CLIENT_SECONDS)
                self.host.spawn(
                    self.hangup("slow_client", CLOSE_POLICY, "client too slow to read audio")
                )
            return False
        self._consecutive_drops = 0
        return True

    def write_text_frame(self, data: bytes) -> None:
        """Send ``data`` (UTF-8 text) as one WebSocket text frame, written straight to the
        socket: the frame aiohttp's ``send_str`` would write (unmasked, unfragmented,
        uncompressed, as this server negotiates), without its per-frame coroutine, encode,
        lock and drain checks. ``writable`` bounds the write buffer, so there is never a
        drain to wait for; a socket that is closed, or a close already sent, drops it."""
        transport = self.request.transport
        if transport is None or transport.is_closing() or self.ws.closed:
            return
        size = len(data)
        if size < 126:
            header = bytes((0x81, size))
        elif size < 65536:
            header = b"\x81\x7e" + size.to_bytes(2, "big")
        else:
            header = b"\x81\x7f" + size.to_bytes(8, "big")
        transport.write(header + data)

    async def send_text(self, data: str) -> None:
        try:
            await self.ws.send_str(data)
        except (ConnectionError, RuntimeError):
            pass

    async def send_bytes(self, data: bytes) -> None:
        try:
            await self.ws.send_bytes(data)
        except (ConnectionError, RuntimeError):
            pass

    async def run(self) -> None:
        """Receive from the peer until the call ends (each transport implements it)."""
        raise NotImplementedError

    async def deliver(self, pcm: np.ndarray | None, text: str, latency_s: float | None) -> None:
        """Engine output for this call, in the peer's format (each transport implements it)."""
        raise NotImplementedError

    async def flush(self, now: float) -> None:
        """Paced output due at ``now``; a transport without a pacer sends in ``deliver``."""


async def serve_call(request: web.Request, session_type: type[CallSession]) -> web.StreamResponse:
    """Admit a call at the upgrade (or answer 503), run its session, and free its place.

    However the session ends, its end is recorded here at the latest, so every call that
    started sends exactly one ``call_ended``.
    """
    host = request.app[CALL_HOST]
    settings = host.config.bridge
    source = source_of(request, settings)
    refusal = host.admit(source)
    if refusal is not None:
        return refuse(refusal.status, refusal.reason, retry_after=refusal.retry_after)
    session: CallSession | None = None
    try:
        ws = web.WebSocketResponse(
            max_msg_size=settings.max_message_bytes,
            compress=False,
            heartbeat=settings.heartbeat,
            autoping=False,  # CallSession.receive answers pings, within the message budget
        )
        await ws.prepare(request)
        session = session_type(host, request, ws)
        await session.run()
        if not ws.closed:
            await asyncio.wait_for(ws.close(), 5)
        return ws
    finally:
        if session is not None:
            session.finish("disconnected")
            session.call.advance(CallState.ENDED)
        host.release(source)


def remote_of(request: web.Request, settings: BridgeSection) -> tuple[str, str | None]:
    """Who is calling, as the call shows it, and the proxy it came through: behind one of
    ``trusted_proxies`` the caller is the address the proxy names (an IP address, or it is not
    believed), otherwise the peer itself (``host:port``)."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not (isinstance(peer, tuple) and len(peer) >= 2):
        return request.remote or "unknown", None
    address = f"{peer[0]}:{peer[1]}"
    proxies = trusted_networks(settings.trusted_proxies)
    client = forwarded_client(str(peer[0]), request.headers.getall("X-Forwarded-For", []), proxies)
    if client is None:
        return address, None
    try:
        ipaddress.ip_address(client)
    except ValueError:
        return address, None
    return client, address


def source_of(request: web.Request, settings: BridgeSection) -> str:
    """The caller's address as ``max_calls_per_source`` counts it (X-Forwarded-For only when
    the peer is one of ``trusted_proxies``)."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    address = str(peer[0]) if isinstance(peer, tuple) and peer else request.remote
    proxies = trusted_networks(settings.trusted_proxies)
    return call_source(address, request.headers.getall("X-Forwarded-For", []), proxies)


def refuse(status: int, reason: str, retry_after: int | None = None) -> web.Response:
    """An upgrade we refuse: HTTP status plus a JSON reason the client can show."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response({"error": reason}, status=status, headers=headers)
