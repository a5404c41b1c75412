"""``WS /twilio``: Twilio Media Streams, bidirectional, as Twilio documents it.

In: connected, start, media (20 ms of 8 kHz mu-law), mark, dtmf, stop. Out: media, mark,
clear, every one carrying the stream's ``streamSid``. The wire format is parsed by the
sans-I/O ``xswarm.protocol.twilio``; this module only moves audio between it and the call.
"""

from __future__ import annotations

import os
import time
from urllib.parse import urlsplit

import numpy as np
from aiohttp import WSMsgType, web

from xswarm.audio import mulaw
from xswarm.audio.resample import StreamResampler
from xswarm.bridge.call import CallState
from xswarm.bridge.host import CALL_HOST, CallHost
from xswarm.bridge.session import (
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN,
    CLOSE_UNSUPPORTED,
    CallClosed,
    CallSession,
    refuse,
    serve_call,
)
from xswarm.errors import ProtocolError
from xswarm.protocol import control, twilio

TELEPHONE_RATE = 8000
# How early a paced frame may go: half the pacer's period, so it is never a whole one late.
PACE_SLACK_SECONDS = 0.0025
# Distinct unknown event names logged per call; the rest are only counted (a flood of
# invented names must not drown the journal, whose rate limit would drop real messages).
MAX_UNKNOWN_LOGGED = 4


