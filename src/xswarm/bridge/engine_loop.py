"""The tick loop: one engine step per frame period over every active call at once.

Calls join and leave between ticks: their ``join``/``leave`` (and suggestions) are queued as
operations and run, in order, on the same thread as the next step, so an engine never sees
two calls at once. With ``runs_in_thread`` (a GPU engine) that thread is a dedicated worker and
the event loop keeps answering health checks and control messages during the step.

Timing is deadline-based: tick k is due at ``t0 + k * period``. A tick that ends after its
deadline counts one late frame for every call in it. A loop that falls behind runs the missed
ticks back to back (up to ``MAX_CATCH_UP_TICKS``), so no call's audio piles up; past that it
was stalled, and it skips ahead.

Network jitter piles audio up too: two frames arrive in one period, none in the next. Cheap
engines drain such a backlog with ``catch_up_steps`` extra steps in the same tick; for every
engine a call's backlog is capped at ``max(2 frames, MAX_BACKLOG_SECONDS)``, and older audio
is dropped (counted), because audio that waits is latency on a live call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from xswarm.bridge.call import Call
from xswarm.config import Config
from xswarm.engine.base import Engine, SlotOutput, SuggestionResult

log = logging.getLogger("xswarm.engine")

Operation = Callable[[], None]

MAX_CATCH_UP_TICKS = 5
MAX_BACKLOG_SECONDS = 0.1


class TickObserver(Protocol):
    def tick_finished(self, duration_s: float, calls: int) -> None: ...


class OutputSink(Protocol):
    """Where a call's engine output goes: the transport that owns the call."""

    async def deliver(self, pcm: np.ndarray | None, text: str, latency_s: float | None) -> None:
        """Send one frame on; must not suspend unless the peer's socket is paused."""


