"""The load generator behind `xswarm bench`: N real-time phone calls from one process.

It must never be the bottleneck it is measuring, so the per-frame work is as small as it
can be: every media message is two prebuilt strings (one per frame index, shared by all
calls, and one per call) joined together; one shared deadline timer sends the next frame
on each call every 20 ms; the receive side only timestamps and counts.

Real callers start at random moments, so their 20 ms frames arrive at every phase of the
bridge's tick. The timer models that with ``phases`` groups of calls, each sent at its own
offset within the 20 ms (``phases = 1``: every call at once, a synchronized worst case).

``aligned`` measures by content instead of by message order: the caller's voice is seeded
noise, every reply is kept with its arrival time, and after the run each reply is matched to
the stretch of sent audio it carries (``align_replies``). A frame's latency is then the time
from sending it to the arrival of the reply holding its first sample, and a frame is lost when
its first sample never comes back: a reply that carries silence or someone else's frame does
not hide a loss, as it would when replies are just counted.

``jitter_s`` models a jittery network path: each frame leaves its caller a random 0 to
2 x ``jitter_s`` after its 20 ms slot (so +-``jitter_s`` around a fixed delay), never before
the frame ahead of it, as TCP delivers them. Jittered calls are paced by their own task.

Twilio calls use the prebuilt strings; a Telnyx, Plivo or Exotel call (``carrier``) writes
each media message with its dialect's ``Caller`` from a prebuilt payload, which is cheap
enough for the call counts one loopback bench reaches.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import ipaddress
import json
import math
import os
import random
import resource
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from xswarm.audio import mulaw, wire
from xswarm.client.carrier_call import wire_frames
from xswarm.client.carriers import CallerSide, Carrier
from xswarm.client.common import (
    ClientError,
    Latency,
    describe_failure,
    http_url,
    metric_total,
    sleep_until,
)
from xswarm.errors import ProtocolError
from xswarm.protocol import media_stream, twilio

FRAME_SECONDS = 0.020
MEDIA_HEAD = '{"event":"media","sequenceNumber":"'
OUT_MEDIA_HEAD = '{"event":"media"'  # how twilio.Outbound starts each media message
MAX_CALLS = 5000
MAX_SECONDS = 600.0
END_OF_STREAM = frozenset(
    (
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSING,
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.ERROR,
    )
)


@dataclass(slots=True)
class BenchCall:
    index: int
    stream_sid: str
    call_sid: str
    tail: str = ""
    ws: aiohttp.ClientWebSocketResponse | None = None
    next_frame: int = 0
    sent_at: list[float] = field(default_factory=list)
    received: int = 0
    sending: bool = False
    replies: list[tuple[float, str]] = field(default_factory=list)
    caller: CallerSide | None = None  # a carrier's stream; None: Twilio


@dataclass
class BenchReport:
    calls: int
    seconds: float
    connected: int = 0
    refused: int = 0
    failed: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    closed_early: dict[str, int] = field(default_factory=dict)
    frames_sent: int = 0
    frames_received: int = 0
    lost_frames: int = 0
    round_trip: Latency = field(default_factory=lambda: Latency.of([]))
    late_frames: float | None = None
    dropped_frames: float | None = None
    bridge_cpu_ms_per_call_second: float | None = None
    bench_cpu_ms_per_call_second: float | None = None
    timer_lag_p99_ms: float = math.nan
    timer_lag_max_ms: float = math.nan
    wall_seconds: float = 0.0
    first_sample: Latency | None = None
    content_lost: int | None = None

    def as_dict(self) -> dict[str, Any]:
        def clean(value: float | None) -> float | None:
            return None if value is None or math.isnan(value) else round(value, 3)

        return {
            "calls": self.calls,
            "seconds": self.seconds,
            "connected": self.connected,
            "refused": self.refused,
            "failed": self.failed,
            "refusals": self.refusals,
            "closed_early": self.closed_early,
            "frames_sent": self.frames_sent,
            "frames_received": self.frames_received,
            "lost_frames": self.lost_frames,
            "round_trip_p50_ms": clean(self.round_trip.p50_ms),
            "round_trip_p99_ms": clean(self.round_trip.p99_ms),
            "round_trip_max_ms": clean(self.round_trip.max_ms),
            "late_frames": self.late_frames,
            "dropped_frames": self.dropped_frames,
            "bridge_cpu_ms_per_call_second": clean(self.bridge_cpu_ms_per_call_second),
            "bench_cpu_ms_per_call_second": clean(self.bench_cpu_ms_per_call_second),
            "bench_timer_lag_p99_ms": clean(self.timer_lag_p99_ms),
            "bench_timer_lag_max_ms": clean(self.timer_lag_max_ms),
            "wall_seconds": round(self.wall_seconds, 2),
            "first_sample_p50_ms": clean(self.first_sample.p50_ms) if self.first_sample else None,
            "first_sample_p99_ms": clean(self.first_sample.p99_ms) if self.first_sample else None,
            "first_sample_max_ms": clean(self.first_sample.max_ms) if self.first_sample else None,
            "content_lost_frames": self.content_lost,
        }


def require_loopback(url: str) -> None:
    """The bench opens hundreds of calls: it only ever aims at this machine."""
    host = urlsplit(url).hostname or ""
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise ClientError(f"{url}: cannot resolve {host!r}: {exc.strerror}") from None
    if not all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses):
        raise ClientError(
            f"{url}: xswarm bench only targets loopback (127.0.0.1, ::1, localhost); "
            "run it on the bridge's own machine"
        )


def raise_open_files_limit(calls: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = calls + 64
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise ClientError(
                f"{calls} calls need {needed} open files but the limit is {hard}; "
                f"raise it with `ulimit -n {needed}` or use fewer --calls"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def tone() -> np.ndarray:
    """The caller's voice when no WAV is at hand: one second of 440 Hz at 8 kHz, looped."""
    t = np.arange(8000) / 8000
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def noise(seconds: float, seed: int = 14) -> np.ndarray:
    """The caller's voice for a content-aligned run: white noise at 8 kHz, so that any 20 ms
    of it matches only one place in the call (its autocorrelation is a single spike)."""
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(max(1, round(seconds * 8000)))).clip(-1, 1).astype(np.float32)