class TwilioSession(CallSession):
    transport_name = "twilio"

    def __init__(self, host: CallHost, request: web.Request, ws: web.WebSocketResponse) -> None:
        super().__init__(host, request, ws)
        quality = resampler_quality(host.config.bridge.resampler_quality, host.engine.name)
        rate = host.engine.sample_rate
        # Padded starts keep chunk and frame boundaries aligned: otherwise the resampler's
        # hold-back makes every frame wait for the next 20 ms chunk, each way.
        self._upsample = StreamResampler(TELEPHONE_RATE, rate, quality, pad_start=True)
        self._downsample = StreamResampler(rate, TELEPHONE_RATE, quality, pad_start=True)
        self._pending = np.zeros(0, dtype=np.float32)
        self.outbound: twilio.Outbound | None = None
        self._unknown_logged: set[str] = set()

    async def run(self) -> None:
        """Receive until the peer stops; every exit path records how the call ended."""
        reason = "disconnected"
        try:
            reason = await self._receive()
        except ProtocolError as exc:
            self.log.warning("protocol error: %s", exc)
            await self.hangup("protocol_error", exc.close_code, str(exc))
            return
        except CallClosed as closed:
            await self.hangup(closed.reason, closed.code, closed.message)
            return
        finally:
            self.finish(reason)

    async def _receive(self) -> str:
        while True:
            try:
                message = await self.receive()
            except TimeoutError:
                if self.call.state is CallState.ADMITTED:
                    raise ProtocolError(
                        f"no start event within {self.first_media_timeout:g} s of connecting",
                        CLOSE_POLICY,
                    ) from None
                raise self.inactive() from None
            if message.type == WSMsgType.TEXT:
                self.spend_message(len(message.data))
                if await self._handle(twilio.parse(message.data)):
                    return "caller_hangup"
            elif message.type == WSMsgType.BINARY:
                raise ProtocolError(
                    "binary message: Twilio Media Streams sends JSON text", CLOSE_UNSUPPORTED
                )
            elif message.type == WSMsgType.ERROR:
                exc = self.ws.exception()
                if getattr(exc, "code", None) == CLOSE_TOO_BIG:
                    return "protocol_error"
                return "disconnected"
            else:
                # CLOSE/CLOSING/CLOSED: a clean close after stop is a hang-up, else a vanish.
                return "caller_hangup" if message.type == WSMsgType.CLOSE else "disconnected"

    async def _handle(self, event: twilio.Event) -> bool:
        """Apply one event; True when the caller has hung up."""
        if isinstance(event, twilio.Media):
            if self.call.state is CallState.ADMITTED:
                raise ProtocolError("media before start: send the start event first", CLOSE_POLICY)
            if self.call.state is not CallState.STARTED:
                return False  # the call is ending: its counters are final
            arrived = time.monotonic()
            self.note_media()
            if self.is_stale(event.timestamp_ms, arrived):
                self.spend_audio(0.0)
                return False
            self.spend_audio(len(event.payload) / TELEPHONE_RATE)
            pcm = self._upsample.process(mulaw.decode(event.payload))
            speech_ms = self.call.push_audio(pcm, arrived)
            if speech_ms is not None:
                self.host.publish(control.UserSpeech(self.call.call_id, speech_ms))
            await self.host.serve_arrived(self.call)
            return False
        if isinstance(event, twilio.Start):
            return await self._start(event)
        if isinstance(event, twilio.Stop):
            return True
        if isinstance(event, twilio.Dtmf):
            if self.call.state is CallState.STARTED:
                self.host.publish(control.Dtmf(self.call.call_id, event.digit))
            return False
        if isinstance(event, twilio.Unknown):
            self._note_unknown(event.event)
        return False

    def _note_unknown(self, name: str) -> None:
        self.host.count_unknown_event()
        if name in self._unknown_logged or len(self._unknown_logged) >= MAX_UNKNOWN_LOGGED:
            return
        self._unknown_logged.add(name)
        self.log.info("ignoring unknown Twilio event %r", name)

    async def _start(self, event: twilio.Start) -> bool:
        if self.call.state is not CallState.ADMITTED:
            raise ProtocolError("a second start event on one stream", CLOSE_POLICY)
        token = os.environ.get("TWILIO_AUTH_TOKEN")
        if self.host.config.bridge.twilio_stream_token and token:
            problem = twilio.stream_token_problem(token, event, time.time())
            if problem is not None:
                self.host.count_rejection("auth")
                raise ProtocolError(f"stream token refused: {problem}", CLOSE_POLICY)
        self.call.stream_sid = event.stream_sid
        self.call.call_sid = event.call_sid
        caller = event.custom_parameters.get("caller") or event.custom_parameters.get("From")
        self.call.caller = caller[:128] if isinstance(caller, str) else None
        self.call.callee = event.custom_parameters.get("To", "")[:128] or None
        self.outbound = twilio.Outbound(event.stream_sid)
        if not self.begin():
            raise ProtocolError("no engine slot free; try again", CLOSE_TRY_AGAIN)
        self.note_media()
        return False

    async def deliver(self, pcm: np.ndarray | None, text: str, latency_s: float | None) -> None:
        if text:
            self.host.publish(control.Text(self.call.call_id, text))
        if pcm is None or self.outbound is None:
            return
        telephone = self._downsample.process(pcm)
        pending = np.concatenate((self._pending, telephone)) if len(self._pending) else telephone
        whole = len(pending) - len(pending) % twilio.FRAME_BYTES
        self._pending = pending[whole:]
        self.call.note_output(pcm, latency_s)
        if whole == 0:
            return
        payload = mulaw.encode(pending[:whole])
        step = twilio.FRAME_BYTES
        output = self.call.output
        if not output.paced and not len(output) and self.outbound is not None:
            # Unpaced and nothing queued: every frame is due now (waited 0), so it skips
            # the pacer's queue and goes straight to the wire.
            for i in range(0, whole, step):
                if self.writable():
                    self.write_text_frame(self.outbound.media_bytes(payload[i : i + step]))
                    self.call.frames_out += 1
                    self.call.output_wait.add(0.0)
            return
        now = time.monotonic()
        output.push([payload[i : i + step] for i in range(0, whole, step)], now)
        await self.flush(now)

    async def flush(self, now: float) -> None:
        """Send the frames of ``call.output`` that are due; each one the peer cannot take
        is dropped and counted (``writable``)."""
        output = self.call.output
        before = output.late_dropped
        due = output.due(now, slack=PACE_SLACK_SECONDS)
        if output.late_dropped != before:
            self.call.drop("output_late", output.late_dropped - before)
        if self.outbound is None:
            return
        for payload, waited in due:
            if not self.writable():
                continue
            self.write_text_frame(self.outbound.media_bytes(payload))
            self.call.frames_out += 1
            self.call.output_wait.add(waited)


def resampler_quality(configured: str, engine: str) -> str:
    """``auto``: a band-limiting FIR (1.5 ms each way) for a model's full-band voice, which
    would otherwise alias into the phone band; the cheaper QQ (0.2 ms) for echo, whose audio
    came from the phone band in the first place."""
    if configured != "auto":
        return configured
    return "QQ" if engine == "echo" else "FIR"


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
