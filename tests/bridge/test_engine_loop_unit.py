"""The engine loop driven tick by tick, against the echo engine: no sockets, no clock.

Ticks are run with ``EngineLoop.tick`` and reported with ``finish_tick``; the deadline
arithmetic is ``TickSchedule`` over the times a test hands it. Nothing here waits on time.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from xswarm.bridge.call import Call
from xswarm.bridge.engine_loop import MAX_CATCH_UP_TICKS, EngineLoop, TickSchedule
from xswarm.engine.base import SlotOutput
from xswarm.engine.echo import EchoEngine

FRAME = EchoEngine.frame_samples


class Sink:
    def __init__(self) -> None:
        self.delivered: list[tuple[np.ndarray | None, str, float | None]] = []

    async def deliver(self, pcm: np.ndarray | None, text: str, latency_s: float | None) -> None:
        self.delivered.append((pcm, text, latency_s))


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
