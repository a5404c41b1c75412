"""The engine loop driven tick by tick, against the echo engine: no sockets, no clock.

Ticks are run with ``EngineLoop.tick`` and reported with ``finish_tick``; the deadline
arithmetic is ``TickSchedule`` over the times a test hands it. Nothing here waits on time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import pytest

from xswarm.bridge.call import Call, OutputPacer
from xswarm.bridge.engine_loop import (
    MAX_CATCH_UP_TICKS,
    RECENT_JITTER_S,
    EngineLoop,
    TickSchedule,
)
from xswarm.client.bench import jitter_lateness
from xswarm.engine.base import SlotOutput
from xswarm.engine.echo import EchoEngine

FRAME = EchoEngine.frame_samples


class Sink:
    def __init__(self) -> None:
        self.delivered: list[tuple[np.ndarray | None, str, float | None]] = []

    async def deliver(self, pcm: np.ndarray | None, text: str, latency_s: float | None) -> None:
        self.delivered.append((pcm, text, latency_s))

    async def flush(self, now: float) -> None:
        pass


class Ticks:
    def __init__(self) -> None:
        self.reported: list[tuple[float, int]] = []

    def tick_finished(self, duration_s: float, calls: int) -> None:
        self.reported.append((duration_s, calls))


def new_loop(capacity: int = 2, engine: EchoEngine | None = None) -> tuple[EngineLoop, Ticks]:
    ticks = Ticks()
    return EngineLoop(engine or EchoEngine(capacity), ticks), ticks


def new_call() -> Call:
    return Call("twilio", "127.0.0.1:1", FRAME)


def frames(call: Call, count: int, value: float = 0.25, arrived: float = 0.0) -> None:
    for _ in range(count):
        call.push_audio(np.full(FRAME, value, dtype=np.float32), arrived)


async def test_attach_gives_each_call_a_slot_until_the_engine_is_full() -> None:
    loop, _ = new_loop(capacity=2)
    first, second, third = new_call(), new_call(), new_call()
    assert loop.attach(first, Sink()) and loop.attach(second, Sink())
    assert {first.slot, second.slot} == {0, 1}
    assert not loop.attach(third, Sink()) and third.slot is None
    assert loop.slots_in_use == 2
    loop.detach(first)
    assert first.slot is None and loop.slots_in_use == 1
    assert loop.attach(third, Sink())
    loop.detach(first)  # detaching twice is harmless
    assert loop.slots_in_use == 2


async def test_join_and_leave_reach_the_engine_on_the_next_tick() -> None:
    engine = EchoEngine(2)
    loop, _ = new_loop(engine=engine)
    call = new_call()
    loop.attach(call, Sink())
    slot = call.slot
    assert slot not in engine._lines
    await loop.tick()
    assert slot in engine._lines
    loop.detach(call)
    await loop.tick()
    assert slot not in engine._lines


async def test_one_tick_steps_every_call_that_has_a_whole_frame_once() -> None:
    loop, _ = new_loop(capacity=3)
    calls = [new_call() for _ in range(3)]
    sinks = [Sink() for _ in range(3)]
    for call, sink in zip(calls, sinks, strict=True):
        loop.attach(call, sink)
    frames(calls[0], 1, value=0.1)
    frames(calls[1], 1, value=0.2)
    calls[2].push_audio(np.zeros(FRAME // 2, dtype=np.float32), 0.0)  # not a whole frame
    stepped = await loop.tick()
    assert set(map(id, stepped)) == {id(calls[0]), id(calls[1])}
    assert [len(sink.delivered) for sink in sinks] == [1, 1, 0]
    pcm, text, latency = sinks[1].delivered[0]
    assert pcm is not None and np.allclose(pcm, 0.2) and text == "" and latency is not None
    assert await loop.tick() == []  # nothing new arrived: nobody is stepped


async def test_a_backlog_is_caught_up_within_one_tick_by_cheap_engines() -> None:
    loop, _ = new_loop()
    call, sink = new_call(), Sink()
    loop.attach(call, sink)
    frames(call, 1 + EchoEngine.catch_up_steps)
    stepped = await loop.tick()
    assert stepped == [call]  # counted once, however many steps served it
    assert len(sink.delivered) == 1 + EchoEngine.catch_up_steps
    assert len(call.input) == 0


async def test_a_backlog_beyond_the_cap_is_dropped_and_counted() -> None:
    loop, _ = new_loop()
    call, sink = new_call(), Sink()
    loop.attach(call, sink)
    backlog_frames = loop.max_backlog // FRAME + 5
    frames(call, backlog_frames)
    await loop.tick()
    served = 1 + EchoEngine.catch_up_steps
    assert len(call.input) == loop.max_backlog
    assert call.input.overrun_samples == (backlog_frames - served) * FRAME - loop.max_backlog


async def test_a_late_tick_costs_each_call_in_it_one_late_frame() -> None:
    loop, ticks = new_loop()
    late_call, idle_call = new_call(), new_call()
    loop.attach(late_call, Sink())
    loop.attach(idle_call, Sink())
    frames(late_call, 1)
    stepped = await loop.tick()
    loop.finish_tick(stepped, 0.03, late=True)
    assert late_call.late_frames == 1 and idle_call.late_frames == 0
    frames(late_call, 1)
    loop.finish_tick(await loop.tick(), 0.001, late=False)
    assert late_call.late_frames == 1
    assert ticks.reported == [(0.03, 1), (0.001, 1)]


async def test_a_suggestion_is_answered_after_the_engine_took_it() -> None:
    loop, _ = new_loop()
    call, sink = new_call(), Sink()
    loop.attach(call, sink)
    await loop.tick()
    answer = loop.suggest(call, "hello")
    assert not answer.done()
    frames(call, 1)
    await loop.tick()
    assert (await answer).applied
    assert sink.delivered[-1][1] == "hello"
    nowhere = loop.suggest(new_call(), "lost")
    result = await nowhere
    assert not result.applied and "no engine slot" in result.reason


async def test_a_failing_engine_step_loses_that_frame_not_the_loop() -> None:
    class Broken(EchoEngine):
        def step(self, frames: Mapping[int, np.ndarray]) -> dict[int, SlotOutput]:
            raise RuntimeError("boom")

    loop, _ = new_loop(engine=Broken(1))
    call, sink = new_call(), Sink()
    loop.attach(call, sink)
    frames(call, 1)
    assert await loop.tick() == [call]
    assert sink.delivered == []


def test_tick_deadlines_follow_the_period_and_say_when_a_tick_ended_late() -> None:
    schedule = TickSchedule(start=10.0, period=0.25)
    assert schedule.due == 10.25
    assert not schedule.is_late(10.5)  # within a period of its deadline
    assert schedule.is_late(10.51)
    schedule.advance(now=10.3)
    assert schedule.due == 10.5


def test_a_schedule_a_few_ticks_behind_catches_up_and_a_stalled_one_skips_ahead() -> None:
    period = 0.02
    behind = TickSchedule(start=0.0, period=period)
    behind.advance(now=period * (MAX_CATCH_UP_TICKS - 1))
    assert behind.due == pytest.approx(2 * period)  # the missed ticks run back to back
    stalled = TickSchedule(start=0.0, period=period)
    stalled.advance(now=10.0)
    assert 10.0 - 2 * period < stalled.due <= 10.0 + period  # no burst of 500 ticks after it


# -- issue 14: the real-time side ------------------------------------------------------------


async def test_a_burst_of_a_calls_first_frames_is_served_whole_and_nothing_is_dropped() -> None:
    """A call's first 200 ms read in one burst (the bridge was busy accepting other calls)
    used to be cut to the backlog cap: its first frames were lost and counted nowhere."""
    loop, _ = new_loop()
    call, sink = new_call(), Sink()
    loop.attach(call, sink)
    for k in range(10):
        call.push_audio(np.full(FRAME, k / 10, dtype=np.float32), 0.0)
    for _ in range(5):
        await loop.tick()
    levels = [round(float(pcm[0]), 2) for pcm, _, _ in sink.delivered if pcm is not None]
    assert levels == [k / 10 for k in range(10)]
    assert call.dropped_frames == 0 and call.input.overrun_samples == 0


async def test_a_backlog_beyond_the_hard_cap_is_counted_as_dropped_input_backlog() -> None:
    loop, _ = new_loop()
    call = new_call()
    loop.attach(call, Sink())
    frames(call, loop.max_backlog // FRAME + 10)
    await loop.tick()
    assert len(call.input) == loop.max_backlog
    assert call.dropped["input_backlog"] == call.input.overrun_samples // FRAME > 0
    assert call.dropped_frames == call.dropped["input_backlog"]


def test_a_call_behind_for_over_a_second_skips_a_frame_only_while_the_caller_is_silent() -> None:
    loop, _ = new_loop()
    call = new_call()
    loop.attach(call, Sink())
    frames(call, 3, value=0.5)  # loud: the caller is speaking
    loop.bound_backlog(call, now=10.0)
    loop.bound_backlog(call, now=11.5)
    assert len(call.input) == 3 * FRAME and call.dropped_frames == 0
    frames(call, 20, value=0.0)  # 400 ms of silence ends the speech segment
    assert not call.speech.speaking
    backlog = len(call.input) // FRAME
    for tick in range(backlog + 5):  # one frame skipped per tick, down to one frame
        loop.bound_backlog(call, now=12.0 + tick * 0.02)
    assert len(call.input) == FRAME
    assert call.dropped["input_silence"] == backlog - 1
    loop.bound_backlog(call, now=13.0)
    assert call.behind_since is None


def test_a_calls_input_is_aligned_so_each_engine_frame_completes_just_before_a_tick() -> None:
    """An 80 ms engine frame from 20 ms chunks: the chunk that completes a frame is the last
    one before a tick, so a caller's audio waits 0-20 ms for its step, not up to 80."""
    chunk, frame, period = 480, 1920, 0.08
    call = Call("twilio", "127.0.0.1:1", frame)
    call.tick_grid = (1.0, period)
    arrivals = [0.95, 0.97, 0.99]  # three chunks before the tick at 1.0, a fourth after it
    for arrived in arrivals:
        assert call.take_frame() is None
        call.push_audio(np.full(chunk, 0.5, dtype=np.float32), arrived)
    taken = call.take_frame()
    assert taken is not None  # whole at 0.99, in time for the tick at 1.0
    pcm, completed_at = taken
    assert completed_at == 0.99
    assert np.all(pcm[:chunk] == 0.0) and np.all(pcm[chunk:] == 0.5)  # one chunk of lead
    for arrived in (1.01, 1.03, 1.05, 1.07):  # the next four complete at 1.07, before 1.08
        call.push_audio(np.full(chunk, 0.5, dtype=np.float32), arrived)
    assert call.take_frame() is not None and len(call.input) == 0


