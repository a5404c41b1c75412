"""One call's state, free of I/O: its lifecycle, audio buffers, counters, levels, latency and
suggestions, and the protocol events (``protocol.control``) that describe it.

The transport feeds caller audio in (``push_audio``), the engine loop takes whole frames out
(``take_frame``) and hands the output to the transport, which records what it sent
(``note_output``). Everything here is plain data and arithmetic, so it is tested with plain
calls.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from xswarm.audio.levels import SpeechDetector, dbfs
from xswarm.bridge.jitter import ArrivalJitter
from xswarm.protocol import control

# A wire frame: what Twilio carries in one media message, and the unit every drop is counted in.
WIRE_FRAME_SECONDS = 0.020
# Why the bridge threw a frame away; the label values of xswarm_dropped_frames_total.
DROP_REASONS = (
    "input_backlog",  # caller audio past the backlog cap, oldest first
    "input_silence",  # silent caller audio skipped: the call held more than its jitter needs
    "input_stale",  # caller audio that arrived in a burst far behind its timeline (shed load)
    "output_late",  # engine output older than max_output_age_ms when its turn on the wire came
    "slow_client",  # the peer did not read, and its write buffer was full
)


def new_call_id() -> str:
    """Short, safe in logs and URLs, and unique across instances (48 random bits), so a
    supervisor watching several bridges can address a call by its id alone."""
    return f"c-{secrets.token_hex(6)}"


class InputBuffer:
    """A bounded FIFO of 24 kHz samples that remembers when each chunk arrived.

    A caller that sends faster than real time cannot grow memory: past ``capacity`` samples the
    oldest audio is dropped and counted in ``overrun_samples``.
    """

    def __init__(self, capacity: int) -> None:
        self._data = np.zeros(capacity, dtype=np.float32)
        self._start = 0
        self._size = 0
        self._arrivals: deque[tuple[int, float]] = deque()  # (total samples pushed, time)
        self._pushed = 0
        self.overrun_samples = 0

    def __len__(self) -> int:
        return self._size

    @property
    def consumed(self) -> int:
        """Samples that have left the buffer (taken, trimmed or overrun) since it began."""
        return self._pushed - self._size

    def push(self, pcm: np.ndarray, arrived: float) -> None:
        capacity = len(self._data)
        n = len(pcm)
        if n >= capacity:
            self.overrun_samples += self._size + n - capacity
            pcm = pcm[-capacity:]
            n = capacity
            self._start, self._size = 0, 0
        elif self._size + n > capacity:
            drop = self._size + n - capacity
            self.overrun_samples += drop
            self._start = (self._start + drop) % capacity
            self._size -= drop
        end = (self._start + self._size) % capacity
        first = min(n, capacity - end)
        self._data[end : end + first] = pcm[:first]
        if first < n:
            self._data[: n - first] = pcm[first:]
        self._size += n
        self._pushed += len(pcm)
        self._arrivals.append((self._pushed, arrived))

    def trim(self, keep: int) -> int:
        """Drop the oldest audio beyond ``keep`` samples (a backlog is latency); returns dropped."""
        drop = self._size - keep
        if drop <= 0:
            return 0
        self._start = (self._start + drop) % len(self._data)
        self._size -= drop
        self.overrun_samples += drop
        consumed_upto = self._pushed - self._size
        while self._arrivals and self._arrivals[0][0] <= consumed_upto:
            self._arrivals.popleft()
        return drop

    def take(self, n: int) -> tuple[np.ndarray, float] | None:
        """The oldest ``n`` samples and the arrival time of the chunk that completed them."""
        if self._size < n:
            return None
        capacity = len(self._data)
        first = min(n, capacity - self._start)
        frame = np.empty(n, dtype=np.float32)
        frame[:first] = self._data[self._start : self._start + first]
        if first < n:
            frame[first:] = self._data[: n - first]
        self._start = (self._start + n) % capacity
        self._size -= n
        consumed_upto = self._pushed - self._size
        last = None
        while self._arrivals and self._arrivals[0][0] <= consumed_upto:
            last = self._arrivals.popleft()
        if last is not None and last[0] == consumed_upto:
            return frame, last[1]
        # The chunk that completed this frame still has samples left for the next one.
        return frame, self._arrivals[0][1]


class LatencyHistogram:
    """Whole-call latency percentiles in 1 ms buckets (up to ``MAX_MS``), for ``call_ended``:
    a counter per bucket costs the same for a ten-second call as for an hour-long one."""

    __slots__ = ("_buckets", "count")

    MAX_MS = 2000

    def __init__(self) -> None:
        self._buckets = [0] * (self.MAX_MS + 1)
        self.count = 0

    def add(self, seconds: float) -> None:
        ms = int(seconds * 1000)
        self._buckets[ms if 0 <= ms < self.MAX_MS else (0 if ms < 0 else self.MAX_MS)] += 1
        self.count += 1

    def percentile_ms(self, share: float) -> float | None:
        """The upper edge of the bucket holding the ``share`` quantile; None when empty."""
        if not self.count:
            return None
        rank = share * self.count
        seen = 0
        for ms, n in enumerate(self._buckets):
            seen += n
            if seen >= rank and n:
                return float(ms + 1)
        return float(self.MAX_MS)


class OutputPacer:
    """One call's outbound jitter buffer, free of I/O: which wire frames to send now.

    An engine whose step is longer than a wire frame (MOSHI: 80 ms, four frames) hands over
    its audio in bursts. Sent as they come, a step that runs late leaves a gap the caller
    hears. Here each frame gets a play time, ``preroll`` after its step finished plus its
    place in the step, and frames leave one per wire frame from then on: a late step is
    absorbed by the pre-roll. An engine that steps every wire frame (echo) is sent at once
    (``paced`` False). Either way, a frame whose play time is more than ``max_age`` behind
    is dropped (``output_late``): under CPU starvation the caller hears a gap, not seconds of
    delay that never go away.
    """

    __slots__ = (
        "_next_send",
        "_queue",
        "frame_s",
        "late_dropped",
        "max_age_s",
        "paced",
        "preroll_s",
        "underruns",
    )

    def __init__(self, preroll_s: float, max_age_s: float, paced: bool) -> None:
        self.frame_s = WIRE_FRAME_SECONDS
        self.preroll_s = preroll_s if paced else 0.0
        self.max_age_s = max_age_s
        self.paced = paced
        self._queue: deque[tuple[bytes, float, float]] = deque()  # payload, produced, play at
        self._next_send: float | None = None
        self.underruns = 0
        self.late_dropped = 0

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, frames: list[bytes], produced: float) -> None:
        """One step's wire frames, finished at ``produced``."""
        if not frames:
            return
        if (
            self.paced
            and not self._queue
            and self._next_send is not None
            and produced > self._next_send + self.frame_s
        ):
            self.underruns += 1  # the wire went quiet for a frame or more before this step
            self._next_send = None
        play_at = produced + self.preroll_s
        for payload in frames:
            self._queue.append((payload, produced, play_at))
            play_at += self.frame_s

    def due(self, now: float, slack: float = 0.0) -> list[tuple[bytes, float]]:
        """The frames to send at ``now`` (``slack``: how early a frame may go), each with how
        long it waited since its step finished."""
        out: list[tuple[bytes, float]] = []
        queue = self._queue
        while queue:
            payload, produced, play_at = queue[0]
            if now - play_at > self.max_age_s:
                queue.popleft()
                self.late_dropped += 1
                continue
            # Once playing, frames keep the wire's cadence (a late step's audio takes the
            # place the pre-roll kept for it); the first frame, or the first after an
            # underrun, waits for its play time.
            send_at = play_at
            if self.paced and self._next_send is not None:
                send_at = self._next_send
            if send_at > now + slack:
                break
            queue.popleft()
            out.append((payload, now - produced))
            # After a stall, one frame of catch-up and then the cadence again: the backlog
            # ages out instead of reaching the caller as a burst.
            self._next_send = max(send_at, now - self.frame_s) + self.frame_s
        return out


