"""A carrier's JSON media stream as a call: the one transport every carrier shares.

Twilio, Telnyx, Plivo and Exotel each send the same things in their own dialect
(``xswarm.protocol`` ``twilio``, ``telnyx``, ``plivo``, ``exotel``, each a
``media_stream.Dialect``): a start naming the stream and its audio format, 20 ms-ish frames of
telephone audio (8 kHz, or the 16 or 24 kHz a wideband stream names), DTMF, a stop. This
session does the rest once for all of them: the start is admitted to the engine, caller audio
is decoded by its ``xswarm.audio.wire`` codec, resampled to the engine's rate and dropped when
it arrives stale; engine output is resampled to the stream's rate, cut into 20 ms frames,
paced and written pre-framed (``write_text_frame``) with the write-buffer check of
``CallSession``. A carrier transport is then a dialect, a name and the upgrade's auth
(``xswarm.bridge.twilio_media``, ``xswarm.bridge.carriers``).
"""

from __future__ import annotations

import time

import numpy as np
from aiohttp import WSMsgType, web

from xswarm.audio import wire
from xswarm.audio.resample import StreamResampler
from xswarm.bridge.call import CallState
from xswarm.bridge.host import CallHost
from xswarm.bridge.session import (
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN,
    CLOSE_UNSUPPORTED,
    CallClosed,
    CallSession,
)
from xswarm.errors import ProtocolError
from xswarm.protocol import control
from xswarm.protocol import media_stream as ms

# How early a paced frame may go: half the pacer's period, so it is never a whole one late.
PACE_SLACK_SECONDS = 0.0025
# Distinct unknown event names logged per call; the rest are only counted (a flood of
# invented names must not drown the journal, whose rate limit would drop real messages).
MAX_UNKNOWN_LOGGED = 4