def test_a_call_whose_frame_is_one_chunk_needs_no_alignment() -> None:
    call = new_call()
    call.tick_grid = (1.0, 0.02)
    call.push_audio(np.full(FRAME, 0.5, dtype=np.float32), 0.995)
    assert len(call.input) == FRAME


def test_the_output_pacer_spreads_a_step_over_the_wire_after_the_preroll() -> None:
    pacer = OutputPacer(preroll_s=0.04, max_age_s=0.1, paced=True)
    pacer.push([b"a", b"b", b"c", b"d"], produced=0.0)
    sent: list[tuple[float, bytes]] = []
    for ms in range(0, 200, 5):
        sent += [(ms / 1000, payload) for payload, _ in pacer.due(ms / 1000, slack=0.0025)]
        if ms == 95:  # the next step, 15 ms late: absorbed by the pre-roll
            pacer.push([b"e", b"f", b"g", b"h"], produced=0.095)
    assert [p for _, p in sent] == [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h"]
    times = [t for t, _ in sent]
    assert times[0] == pytest.approx(0.04)
    assert np.allclose(np.diff(times), 0.02)  # a steady 20 ms cadence across both steps
    assert pacer.underruns == 0 and pacer.late_dropped == 0


def test_the_output_pacer_counts_an_underrun_when_the_wire_goes_quiet() -> None:
    pacer = OutputPacer(preroll_s=0.04, max_age_s=0.1, paced=True)
    pacer.push([b"a", b"b"], produced=0.0)
    assert len(pacer.due(0.04, 0.0025)) == 1 and len(pacer.due(0.06, 0.0025)) == 1
    pacer.push([b"c"], produced=0.2)  # nothing to send from 0.08 to 0.2
    assert pacer.underruns == 1
    assert pacer.due(0.2, 0.0025) == [] and len(pacer.due(0.24, 0.0025)) == 1  # a fresh pre-roll


def test_output_older_than_the_max_age_is_dropped_not_queued() -> None:
    pacer = OutputPacer(preroll_s=0.04, max_age_s=0.1, paced=True)
    pacer.push([b"a", b"b", b"c", b"d"], produced=0.0)
    assert pacer.due(2.0) == []  # a starved host: two seconds late, all of it goes
    assert pacer.late_dropped == 4 and len(pacer) == 0
    unpaced = OutputPacer(preroll_s=0.04, max_age_s=0.1, paced=False)
    unpaced.push([b"x"], produced=5.0)
    assert [p for p, _ in unpaced.due(5.0)] == [b"x"]  # echo: sent as it comes, no pre-roll


def test_steps_over_the_frame_for_seconds_make_the_loop_overloaded_and_then_well() -> None:
    loop, _ = new_loop()
    call = new_call()
    loop.attach(call, Sink())
    t = 100.0
    for _ in range(2 * 50):  # two seconds of slow steps: not yet
        loop.finish_tick([call], 0.03, late=False, now=t)
        t += 0.02
    assert not loop.overloaded
    for _ in range(3 * 50):
        loop.finish_tick([call], 0.03, late=False, now=t)
        t += 0.02
    assert loop.overloaded
    for _ in range(4 * 50):  # steps within the frame again
        loop.finish_tick([call], 0.005, late=False, now=t)
        t += 0.02
    assert not loop.overloaded


def test_one_slow_step_a_second_does_not_make_the_loop_overloaded() -> None:
    loop, _ = new_loop()
    call = new_call()
    loop.attach(call, Sink())
    t = 0.0
    for k in range(10 * 50):
        loop.finish_tick([call], 0.05 if k % 50 == 0 else 0.005, late=k % 50 == 0, now=t)
        t += 0.02
    assert not loop.overloaded


async def test_a_burst_served_on_arrival_loses_no_frame() -> None:
    """Carriers send 100-200 ms per message: a burst of frames arrives at once. Those the
    arrival step does not take wait for the ticks; none is taken and thrown away (one frame
    a burst was, uncounted, before)."""
    loop, _ = new_loop(capacity=1)
    call, sink = new_call(), Sink()
    loop.attach(call, sink)
    await loop.tick()  # the join
    values = [0.1 * (n + 1) for n in range(5)]
    for value in values:
        frames(call, 1, value=value)
    await loop.serve_arrived(call)
    while len(call.input) >= FRAME:
        await loop.tick()
    heard = [float(pcm[0]) for pcm, _, _ in sink.delivered if pcm is not None]
    assert heard == pytest.approx(values)


def test_a_tick_margin_lets_a_late_chunk_still_make_its_tick() -> None:
    """With a 20 ms margin the completing chunk arrives 20-40 ms before its tick, so the
    same chunk arriving 25 ms late (network jitter) is still stepped at that tick."""
    chunk, frame, period = 480, 1920, 0.08
    call = Call("twilio", "127.0.0.1:1", frame)
    call.tick_grid = (1.0, period)
    call.tick_margin_s = 0.020
    for arrived in (0.95, 0.97):
        call.push_audio(np.full(chunk, 0.5, dtype=np.float32), arrived)
    taken = call.take_frame()
    assert taken is not None and taken[1] == 0.97  # whole 30 ms before the tick at 1.0
    late = [0.99, 1.01, 1.03, 1.05 + 0.025]  # the completing chunk of the next frame, late
    for arrived in late:
        call.push_audio(np.full(chunk, 0.5, dtype=np.float32), arrived)
    taken = call.take_frame()
    assert taken is not None and taken[1] < 1.08  # still before the tick at 1.08


# -- a call's slack follows its own jitter (MOSHI: 80 ms frames of four 20 ms chunks) --------

CHUNK, MOSHI_FRAME, PERIOD = 480, 1920, 0.08


class TickedCall:
    """A MOSHI-shaped call on the tick grid at 0, 80, 160 ms…: chunk n leaves the caller at
    n * 20 ms and arrives 5 ms plus its lateness later; each tick takes one whole frame, as
    ``EngineLoop.tick`` does, then bounds the backlog at that tick's time. A loud chunk's
    level says which chunk it is, so a test can tell which ones reached the engine."""

    def __init__(
        self, lateness: list[float], loud: list[bool] | None = None, join_slack: float = 0.060
    ) -> None:
        self.loop, _ = new_loop()
        self.call = Call(
            "twilio", "127.0.0.1:1", MOSHI_FRAME, tick_margin_s=0.010, join_slack_s=join_slack
        )
        self.call.tick_grid = (0.0, PERIOD)
        self.arrivals = [0.013 + n * 0.020 + late for n, late in enumerate(lateness)]
        self.loud = loud or [False] * len(lateness)
        self.pushed = 0
        self.misses = 0
        self.waits: list[float] = []
        self.heard: set[float] = set()  # levels of the loud chunks the engine took

    def run(self, ticks: int) -> None:
        started = False
        for k in range(1, ticks + 1):
            tick = k * PERIOD
            while self.pushed < len(self.arrivals) and self.arrivals[self.pushed] <= tick:
                level = self.level(self.pushed) if self.loud[self.pushed] else 0.0
                self.call.push_audio(np.full(CHUNK, level, np.float32), self.arrivals[self.pushed])
                self.pushed += 1
            taken = self.call.take_frame()
            if taken is None:
                self.misses += started
            else:
                started = True
                self.waits.append(tick - taken[1])
                self.heard.update(float(level) for level in taken[0][::CHUNK] if level)
            self.loop.bound_backlog(self.call, now=tick, tick_at=tick)

    @staticmethod
    def level(chunk: int) -> float:
        return float(np.float32(0.2 + chunk / 10000))

    def loud_levels(self) -> set[float]:
        return {self.level(n) for n, loud in enumerate(self.loud) if loud}


def test_a_call_joins_with_the_slack_it_is_given_and_completes_frames_before_the_next_tick() -> (
    None
):
    """The first chunk arrives 10 ms before a tick: too close for a 60 ms slack, so the frame
    completes with the second chunk, 70 ms before the tick after."""
    call = Call("twilio", "127.0.0.1:1", MOSHI_FRAME, join_slack_s=0.060)
    call.tick_grid = (1.0, PERIOD)
    call.push_audio(np.full(CHUNK, 0.5, np.float32), 0.99)
    assert call.take_frame() is None
    call.push_audio(np.full(CHUNK, 0.5, np.float32), 1.01)
    taken = call.take_frame()
    assert taken is not None and taken[1] == 1.01  # 70 ms before the tick at 1.08
    assert np.all(taken[0][: 2 * CHUNK] == 0.0) and np.all(taken[0][2 * CHUNK :] == 0.5)


def test_a_join_slack_of_a_frame_or_more_puts_whole_frames_of_silence_first() -> None:
    """A 90 ms slack, first chunk 50 ms before a tick: its third chunk completes a frame 90
    ms before the tick after next, and a frame of silence keeps the next tick busy."""
    call = Call("twilio", "127.0.0.1:1", MOSHI_FRAME, join_slack_s=0.090)
    call.tick_grid = (1.0, PERIOD)
    for arrived in (0.95, 0.97, 0.99):
        call.push_audio(np.full(CHUNK, 0.5, np.float32), arrived)
    silence = call.take_frame()  # the tick at 1.0
    assert silence is not None and not np.any(silence[0])
    taken = call.take_frame()  # the tick at 1.08
    assert taken is not None and taken[1] == 0.99  # 90 ms before it
    assert np.all(taken[0][:CHUNK] == 0.0) and np.all(taken[0][CHUNK:] == 0.5)


def test_a_silent_call_without_jitter_is_trimmed_to_the_margin_in_whole_wire_frames() -> None:
    ticked = TickedCall([0.0] * 500)  # 10 s, silent
    ticked.run(120)
    call = ticked.call
    slack, target = call.slack_s(120 * PERIOD), call.slack_target_s()
    assert slack is not None and target is not None
    assert target == pytest.approx(0.010)  # no jitter: the margin alone
    assert target <= slack < target + 0.020
    # It joined with 67 ms (the first chunk came 67 ms before a tick): the two wire frames
    # above the target went together, a second after the jitter was known, and were counted.
    assert slack == pytest.approx(0.027)
    assert call.dropped["input_silence"] == 2
    assert max(ticked.waits[: round(1.9 / PERIOD)]) == pytest.approx(0.067)
    assert max(ticked.waits[round(2.2 / PERIOD) :]) == pytest.approx(0.027)
    assert ticked.misses == 0
    assert max(ticked.waits[-50:]) == pytest.approx(slack)


def test_a_speaking_caller_keeps_all_its_audio_whatever_its_slack() -> None:
    ticked = TickedCall([0.0] * 500, loud=[True] * 500)
    ticked.run(120)
    assert ticked.call.dropped_frames == 0 and ticked.misses == 0
    assert ticked.call.input.overrun_samples == 0
    assert ticked.heard == {ticked.level(n) for n in range(120 * 4 - 3)}  # after 3 of lead


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_jittery_call_keeps_its_jitter_as_slack_and_misses_no_tick(seed: int) -> None:
    """Chunks 0-60 ms late, in order (the bench's --jitter-ms 30): the call settles between
    its measured jitter plus the margin and a wire frame above that, not at a whole frame, and
    no frame misses its tick once it joined with a frame's slack."""
    lateness = jitter_lateness(750, 0.030, seed)  # 15 s
    loud = [(n // 50) % 3 != 2 for n in range(750)]  # 2 s of speech, 1 s of silence
    ticked = TickedCall(lateness, loud)
    ticked.run(185)
    call = ticked.call
    slack, target = call.slack_s(185 * PERIOD), call.slack_target_s()
    assert slack is not None and target is not None and call.jitter is not None
    assert target == pytest.approx(call.jitter.spread + 0.010)
    assert target <= slack < target + 0.020 < PERIOD + 0.020
    assert ticked.misses == 0
    assert call.dropped_frames == call.dropped["input_silence"]
    # Only silence went: every loud chunk that was due by the last tick reached the engine.
    assert ticked.heard == {
        level for level in ticked.loud_levels() if level < TickedCall.level(730)
    }


def test_a_frame_that_misses_its_tick_raises_the_slack_and_only_the_surplus_is_trimmed() -> None:
    """Joined with too little slack for a 50 ms spike: that frame waits a tick (the slack
    rises by a frame), and the silence after it trims back to the spike plus the margin, not
    down to one frame of backlog."""
    lateness = [0.0] * 102 + [0.050, 0.030, 0.010] + [0.0] * 195
    ticked = TickedCall(lateness, join_slack=0.010)
    ticked.run(70)  # 5.6 s: the spike is still in the jitter's window
    call = ticked.call
    assert ticked.misses == 1
    slack, target = call.slack_s(70 * PERIOD), call.slack_target_s()
    assert slack is not None and target == pytest.approx(0.060)
    # Joined 27 ms ahead, 107 ms after the miss, two wire frames trimmed: 67 ms.
    assert slack == pytest.approx(0.067)
    assert call.dropped["input_silence"] == 2


def test_a_stall_is_trimmed_once_the_caller_has_been_quiet_longer_than_the_backlog() -> None:
    """400 ms of the caller's speech held up in the network, then delivered at once: those
    frames miss their ticks, and the backlog that builds up (470 ms) is not trimmed while any
    of it may be speech: the detector's 300 ms of quiet after speech is not enough, only once
    the caller has been quiet for longer than all of it. Then it goes back to the jitter the
    call has."""
    lateness = [0.0] * 600
    for n in range(100, 120):
        lateness[n] = (120 - n) * 0.020
    loud = [60 <= n < 118 for n in range(600)]
    ticked = TickedCall(lateness, loud)
    ticked.run(145)
    call = ticked.call
    assert ticked.misses >= 3
    assert ticked.heard == ticked.loud_levels()  # every spoken chunk reached the engine
    assert call.dropped_frames == call.dropped["input_silence"] > 0
    slack, target = call.slack_s(145 * PERIOD), call.slack_target_s()
    assert slack is not None and target == pytest.approx(0.010)  # the stall left the window
    assert target <= slack < target + 0.020


async def test_a_call_joins_with_the_jitter_the_live_calls_measure() -> None:
    """The first call on a bridge joins with the default slack; one that joins while another
    has measured its jitter takes that jitter plus its margin, at most a frame."""
    loop, _ = new_loop(capacity=3)
    first = Call("twilio", "127.0.0.1:1", MOSHI_FRAME, tick_margin_s=0.010, join_slack_s=0.070)
    loop.attach(first, Sink())
    assert first.join_slack_s == 0.070 and loop.measured_jitter() is None
    for n, late in enumerate([0.0, 0.025] * 30):  # 1.2 s, every other chunk 25 ms late
        first.push_audio(np.full(CHUNK, 0.0, np.float32), n * 0.020 + late)
    assert loop.measured_jitter() == pytest.approx(0.025)
    second = Call("twilio", "127.0.0.1:2", MOSHI_FRAME, tick_margin_s=0.010, join_slack_s=0.070)
    loop.attach(second, Sink())
    assert second.join_slack_s == pytest.approx(0.035)
    for _ in range(10):  # 200 ms of audio held up by a stall, then delivered at once
        first.push_audio(np.full(CHUNK, 0.0, np.float32), 1.4)
    third = Call("twilio", "127.0.0.1:3", MOSHI_FRAME, tick_margin_s=0.010, join_slack_s=0.070)
    assert loop.attach(third, Sink())
    assert third.join_slack_s == pytest.approx(0.080)  # at most a frame


async def test_a_call_joins_with_the_jitter_a_recently_ended_call_measured() -> None:
    """A bridge that serves one call at a time: the next call starts from the last call's
    jitter, not from the conservative default, until that measure is ``RECENT_JITTER_S`` old."""
    loop, _ = new_loop(capacity=2)
    first = Call("twilio", "127.0.0.1:1", MOSHI_FRAME, tick_margin_s=0.010, join_slack_s=0.070)
    loop.attach(first, Sink())
    for n, late in enumerate([0.0, 0.015] * 30):
        first.push_audio(np.full(CHUNK, 0.0, np.float32), n * 0.020 + late)
    loop.detach(first)
    now = time.monotonic()
    assert loop.measured_jitter(now) == pytest.approx(0.015)
    second = Call("twilio", "127.0.0.1:2", MOSHI_FRAME, tick_margin_s=0.010, join_slack_s=0.070)
    loop.attach(second, Sink())
    assert second.join_slack_s == pytest.approx(0.025)
    assert loop.measured_jitter(now + RECENT_JITTER_S + 1) is None