class LateFrameFilter:
    """Decides which caller frames are too stale to play, from the caller's own timeline.

    A peer stamps each frame with its media time (Twilio's ``timestamp``); the smallest
    arrival-minus-stamp seen is the path's own delay. A frame far behind that, arriving in a
    burst (much faster than its stamps advance), has been waiting: in our socket when the
    bridge is overloaded, or in the network after a stall. Playing it would add that wait to
    the rest of the call, so it is dropped before any decoding, which also sheds load.
    Frames that are late but evenly spaced come from a sender whose clock runs slow: after a
    few of those the baseline moves instead.
    """

    __slots__ = ("_baseline", "_last_arrival", "_last_stamp", "_slow_run", "max_lag")

    # Evenly spaced late frames tolerated before the baseline follows a drifting sender.
    DRIFT_FRAMES = 10

    def __init__(self, max_lag: float) -> None:
        self.max_lag = max_lag
        self._baseline: float | None = None
        self._last_stamp = -1
        self._last_arrival = 0.0
        self._slow_run = 0

    def is_stale(self, stamp_ms: int, arrived: float) -> bool:
        if stamp_ms <= self._last_stamp:
            return False  # a stamp that does not advance tells us nothing
        stamp_gap = (stamp_ms - self._last_stamp) / 1000 if self._last_stamp >= 0 else 0.0
        arrival_gap = arrived - self._last_arrival
        self._last_stamp, self._last_arrival = stamp_ms, arrived
        offset = arrived - stamp_ms / 1000
        if self._baseline is None or offset < self._baseline:
            self._baseline = offset
            self._slow_run = 0
            return False
        if offset - self._baseline <= self.max_lag:
            self._slow_run = 0
            return False
        if arrival_gap < stamp_gap / 4:
            return True
        self._slow_run += 1
        if self._slow_run >= self.DRIFT_FRAMES:
            self._baseline = offset
            self._slow_run = 0
        return False