class EngineLoop:
    def __init__(self, engine: Engine, observer: TickObserver) -> None:
        self.engine = engine
        self.observer = observer
        self.period = engine.frame_seconds
        self._free_slots = list(range(engine.capacity - 1, -1, -1))
        self._calls: dict[int, Call] = {}
        self._sinks: dict[int, OutputSink] = {}
        self._ops: list[Operation] = []
        self._executor = (
            ThreadPoolExecutor(1, thread_name_prefix="engine-step")
            if engine.runs_in_thread
            else None
        )
        self._task: asyncio.Task[None] | None = None
        # Told of a step's events and end requests (suggestion progress, max_duration).
        self.on_output: Callable[[Call, SlotOutput], None] | None = None
        # Told once when the engine reports itself broken (Engine.broken).
        self.on_broken: Callable[[str], None] | None = None
        self.max_backlog = max(
            2 * engine.frame_samples, int(MAX_BACKLOG_SECONDS * engine.sample_rate)
        )

    @property
    def slots_in_use(self) -> int:
        return len(self._calls)

    def attach(self, call: Call, sink: OutputSink) -> bool:
        """Give the call a slot; False when the engine has none left."""
        if not self._free_slots:
            return False
        slot = self._free_slots.pop()
        call.slot = slot
        self._calls[slot] = call
        self._sinks[slot] = sink
        self._ops.append(lambda: self.engine.join(slot))
        return True

    def detach(self, call: Call) -> None:
        slot = call.slot
        if slot is None or self._calls.get(slot) is not call:
            return
        del self._calls[slot]
        del self._sinks[slot]
        call.slot = None
        self._ops.append(lambda: self.engine.leave(slot))
        self._free_slots.append(slot)

    def suggest(self, call: Call, text: str) -> asyncio.Future[SuggestionResult]:
        """Queue a suggestion for the call's slot; resolved after the engine has taken it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SuggestionResult] = loop.create_future()
        slot = call.slot
        if slot is None:
            future.set_result(SuggestionResult(False, "call has no engine slot"))
            return future

        def operation() -> None:
            try:
                result = self.engine.suggest(slot, text)
            except Exception as exc:  # an engine bug must reject one suggestion, not the loop
                log.exception("engine failed to take a suggestion")
                result = SuggestionResult(False, f"engine error: {exc}")
            loop.call_soon_threadsafe(_resolve, future, result)

        self._ops.append(operation)
        return future

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded config on the engine's thread, between two steps."""
        self._ops.append(lambda: self.engine.reconfigure(config))

    def cancel(self, call: Call) -> None:
        """Drop the call's unspoken suggestions, between two steps."""
        slot = call.slot
        if slot is not None:

            def operation() -> None:
                self.engine.cancel(slot)

            self._ops.append(operation)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="engine-loop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self.engine.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        schedule = TickSchedule(loop.time(), self.period)
        while True:
            delay = schedule.due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            started = time.monotonic()
            calls = await self.tick()
            self.finish_tick(calls, time.monotonic() - started, schedule.is_late(loop.time()))
            schedule.advance(loop.time())

    def finish_tick(self, calls: list[Call], duration_s: float, late: bool) -> None:
        """Report a tick to the observer; a late one costs each call in it one late frame."""
        self.observer.tick_finished(duration_s, len(calls))
        if late:
            for call in calls:
                call.late_frames += 1

    async def tick(self) -> list[Call]:
        """One tick: queued joins, leaves and suggestions, then one step over every call with
        a whole frame, catch-up steps for backlogs, and the backlog cap. Returns the calls
        the first step served."""
        ops, self._ops = self._ops, []
        calls = await self._step_ready(ops)
        for _ in range(self.engine.catch_up_steps):
            if not await self._step_ready([]):
                break
        for call in self._calls.values():
            call.input.trim(self.max_backlog)
        return calls

    async def _step_ready(self, ops: list[Operation]) -> list[Call]:
        """One engine step over every call that has a whole frame; returns those calls."""
        frames: dict[int, np.ndarray] = {}
        arrivals: dict[int, float] = {}
        stepped: dict[int, Call] = {}
        for slot, call in self._calls.items():
            taken = call.take_frame()
            if taken is not None:
                frames[slot], arrivals[slot] = taken
                stepped[slot] = call
        if not frames and not ops:
            return []
        if self._executor is not None:
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(self._executor, self._step, ops, frames)
        else:
            outputs = self._step(ops, frames)
        now = time.monotonic()
        for slot, output in outputs.items():
            # During a threaded step the call may have left and another taken its slot.
            sink = self._sinks.get(slot)
            if sink is None or slot not in stepped or self._calls.get(slot) is not stepped[slot]:
                continue
            await sink.deliver(output.pcm, output.text, now - arrivals[slot])
            if (output.events or output.end_reason) and self.on_output is not None:
                self.on_output(stepped[slot], output)
        if self.engine.broken and self.on_broken is not None:
            on_broken, self.on_broken = self.on_broken, None
            on_broken(self.engine.broken)
        return list(stepped.values())

    def _step(self, ops: list[Operation], frames: dict[int, np.ndarray]) -> dict[int, SlotOutput]:
        for operation in ops:
            try:
                operation()
            except Exception:
                log.exception("engine operation failed")
        if not frames:
            return {}
        try:
            return self.engine.step(frames)
        except Exception:
            # One failed step loses one frame for these calls; the loop and the process go on.
            log.exception("engine step failed")
            return {}


class TickSchedule:
    """When the next tick is due, as arithmetic over the loop times it is given.

    Tick k is due at ``start + k * period``; a tick that ends more than a period after its
    deadline is late. A schedule behind by more than ``MAX_CATCH_UP_TICKS`` periods skips
    ahead instead of running every missed tick back to back.
    """

    def __init__(self, start: float, period: float) -> None:
        self.period = period
        self.due = start + period

    def is_late(self, now: float) -> bool:
        return now > self.due + self.period

    def advance(self, now: float) -> None:
        self.due += self.period
        behind = now - self.due
        if behind > self.period * MAX_CATCH_UP_TICKS:
            self.due += self.period * int(behind / self.period)


def _resolve(future: asyncio.Future[SuggestionResult], result: SuggestionResult) -> None:
    if not future.done():
        future.set_result(result)