class MediaStreamSession(CallSession):
    """One call over a carrier's media stream; subclasses name the ``dialect``."""

    dialect: ms.Dialect

    def __init__(self, host: CallHost, request: web.Request, ws: web.WebSocketResponse) -> None:
        super().__init__(host, request, ws)
        self._quality = resampler_quality(host.config.bridge.resampler_quality, host.engine.name)
        # The stream's rate and its resamplers, known from the start event on.
        self.sample_rate = wire.SAMPLE_RATE
        self._upsample: StreamResampler | None = None
        self._downsample: StreamResampler | None = None
        self._pending = np.zeros(0, dtype=np.float32)
        self.codec: wire.WireCodec | None = None
        self._frame_samples = wire.FRAME_SAMPLES
        self._frame_bytes = wire.FRAME_SAMPLES
        self.outbound: ms.Outbound | None = None
        # Due frames held until the carrier's smallest clean message is reached (Exotel).
        self._gathered = bytearray()
        self._min_outbound_bytes = 0
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
        stream_name = self.dialect.stream_name or f"{self.dialect.carrier}'s media stream"
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
                if await self._handle(self.dialect.parse(message.data)):
                    return "caller_hangup"
            elif message.type == WSMsgType.BINARY:
                raise ProtocolError(
                    f"binary message: {stream_name} sends JSON text", CLOSE_UNSUPPORTED
                )
            elif message.type == WSMsgType.ERROR:
                exc = self.ws.exception()
                if getattr(exc, "code", None) == CLOSE_TOO_BIG:
                    return "protocol_error"
                return "disconnected"
            else:
                # CLOSE/CLOSING/CLOSED: a clean close after stop is a hang-up, else a vanish.
                return "caller_hangup" if message.type == WSMsgType.CLOSE else "disconnected"

    async def _handle(self, event: ms.Event) -> bool:
        """Apply one event; True when the caller has hung up."""
        if isinstance(event, ms.Media):
            if self.call.state is CallState.ADMITTED or self._upsample is None:
                raise ProtocolError("media before start: send the start event first", CLOSE_POLICY)
            if self.call.state is not CallState.STARTED or not event.inbound:
                return False  # the call is ending, or the carrier echoes our own track
            arrived = time.monotonic()
            self.note_media()
            if event.timestamp_ms is not None and self.is_stale(event.timestamp_ms, arrived):
                self.spend_audio(0.0)
                return False
            codec = self.codec
            assert codec is not None  # set with the resamplers at start
            self.spend_audio(len(event.payload) / codec.sample_bytes / self.sample_rate)
            pcm = self._upsample.process(codec.decode(event.payload))
            speech_ms = self.call.push_audio(pcm, arrived)
            if speech_ms is not None:
                self.host.publish(control.UserSpeech(self.call.call_id, speech_ms))
            await self.host.serve_arrived(self.call)
            return False
        if isinstance(event, ms.Start):
            return self._start(event)
        if isinstance(event, ms.Stop):
            return True
        if isinstance(event, ms.Dtmf):
            if self.call.state is CallState.STARTED:
                self.host.publish(control.Dtmf(self.call.call_id, event.digit))
            return False
        if isinstance(event, ms.Unknown):
            self._note_unknown(event.event)
        return False  # connected, marks played, audio cleared: nothing to do

    def _note_unknown(self, name: str) -> None:
        self.host.count_unknown_event()
        if name in self._unknown_logged or len(self._unknown_logged) >= MAX_UNKNOWN_LOGGED:
            return
        self._unknown_logged.add(name)
        self.log.info("ignoring unknown %s event %r", self.dialect.carrier, name)

    def _start(self, event: ms.Start) -> bool:
        if self.call.state is not CallState.ADMITTED:
            raise ProtocolError("a second start event on one stream", CLOSE_POLICY)
        self.check_start(event)
        self.codec = wire.CODECS[event.encoding]
        self.sample_rate = event.sample_rate
        self._frame_samples = wire.frame_samples(event.sample_rate)
        self._frame_bytes = self._frame_samples * self.codec.sample_bytes
        min_samples = self.dialect.min_outbound_ms * event.sample_rate // 1000
        self._min_outbound_bytes = max(
            self.dialect.min_outbound_bytes, min_samples * self.codec.sample_bytes
        )
        engine_rate = self.host.engine.sample_rate
        # Padded starts keep chunk and frame boundaries aligned: otherwise the resampler's
        # hold-back makes every frame wait for the next 20 ms chunk, each way.
        self._upsample = StreamResampler(
            event.sample_rate, engine_rate, self._quality, pad_start=True
        )
        self._downsample = StreamResampler(
            engine_rate, event.sample_rate, self._quality, pad_start=True
        )
        self.call.stream_sid = event.stream_id
        self.call.call_sid = event.call_id
        caller = event.caller or event.parameters.get("caller") or None
        self.call.caller = caller[:128] if caller else None
        self.call.callee = event.callee[:128] if event.callee else None
        self.outbound = self.dialect.outbound(event)
        if not self.begin():
            raise ProtocolError("no engine slot free; try again", CLOSE_TRY_AGAIN)
        self.note_media()
        return False

    def check_start(self, event: ms.Start) -> None:
        """Raise ProtocolError when the carrier's start must not open a call (Twilio checks
        its stream token here); every start is taken by default."""

    async def deliver(self, pcm: np.ndarray | None, text: str, latency_s: float | None) -> None:
        if text:
            self.host.publish(control.Text(self.call.call_id, text))
        if pcm is None or self.outbound is None or self.codec is None or self._downsample is None:
            return
        telephone = self._downsample.process(pcm)
        pending = np.concatenate((self._pending, telephone)) if len(self._pending) else telephone
        whole = len(pending) - len(pending) % self._frame_samples
        self._pending = pending[whole:]
        self.call.note_output(pcm, latency_s)
        if whole == 0:
            return
        payload = self.codec.encode(pending[:whole])
        step = self._frame_bytes
        output = self.call.output
        if not output.paced and not len(output) and not self._min_outbound_bytes:
            # Unpaced and nothing queued: every frame is due now (waited 0), so it skips
            # the pacer's queue and goes straight to the wire.
            outbound = self.outbound
            for i in range(0, len(payload), step):
                if self.writable():
                    self.write_text_frame(outbound.media_bytes(payload[i : i + step]))
                    self.call.frames_out += 1
                    self.call.output_wait.add(0.0)
            return
        now = time.monotonic()
        output.push([payload[i : i + step] for i in range(0, len(payload), step)], now)
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
        least = self._min_outbound_bytes
        for payload, waited in due:
            if not self.writable():
                continue
            if least:
                self._gathered += payload
                if len(self._gathered) >= least:
                    self.write_text_frame(self.outbound.media_bytes(bytes(self._gathered)))
                    self._gathered.clear()
            else:
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