@dataclass
class Suggestion:
    text: str
    request_id: str | int | None = None
    priority: str = "normal"


@dataclass
class LatencyWindow:
    """Frame latencies of the last second or so, for the 1 Hz ``call_stats`` percentiles."""

    samples: deque[float] = field(default_factory=lambda: deque(maxlen=256))

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    def percentiles(self) -> tuple[float | None, float | None]:
        if not self.samples:
            return None, None
        values = np.fromiter(self.samples, dtype=np.float64) * 1000
        p50, p99 = np.percentile(values, [50, 99])
        return round(float(p50), 2), round(float(p99), 2)


class CallState(Enum):
    """Where one call is in its life; ``Call.advance`` is the one place that moves it."""

    ADMITTED = "admitted"  # upgraded and holding an admission place; not in the engine yet
    STARTED = "started"  # holds an engine slot; call_started announced; audio flows
    ENDING = "ending"  # end recorded (call_ended sent if it had started); socket closing
    ENDED = "ended"  # the session is over and its admission place is free


_NEXT_STATES = {
    CallState.ADMITTED: (CallState.STARTED, CallState.ENDING),
    CallState.STARTED: (CallState.ENDING,),
    CallState.ENDING: (CallState.ENDED,),
    CallState.ENDED: (),
}
_ORDER = list(CallState)


