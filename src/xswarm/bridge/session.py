"""What every transport's call session shares: admission, the engine slot, sending, ending.

A transport (Twilio, Moshi) subclasses ``CallSession``: it parses what its peer sends and
turns engine output into its peer's format. Sending never blocks the tick: before each write
we look at the socket's write buffer, and a peer that stops reading has frames dropped
(counted) and, if it stays stuck, is closed as ``slow_client``. So a slow client neither grows
memory nor stalls other calls.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import numpy as np
from aiohttp import web

from xswarm.bridge.call import WIRE_FRAME_SECONDS, Call, CallState, OutputPacer
from xswarm.bridge.host import CALL_HOST, CallHost
from xswarm.logs import CallLogger

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
# How long a peer may take to start the call after the upgrade.
START_TIMEOUT_SECONDS = 10.0


class CallSession:
    """One call's connection; the call's lifecycle is ``self.call.state`` (see ``CallState``)."""

    transport_name = "unknown"

    def __init__(self, host: CallHost, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.host = host
        self.request = request
        self.ws = ws
        remote = request.remote or "unknown"
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer and len(peer) >= 2:
            remote = f"{peer[0]}:{peer[1]}"
        self.call = Call(self.transport_name, remote, host.engine.frame_samples)
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

    # -- lifecycle -------------------------------------------------------------------------

    def begin(self) -> bool:
        """Attach to the engine and announce the call; False when the engine has no slot."""
        if not self.host.start_call(self):
            return False
        self.log.info(
            "call started: %s from %s%s",
            self.transport_name,
            self.call.remote,
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
        self.host.end_call(self, end_reason)

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
    refusal = host.admit()
    if refusal is not None:
        return refuse(503, refusal.reason, retry_after=refusal.retry_after)
    session: CallSession | None = None
    try:
        ws = web.WebSocketResponse(
            max_msg_size=host.config.bridge.max_message_bytes, compress=False
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
        host.release()


def refuse(status: int, reason: str, retry_after: int | None = None) -> web.Response:
    """An upgrade we refuse: HTTP status plus a JSON reason the client can show."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response({"error": reason}, status=status, headers=headers)