# A reply matches a stretch of sent audio when their normalised correlation reaches this:
# mu-law and the resampler round trip keep about 0.95; noise against other noise, 0.1.
MATCH_CORRELATION = 0.6
# How far from where the previous reply left off a reply's audio is looked for, in samples.
SEARCH_SAMPLES = 4000


def align_replies(
    sent: np.ndarray, sent_at: list[float], replies: list[tuple[float, np.ndarray]]
) -> tuple[list[float], int]:
    """Which sent frame's first sample each reply carries: (latencies of the frames whose
    first sample came back, frames whose first sample never did).

    ``sent`` is the 8 kHz audio as sent (mu-law decoded), ``sent_at`` when each 20 ms frame
    went out, ``replies`` the decoded audio of each reply with its arrival time. A reply that
    is silence, or matches nothing, carries no sent sample."""
    frame = twilio.FRAME_BYTES
    frames = len(sent_at)
    first_back: list[float | None] = [None] * frames
    # Silence before the call: a bridge that delays by a few samples returns them first.
    lead = frame
    padded = np.concatenate((np.zeros(lead, dtype=np.float32), sent))
    expected: int | None = None
    for arrived, pcm in replies:
        found = _locate(padded, pcm, expected)
        if found is None:
            continue
        expected = found + len(pcm)
        offset = found - lead
        first = -(-offset // frame)  # the first frame start at or after offset
        for k in range(max(0, first), frames):
            if k * frame >= offset + len(pcm):
                break
            if first_back[k] is None:
                first_back[k] = arrived - sent_at[k]
    latencies = [t for t in first_back if t is not None]
    return latencies, frames - len(latencies)


def _locate(sent: np.ndarray, pcm: np.ndarray, expected: int | None) -> int | None:
    """Where in ``sent`` the reply ``pcm`` comes from, or None."""
    n = len(pcm)
    energy = float(np.dot(pcm, pcm))
    if n == 0 or energy < 1e-6 * n:
        return None

    def score(offset: int) -> float:
        if offset < 0 or offset + n > len(sent):
            return 0.0
        ref = sent[offset : offset + n]
        denom = math.sqrt(energy * float(np.dot(ref, ref)))
        if denom == 0.0:
            return 0.0
        return float(np.dot(pcm, ref)) / denom

    if expected is not None and score(expected) >= MATCH_CORRELATION:
        return expected
    lo = 0 if expected is None else max(0, expected - SEARCH_SAMPLES)
    hi = len(sent) if expected is None else min(len(sent), expected + SEARCH_SAMPLES + n)
    window = sent[lo:hi]
    if len(window) < n:
        return None
    corr = np.correlate(window, pcm, mode="valid")
    best = int(np.argmax(corr))
    return lo + best if score(lo + best) >= MATCH_CORRELATION else None


def report_lines(report: BenchReport) -> list[str]:
    """The report as ``xswarm bench`` prints it, one measure per line."""

    def ms(value: float | None) -> str:
        return "n/a" if value is None or math.isnan(value) else f"{value:.1f}"

    def maybe(value: float | None, unit: str = "") -> str:
        return "n/a (no /metrics)" if value is None else f"{value:g}{unit}"

    refusals = ", ".join(f"{n} x {why}" for why, n in sorted(report.refusals.items()))
    early = ", ".join(f"{n} {why}" for why, n in sorted(report.closed_early.items()))
    rt = report.round_trip
    return [
        f"calls:            {report.connected} connected, {report.refused} refused"
        + (f" ({refusals})" if refusals else "")
        + f", {report.failed} failed"
        + (f"; ended early: {early}" if early else ""),
        f"frames:           {report.frames_sent} sent, {report.frames_received} received, "
        f"{report.lost_frames} lost",
        f"frame round trip: p50 {ms(rt.p50_ms)} ms, p99 {ms(rt.p99_ms)} ms, "
        f"max {ms(rt.max_ms)} ms over {rt.count} frames",
        f"late frames:      {maybe(report.late_frames)} (bridge's xswarm_late_frames_total); "
        f"dropped {maybe(report.dropped_frames)} (its backlog trimming)",
        f"bridge CPU:       {ms(report.bridge_cpu_ms_per_call_second)} ms per call-second",
        f"bench CPU:        {ms(report.bench_cpu_ms_per_call_second)} ms per call-second; "
        f"timer lag p99 {ms(report.timer_lag_p99_ms)} ms, max {ms(report.timer_lag_max_ms)} ms",
    ] + (
        [
            f"first sample:     p50 {ms(report.first_sample.p50_ms)} ms, "
            f"p99 {ms(report.first_sample.p99_ms)} ms, max {ms(report.first_sample.max_ms)} ms "
            f"(content-aligned); {report.content_lost} frames never came back"
        ]
        if report.first_sample is not None
        else []
    )


def jitter_lateness(count: int, jitter_s: float, seed: int) -> list[float]:
    """How late each of ``count`` frames leaves after its 20 ms slot: a seeded random 0 to
    2 x ``jitter_s``, but never before the frame ahead of it, as a path that delays packets
    still keeps their order. Pure, so the schedule is tested without a clock."""
    rng = random.Random(seed)
    lateness: list[float] = []
    late = 0.0
    for _ in range(count):
        late = max(late - FRAME_SECONDS, rng.uniform(0.0, 2 * jitter_s))
        lateness.append(late)
    return lateness


def frame_middles(pcm_8k: np.ndarray, frames: int) -> list[str]:
    """For each frame index, the part of a media message every call shares: sequence, chunk,
    timestamp and payload. The caller's voice loops if the call outlasts it."""
    encoded = mulaw.encode(pcm_8k)
    encoded += b"\xff" * (-len(encoded) % twilio.FRAME_BYTES)
    if not encoded:
        encoded = b"\xff" * twilio.FRAME_BYTES
    payloads = [
        binascii.b2a_base64(encoded[i : i + twilio.FRAME_BYTES], newline=False).decode()
        for i in range(0, len(encoded), twilio.FRAME_BYTES)
    ]
    return [
        f'{k + 2}","media":{{"track":"inbound","chunk":"{k + 1}","timestamp":"{k * 20}",'
        f'"payload":"{payloads[k % len(payloads)]}"}},"streamSid":'
        for k in range(frames)
    ]


class Bench:
    def __init__(
        self,
        url: str,
        calls: int,
        seconds: float,
        pcm_8k: np.ndarray,
        ramp_seconds: float = 2.0,
        grace_seconds: float = 1.0,
        phases: int = 4,
        aligned: bool = False,
        tls: ssl.SSLContext | bool = True,
        carrier: Carrier | None = None,
        jitter_s: float = 0.0,
    ) -> None:
        self.url = url
        self.jitter_s = jitter_s
        self.tls = tls
        self.carrier = carrier
        self.codec = carrier.codec(None) if carrier is not None else wire.PCMU
        self.aligned = aligned
        self.phases = phases
        self.seconds = seconds
        self.ramp = ramp_seconds
        self.grace = grace_seconds
        self.frames_per_call = max(1, round(seconds / FRAME_SECONDS))
        if aligned:
            pcm_8k = noise(self.frames_per_call * FRAME_SECONDS)
        self.sent_pcm = self.codec.decode(self.codec.encode(pcm_8k))
        self.middles: list[str] = []
        self.payloads: list[bytes] = []
        if carrier is None:
            self.middles = frame_middles(pcm_8k, self.frames_per_call)
            self.calls = [
                BenchCall(i, twilio.new_stream_sid(), twilio.new_call_sid()) for i in range(calls)
            ]
        else:
            silence = self.codec.silence * wire.FRAME_SAMPLES
            self.payloads = wire_frames(pcm_8k, self.codec) or [silence]
            self.calls = []
            for i in range(calls):
                caller = carrier.caller(self.codec.name)
                self.calls.append(BenchCall(i, caller.stream_id, caller.call_id, caller=caller))
        for call in self.calls:
            call.tail = json.dumps(call.stream_sid) + "}"
        self.round_trips: list[float] = []
        self.timer_lags: list[float] = []
        self.refusals: Counter[str] = Counter()
        self.closed_early: Counter[str] = Counter()
        self.failed = 0
        self.first_failure = ""
        self._closers: set[asyncio.Task[None]] = set()

    async def run(self) -> BenchReport:
        loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(limit=0, force_close=True, ssl=self.tls)
        async with aiohttp.ClientSession(connector=connector) as session:
            before = await self._scrape(session)
            usage_before = resource.getrusage(resource.RUSAGE_SELF)
            began = loop.time()
            tasks = [asyncio.create_task(self._call(session, call, began)) for call in self.calls]
            ticker = asyncio.create_task(self._tick(began))
            await asyncio.gather(*tasks)
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            wall = loop.time() - began
            usage_after = resource.getrusage(resource.RUSAGE_SELF)
            after = await self._scrape(session)
        return self._report(before, after, usage_before, usage_after, wall)

    async def _call(self, session: aiohttp.ClientSession, call: BenchCall, began: float) -> None:
        offset = self.ramp * call.index / max(1, len(self.calls))
        await sleep_until(began + offset)
        try:
            ws = await asyncio.wait_for(
                session.ws_connect(self.url, compress=0, headers=self._headers()), 30
            )
        except aiohttp.WSServerHandshakeError as exc:
            self.refusals[f"HTTP {exc.status}"] += 1
            return
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.failed += 1
            self.first_failure = self.first_failure or describe_failure(self.url, exc)
            return
        call.ws = ws
        try:
            if call.caller is None:
                await ws.send_str(twilio.connected_message())
                await ws.send_str(twilio.start_message(call.stream_sid, call.call_sid))
            else:
                for opening in call.caller.opening():
                    await ws.send_str(opening)
            call.sending = True
            if self.jitter_s > 0:
                sender = asyncio.create_task(self._send_jittered(call))
                try:
                    await self._receive(call, ws)
                finally:
                    sender.cancel()
            else:
                await self._receive(call, ws)
        except ConnectionError:
            pass
        finally:
            call.sending = False
            if call.next_frame < self.frames_per_call:
                self.closed_early[f"closed {ws.close_code}"] += 1
            await ws.close()

    async def _receive(self, call: BenchCall, ws: aiohttp.ClientWebSocketResponse) -> None:
        loop = asyncio.get_running_loop()
        round_trips = self.round_trips
        sent_at = call.sent_at
        text_type = aiohttp.WSMsgType.TEXT
        replies = call.replies if self.aligned else None
        while True:
            message = await ws.receive()
            if message.type == text_type:
                if replies is not None:
                    replies.append((loop.time(), message.data))
                frames = (
                    1
                    if self.carrier is None and message.data.startswith(OUT_MEDIA_HEAD)
                    else self._media_frames(message.data)
                )
                for _ in range(frames):
                    k = call.received
                    call.received = k + 1
                    if k < len(sent_at):
                        round_trips.append(loop.time() - sent_at[k])
                continue
            if message.type in END_OF_STREAM:
                return

    async def _tick(self, began: float) -> None:
        """The one timer: every 20 ms / phases, the next frame on one group of calls."""
        loop = asyncio.get_running_loop()
        deadline = began
        middles, last = self.middles, self.frames_per_call
        groups = [self.calls[phase :: self.phases] for phase in range(self.phases)]
        phase = 0
        while True:
            deadline += FRAME_SECONDS / self.phases
            await sleep_until(deadline)
            now = loop.time()
            self.timer_lags.append(now - deadline)
            group, phase = groups[phase], (phase + 1) % self.phases
            for call in group:
                if call.sending and call.next_frame < last and not self.jitter_s:
                    await self._send_next(call, middles)

    async def _send_next(self, call: BenchCall, middles: list[str]) -> None:
        """The call's next media message, now."""
        loop = asyncio.get_running_loop()
        k = call.next_frame
        ws = call.ws
        assert ws is not None
        if call.caller is None:
            text = MEDIA_HEAD + middles[k] + call.tail
        else:
            text = call.caller.media(k + 2, k + 1, k * 20, self.payloads[k % len(self.payloads)])
        try:
            await ws.send_str(text)
        except ConnectionError:
            call.sending = False
            return
        call.sent_at.append(loop.time())
        call.next_frame = k + 1
        if k + 1 == self.frames_per_call:
            loop.call_later(self.grace, self._hang_up, call)

    async def _send_jittered(self, call: BenchCall) -> None:
        """The call's frames, each as late after its slot as :func:`jitter_lateness` says."""
        start = asyncio.get_running_loop().time()
        lateness = jitter_lateness(self.frames_per_call, self.jitter_s, call.index)
        while call.sending and call.next_frame < self.frames_per_call:
            frame = call.next_frame
            await sleep_until(start + frame * FRAME_SECONDS + lateness[frame])
            if call.sending:
                await self._send_next(call, self.middles)

    def _hang_up(self, call: BenchCall) -> None:
        ws = call.ws
        if ws is None or ws.closed:
            return
        if call.caller is None:
            stop = twilio.stop_message(
                call.stream_sid, self.frames_per_call + 2, call.call_sid, "AC" + "0" * 32
            )
        else:
            stop = call.caller.stop(self.frames_per_call + 2)

        async def send_stop_and_close() -> None:
            with contextlib.suppress(ConnectionError):
                await ws.send_str(stop)
            await ws.close()

        task = asyncio.get_running_loop().create_task(send_stop_and_close())
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    def _headers(self) -> dict[str, str]:
        if self.carrier is None:
            return {}
        token = os.environ.get(media_stream.CARRIER_TOKEN_ENV)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _parse_outbound(
        self, text: str
    ) -> twilio.OutMedia | twilio.OutMark | twilio.OutClear | media_stream.OutEvent:
        if self.carrier is None:
            return twilio.parse_outbound(text)
        return self.carrier.parse_outbound(text)

    def _media_frames(self, text: str) -> int:
        """How many 20 ms frames a message carries: 0 when it is no media (a carrier such
        as Exotel gets several frames in one message)."""
        if self.carrier is None:
            return int(_is_media(text))
        try:
            message = self.carrier.parse_outbound(text)
        except ProtocolError:
            return 0
        if not isinstance(message, media_stream.OutMedia):
            return 0
        return max(1, len(message.payload) // (self.codec.sample_bytes * wire.FRAME_SAMPLES))

    def _decoded_replies(self, replies: list[tuple[float, str]]) -> list[tuple[float, np.ndarray]]:
        decoded = []
        for arrived, text in replies:
            try:
                message = self._parse_outbound(text)
            except ProtocolError:
                continue
            if isinstance(message, (twilio.OutMedia, media_stream.OutMedia)):
                decoded.append((arrived, self.codec.decode(message.payload)))
        return decoded

    async def _scrape(self, session: aiohttp.ClientSession) -> str | None:
        try:
            async with session.get(
                http_url(self.url, "/metrics"), timeout=aiohttp.ClientTimeout(total=10)
            ) as response:
                return await response.text() if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    def _report(
        self,
        before: str | None,
        after: str | None,
        usage_before: resource.struct_rusage,
        usage_after: resource.struct_rusage,
        wall: float,
    ) -> BenchReport:
        report = BenchReport(len(self.calls), self.seconds, wall_seconds=wall)
        connected = [call for call in self.calls if call.ws is not None]
        report.connected = len(connected)
        report.refused = sum(self.refusals.values())
        report.refusals = dict(self.refusals)
        report.failed = self.failed
        report.closed_early = dict(self.closed_early)
        report.frames_sent = sum(len(call.sent_at) for call in connected)
        report.frames_received = sum(min(call.received, len(call.sent_at)) for call in connected)
        report.lost_frames = report.frames_sent - report.frames_received
        report.round_trip = Latency.of(self.round_trips)
        call_seconds = report.frames_sent * FRAME_SECONDS
        report.late_frames = _delta(before, after, "xswarm_late_frames_total")
        report.dropped_frames = _delta(before, after, "xswarm_dropped_frames_total")
        bridge_cpu = _delta(before, after, "process_cpu_seconds_total")
        if bridge_cpu is not None and call_seconds:
            report.bridge_cpu_ms_per_call_second = bridge_cpu * 1000 / call_seconds
        bench_cpu = (usage_after.ru_utime + usage_after.ru_stime) - (
            usage_before.ru_utime + usage_before.ru_stime
        )
        if call_seconds:
            report.bench_cpu_ms_per_call_second = bench_cpu * 1000 / call_seconds
        if self.aligned:
            latencies: list[float] = []
            report.content_lost = 0
            for call in connected:
                found, lost = align_replies(
                    self.sent_pcm[: len(call.sent_at) * twilio.FRAME_BYTES],
                    call.sent_at,
                    self._decoded_replies(call.replies),
                )
                latencies += found
                report.content_lost += lost
            report.first_sample = Latency.of(latencies)
        if self.timer_lags:
            lags = np.asarray(self.timer_lags) * 1000
            report.timer_lag_p99_ms = float(np.percentile(lags, 99))
            report.timer_lag_max_ms = float(lags.max())
        return report


def _is_media(text: str, parse_outbound: Callable[[str], object] = twilio.parse_outbound) -> bool:
    """The slow check, for media JSON not laid out as ``twilio.Outbound`` writes it."""
    try:
        message = parse_outbound(text)
    except ProtocolError:
        return False
    return isinstance(message, (twilio.OutMedia, media_stream.OutMedia))


def _delta(before: str | None, after: str | None, name: str) -> float | None:
    if before is None or after is None:
        return None
    first, last = metric_total(before, name), metric_total(after, name)
    if first is None or last is None:
        return None
    return last - first