class Call:
    """A live call: identity, lifecycle, counters and the buffers between transport and engine."""

    def __init__(
        self,
        transport: str,
        remote: str,
        frame_samples: int,
        sample_rate: int = 24_000,
        buffer_seconds: float = 2.0,
        tick_margin_s: float = 0.002,
        join_slack_s: float | None = None,
    ) -> None:
        self.call_id = new_call_id()
        self.transport = transport
        self.remote = remote
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.caller: str | None = None
        self.callee: str | None = None
        self.started_at = time.time()
        self.started_mono = time.monotonic()
        self.state = CallState.ADMITTED
        self.end_reason: str | None = None
        self.slot: int | None = None
        self.frame_samples = frame_samples
        self.input = InputBuffer(max(frame_samples * 4, int(sample_rate * buffer_seconds)))
        self.sample_rate = sample_rate
        self.frames_in = 0
        self.frames_out = 0
        self.late_frames = 0
        self.dropped: Counter[str] = Counter()
        self._dropped_samples: Counter[str] = Counter()
        self.output: OutputPacer = OutputPacer(0.0, 0.1, paced=False)
        self.input_wait = LatencyHistogram()
        self.output_wait = LatencyHistogram()
        self.tick_grid: tuple[float, float] | None = None  # (a tick's time, period), at attach
        # How long before its tick a frame completes, at least, beyond the measured jitter.
        self.tick_margin_s = tick_margin_s
        # The slack at join, before any jitter is known (the margin, if that is more).
        self.join_slack_s = join_slack_s or 0.0
        self._aligned = False
        self._lead = 0  # samples of silence put before the caller's audio at join
        # Measured for a frame of several wire frames, the case where a late chunk costs a tick.
        wire_samples = round(sample_rate * WIRE_FRAME_SECONDS)
        self.jitter = ArrivalJitter(sample_rate) if frame_samples > wire_samples * 1.5 else None
        self.behind_since: float | None = None
        # How much of the newest input is quiet, at least: silence that may be trimmed.
        self.quiet_samples = 0
        self.latency = LatencyWindow()
        self.speech = SpeechDetector(sample_rate)
        self._level_in: deque[np.ndarray] = deque(maxlen=50)
        self._level_out: deque[np.ndarray] = deque(maxlen=50)
        self.suggestions: deque[Suggestion] = deque()
        self.last_suggestion_mono = float("-inf")

    def advance(self, to: CallState) -> bool:
        """Move the call on to ``to``; False when it is there or past it already, so that
        ending a call twice (the peer and the operator at once) is harmless. A move the
        lifecycle does not have (back, or over a state) is a bug and raises ValueError."""
        if to in _NEXT_STATES[self.state]:
            self.state = to
            return True
        if _ORDER.index(to) <= _ORDER.index(self.state):
            return False
        raise ValueError(f"call {self.call_id} cannot go from {self.state.value} to {to.value}")

    @property
    def dropped_frames(self) -> int:
        return sum(self.dropped.values())

    @property
    def underruns(self) -> int:
        return self.output.underruns

    def drop(self, reason: str, frames: int = 1) -> None:
        """Count wire frames thrown away, by a reason of ``DROP_REASONS``."""
        self.dropped[reason] += frames

    def drop_samples(self, reason: str, samples: int) -> None:
        """Count engine-rate samples thrown away, in wire frames (the remainder carries on)."""
        per_frame = round(self.sample_rate * WIRE_FRAME_SECONDS)
        total = self._dropped_samples[reason] + samples
        whole, self._dropped_samples[reason] = divmod(total, per_frame)
        if whole:
            self.dropped[reason] += whole

    def push_audio(self, pcm: np.ndarray, arrived: float) -> int | None:
        """Caller audio at 24 kHz; returns a finished speech segment's duration in ms, if any."""
        self.frames_in += 1
        if not self._aligned:
            self._aligned = True
            self._align_to_ticks(len(pcm), arrived)
        self.input.push(pcm, arrived)
        if self.jitter is not None:
            self.jitter.observe(len(pcm), arrived)
        self._level_in.append(pcm)
        segment_ms = self.speech.feed(pcm)
        if segment_ms is not None:
            self.quiet_samples = self.speech.hangover_samples
        elif self.speech.speaking:
            self.quiet_samples = 0
        else:
            self.quiet_samples += len(pcm)
        return segment_ms

    def _align_to_ticks(self, chunk: int, arrived: float) -> None:
        """Lead the call's first frame with silence so that each engine frame completes with
        the last chunk that arrives ``join_slack_s`` (or ``tick_margin_s``, if more) before
        a tick: a chunk then waits that plus 0-20 ms for its step, not up to a whole engine
        frame more (80 ms for MOSHI). Chunks keep their arrival phase, so the alignment holds
        until the slack control (``slack_s``) moves it, once the call's own jitter is
        measured; until then that slack is how late a completing chunk may arrive and still
        make its tick. A slack of a frame or more takes whole frames of lead."""
        if self.tick_grid is None or chunk <= 0 or chunk >= self.frame_samples:
            return
        tick, period = self.tick_grid
        chunk_s = chunk / self.sample_rate
        slack = max(self.tick_margin_s, self.join_slack_s)
        until_tick = (tick - arrived) % period
        # The first tick at least the slack away.
        ticks_before = math.ceil((slack - until_tick) / period) if until_tick < slack else 0
        until_tick += ticks_before * period
        # Chunks (this one included) that arrive at least the slack before that tick.
        before = 1 + int((until_tick - slack) / chunk_s)
        # A frame that completes a period or more before its tick would be taken at an
        # earlier one, unless frames of silence ahead of it keep those ticks busy.
        silent_frames = ticks_before if until_tick - (before - 1) * chunk_s >= period else 0
        self._lead = (silent_frames + 1) * self.frame_samples - before * chunk
        if self._lead:
            self.input.push(np.zeros(self._lead, dtype=np.float32), arrived)
            self.quiet_samples = self._lead

    def slack_s(self, at: float) -> float | None:
        """How long before ``at`` (a tick) the audio the engine has taken was due from a
        caller without jitter: the next frame makes its tick when its last chunk is no later
        than this. None until the call's jitter is measured.

        A frame that missed its tick raises it by a frame; trimmed audio lowers it."""
        jitter = self.jitter
        if jitter is None or not jitter.ready:
            return None
        return at - jitter.due(self.input.consumed - self._lead)

    def slack_target_s(self) -> float | None:
        """The slack the call needs: its measured jitter plus the margin, at most a frame.
        None until the jitter is measured."""
        jitter = self.jitter
        if jitter is None or not jitter.ready:
            return None
        frame_s = self.frame_samples / self.sample_rate
        return min(frame_s, jitter.spread + self.tick_margin_s)

    def take_frame(self) -> tuple[np.ndarray, float] | None:
        return self.input.take(self.frame_samples)

    def note_output(self, pcm: np.ndarray, latency_s: float | None) -> None:
        self._level_out.append(pcm)
        if latency_s is not None:
            self.latency.add(latency_s)

    def levels(self) -> tuple[float, float]:
        def level(chunks: deque[np.ndarray]) -> float:
            if not chunks:
                return -120.0
            return round(dbfs(np.concatenate(list(chunks))), 1)

        return level(self._level_in), level(self._level_out)

    @property
    def duration_s(self) -> float:
        return round(time.monotonic() - self.started_mono, 3)

    def started_event(self) -> control.CallStarted:
        return control.CallStarted(
            self.call_id,
            self.transport,
            self.remote,
            self.stream_sid,
            self.call_sid,
            self.caller,
            self.callee,
        )

    def counters(self) -> control.Counters:
        return control.Counters(self.frames_in, self.frames_out, self.late_frames)

    def real_time(self) -> control.RealTime:
        """What the bridge did to keep the call real time, for ``call_ended``."""
        return control.RealTime(
            underruns=self.underruns,
            late_steps=self.late_frames,
            dropped_frames=self.dropped_frames,
            dropped=dict(self.dropped),
            input_wait_p50_ms=self.input_wait.percentile_ms(0.50),
            input_wait_p99_ms=self.input_wait.percentile_ms(0.99),
            output_wait_p50_ms=self.output_wait.percentile_ms(0.50),
            output_wait_p99_ms=self.output_wait.percentile_ms(0.99),
            input_jitter_ms=self.input_jitter_ms(),
        )

    def input_jitter_ms(self) -> float | None:
        if self.jitter is None or not self.jitter.ready:
            return None
        return round(self.jitter.spread * 1000, 1)

    def stats_event(self) -> control.CallStats:
        level_in, level_out = self.levels()
        p50, p99 = self.latency.percentiles()
        return control.CallStats(
            self.call_id, level_in, level_out, p50, p99, self.duration_s, self.counters()
        )

    def snapshot_entry(self) -> control.SnapshotCall:
        return control.SnapshotCall(self.started_event(), self.stats_event(), self.started_at)

    def ended_event(self) -> control.CallEnded:
        return control.CallEnded(
            self.call_id,
            self.duration_s,
            self.end_reason or "unknown",
            self.counters(),
            self.real_time(),
        )
