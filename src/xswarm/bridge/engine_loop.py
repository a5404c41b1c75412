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
engines drain such a backlog with ``catch_up_steps`` extra steps in the same tick. A call
whose frame is several wire frames (MOSHI) keeps the slack its own jitter needs
(``Call.slack_s`` against ``Call.slack_target_s``): a frame that misses its tick raises the
slack by a frame, and a call that holds a wire frame or more beyond its target for over
``BEHIND_SECONDS`` skips that surplus, in wire frames, while the caller is silent
(``input_silence``), which costs nothing audible; any other call skips a frame per tick while
the caller is silent down to one frame of backlog. Past
``max(MAX_BACKLOG_FRAMES frames, MAX_BACKLOG_SECONDS)`` the oldest audio is dropped
(``input_backlog``). Both are counted: audio that waits is latency on a live call, but audio
thrown away silently is a loss nobody can find (a burst of a call's first frames, read late
while the bridge accepted other calls, used to be trimmed that way, uncounted).

An engine that steps on the event loop's own thread, one wire frame at a time (echo), is not
batched by the tick: its step costs per call, so a call is stepped the moment its frame is
whole (``serve_arrived``) instead of waiting 0-20 ms for the next tick. The tick still runs
for it (joins, leaves, backlogs, overload), and reports the work done on arrival since the
previous tick as its own, so step metrics, late frames and ``overloaded`` mean what they did.

Output leaves through each call's ``OutputPacer``: for an engine whose step is longer than a
wire frame, ``_pace`` sends the frames that are due every ``PACE_SECONDS``.

A loop whose steps run over the frame most of the time for ``OverloadWatch.SECONDS`` is
``overloaded``: /readyz answers 503 so that new calls go elsewhere.
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
MAX_BACKLOG_SECONDS = 0.5
MAX_BACKLOG_FRAMES = 4
BEHIND_SECONDS = 1.0
# How long the jitter a call measured still guides the slack of calls that join after it ended.
RECENT_JITTER_S = 600.0
WIRE_FRAME_SECONDS = 0.020
PACE_SECONDS = 0.005


class TickObserver(Protocol):
    def tick_finished(self, duration_s: float, calls: int) -> None: ...


class OutputSink(Protocol):
    """Where a call's engine output goes: the transport that owns the call."""

    async def deliver(self, pcm: np.ndarray | None, text: str, latency_s: float | None) -> None:
        """Send one frame on; must not suspend unless the peer's socket is paused."""

    async def flush(self, now: float) -> None:
        """Send the paced output that is due at ``now`` (``Call.output``)."""


class EngineLoop:
    def __init__(self, engine: Engine, observer: TickObserver) -> None:
        self.engine = engine
        self.observer = observer
        self.period = engine.frame_seconds
        self._free_slots = list(range(engine.capacity - 1, -1, -1))
        # The arrival jitter the last call to end had measured, and when it ended.
        self._ended_jitter: tuple[float, float] | None = None
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
        self._pacer: asyncio.Task[None] | None = None
        self.max_backlog = max(
            MAX_BACKLOG_FRAMES * engine.frame_samples,
            int(MAX_BACKLOG_SECONDS * engine.sample_rate),
        )
        self.schedule: TickSchedule | None = None
        self.overload = OverloadWatch()
        # An engine stepping once per wire frame sends its output as it comes; a longer step
        # is spread over the wire frames it covers.
        self.paces_output = self.period > WIRE_FRAME_SECONDS * 1.5
        self.steps_on_arrival = not engine.runs_in_thread and not self.paces_output
        # Calls stepped by ``serve_arrived`` since the last tick, and that work's duration.
        self._arrived: dict[int, Call] = {}
        self._arrival_work_s = 0.0

    @property
    def overloaded(self) -> bool:
        return self.overload.overloaded

    @property
    def slots_in_use(self) -> int:
        return len(self._calls)

    def attach(self, call: Call, sink: OutputSink) -> bool:
        """Give the call a slot; False when the engine has none left."""
        if not self._free_slots:
            return False
        slot = self._free_slots.pop()
        call.slot = slot
        if self.schedule is not None:
            call.tick_grid = (self.schedule.due, self.period)
        measured = self.measured_jitter()
        if call.jitter is not None and measured is not None:
            # Calls on this bridge mostly come over the same paths: the jitter its live calls
            # measure is a better first guess than the conservative default.
            frame_s = call.frame_samples / call.sample_rate
            call.join_slack_s = min(frame_s, measured + call.tick_margin_s)
        self._calls[slot] = call
        self._sinks[slot] = sink
        self._ops.append(lambda: self.engine.join(slot))
        return True

    def measured_jitter(self, now: float | None = None) -> float | None:
        """The largest arrival jitter the live calls have measured, or the last call to end
        within ``RECENT_JITTER_S`` (seconds); None when none has.

        The ended call counts so that a bridge that serves one call at a time does not start
        each on the conservative default, and pay its surplus until the caller's first pause."""
        spreads = [
            call.jitter.spread
            for call in self._calls.values()
            if call.jitter is not None and call.jitter.ready
        ]
        if self._ended_jitter is not None:
            spread, ended_at = self._ended_jitter
            if (time.monotonic() if now is None else now) - ended_at <= RECENT_JITTER_S:
                spreads.append(spread)
        return max(spreads) if spreads else None

    def detach(self, call: Call) -> None:
        slot = call.slot
        if slot is None or self._calls.get(slot) is not call:
            return
        del self._calls[slot]
        del self._sinks[slot]
        call.slot = None
        if call.jitter is not None and call.jitter.ready:
            self._ended_jitter = (call.jitter.spread, time.monotonic())
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
        if self.paces_output:
            self._pacer = asyncio.create_task(self._pace(), name="output-pacer")

    async def stop(self) -> None:
        if self._pacer is not None:
            self._pacer.cancel()
            self._pacer = None
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
        # loop.time() is time.monotonic() on the standard loops; call arrival times use the
        # latter, and the tick grid must be on the same clock to align calls with it.
        schedule = self.schedule = TickSchedule(time.monotonic(), self.period)
        while True:
            delay = schedule.due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            started = time.monotonic()
            arrival_work, self._arrival_work_s = self._arrival_work_s, 0.0
            calls = await self.tick()
            ended = time.monotonic()
            work = ended - started + arrival_work
            self.finish_tick(calls, work, schedule.is_late(ended), ended)
            schedule.advance(ended)

    async def _pace(self) -> None:
        """Every ``PACE_SECONDS``, each call's output frames that are due go on the wire."""
        while True:
            await asyncio.sleep(PACE_SECONDS)
            now = time.monotonic()
            for slot, call in list(self._calls.items()):
                if len(call.output):
                    sink = self._sinks.get(slot)
                    if sink is not None:
                        await sink.flush(now)

    def finish_tick(
        self, calls: list[Call], duration_s: float, late: bool, now: float | None = None
    ) -> None:
        """Report a tick to the observer; a late one costs each call in it one late frame.
        A stepping tick that took longer than the frame, or ended late, counts towards
        ``overloaded``."""
        self.observer.tick_finished(duration_s, len(calls))
        over = bool(calls) and (late or duration_s > self.period)
        self.overload.observe(time.monotonic() if now is None else now, over)
        if late:
            for call in calls:
                call.late_frames += 1

    async def tick(self) -> list[Call]:
        """One tick: queued joins, leaves and suggestions, then one step over every call with
        a whole frame, catch-up steps for backlogs, and the backlog cap. Returns the calls
        the first step served."""
        ops, self._ops = self._ops, []
        # The tick's place on the grid, not when it ran: a call's slack is kept for a tick
        # that runs on time.
        tick_at = self.schedule.due if self.schedule is not None else time.monotonic()
        calls = await self._step_ready(ops)
        for _ in range(self.engine.catch_up_steps):
            if not await self._step_ready([]):
                break
        now = time.monotonic()
        for call in self._calls.values():
            self.bound_backlog(call, now, tick_at)
        if self._arrived:
            arrived, self._arrived = self._arrived, {}
            for slot, call in arrived.items():
                if call not in calls and self._calls.get(slot) is call:
                    calls.append(call)
        return calls

    async def serve_arrived(self, call: Call) -> None:
        """Step ``call`` now if its frame is whole and the engine steps on arrival (see the
        module's docstring); otherwise its frame waits for the next tick.

        Up to ``1 + catch_up_steps`` frames are taken and stepped before the first is
        delivered, so a tick that runs while a delivery waits on the socket cannot send this
        call's audio out of order."""
        slot = call.slot
        if not self.steps_on_arrival or slot is None or self._calls.get(slot) is not call:
            return
        started = time.monotonic()
        if len(call.input) < call.frame_samples:
            return
        ops, self._ops = self._ops, []  # a join queued for this slot must reach the engine first
        served: list[tuple[SlotOutput, float]] = []
        for _ in range(1 + self.engine.catch_up_steps):
            # Take a frame only to step it: what is left waits for the next tick.
            taken = call.take_frame()
            if taken is None:
                break
            frame, arrived = taken
            call.input_wait.add(started - arrived)
            output = self._step(ops, {slot: frame}).get(slot)
            ops = []
            if output is not None:
                served.append((output, arrived))
        now = time.monotonic()
        self._arrival_work_s += now - started
        self._arrived[slot] = call
        sink = self._sinks[slot]
        for output, arrived in served:
            if self._calls.get(slot) is not call:
                break
            await sink.deliver(output.pcm, output.text, now - arrived)
            if (output.events or output.end_reason) and self.on_output is not None:
                self.on_output(call, output)
        if self.engine.broken and self.on_broken is not None:
            on_broken, self.on_broken = self.on_broken, None
            on_broken(self.engine.broken)

    def bound_backlog(self, call: Call, now: float, tick_at: float | None = None) -> None:
        """After the tick due at ``tick_at`` (default ``now``): keep a call's backlog to what
        its jitter needs, without losing speech.

        Past ``max_backlog`` the oldest audio goes, speech or not. A call whose jitter is
        measured keeps its slack near its target: a wire frame or more above it for
        ``BEHIND_SECONDS``, the surplus wire frames are skipped while the caller is silent,
        never below the target. Any other call skips a frame per tick while the caller is
        silent, down to one frame."""
        backlog = len(call.input)
        if backlog > self.max_backlog:
            call.drop_samples("input_backlog", call.input.trim(self.max_backlog))
            backlog = len(call.input)
        if call.jitter is not None:
            self._bound_slack(call, now, now if tick_at is None else tick_at)
            return
        frame = call.frame_samples
        if backlog <= frame:
            call.behind_since = None
            return
        if call.behind_since is None:
            call.behind_since = now
        elif now - call.behind_since > BEHIND_SECONDS and not call.speech.speaking:
            # One frame per tick: the backlog melts during a pause, not all at once.
            call.drop_samples("input_silence", call.input.trim(backlog - frame))

    def _bound_slack(self, call: Call, now: float, tick_at: float) -> None:
        """``bound_backlog`` for a call whose frame is several wire frames (see there)."""
        slack = call.slack_s(tick_at)
        target = call.slack_target_s()
        if slack is None or target is None or slack - WIRE_FRAME_SECONDS < target:
            call.behind_since = None
            return
        if call.behind_since is None:
            call.behind_since = now
            return
        backlog = len(call.input)
        if now - call.behind_since > BEHIND_SECONDS and 0 < backlog <= call.quiet_samples:
            # The caller has been quiet for longer than anything buffered: the surplus is
            # silence and goes at once, in wire frames.
            chunk = round(call.sample_rate * WIRE_FRAME_SECONDS)
            surplus = min(int((slack - target) / WIRE_FRAME_SECONDS), backlog // chunk)
            call.drop_samples("input_silence", call.input.trim(backlog - surplus * chunk))

    async def _step_ready(self, ops: list[Operation]) -> list[Call]:
        """One engine step over every call that has a whole frame; returns those calls."""
        frames: dict[int, np.ndarray] = {}
        arrivals: dict[int, float] = {}
        stepped: dict[int, Call] = {}
        started = time.monotonic()
        for slot, call in self._calls.items():
            taken = call.take_frame()
            if taken is not None:
                frames[slot], arrivals[slot] = taken
                stepped[slot] = call
                call.input_wait.add(started - taken[1])
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


class OverloadWatch:
    """Whether the engine's steps run over the frame, judged per second of loop time.

    A second is bad when at least half of its ticks ran over the frame (a stepping tick that
    took longer than it, or ended late), or when it had no tick at all. ``SECONDS`` bad
    seconds in a row make the loop overloaded; as many seconds that are not bad make it well
    again. One slow step, or a burst of them, does not: only a load the engine cannot carry
    does."""

    SECONDS = 3
    BAD_SHARE = 0.5

    __slots__ = ("_bad_run", "_good_run", "_over", "_second", "_ticks", "overloaded")

    def __init__(self) -> None:
        self.overloaded = False
        self._second: int | None = None
        self._ticks = 0
        self._over = 0
        self._bad_run = 0
        self._good_run = 0

    def observe(self, now: float, over: bool) -> None:
        second = int(now)
        if self._second is None:
            self._second = second
        if second != self._second:
            self._close_second(second - self._second)
            self._second = second
        self._ticks += 1
        self._over += over

    def _close_second(self, elapsed: int) -> None:
        bad = self._ticks > 0 and self._over >= self.BAD_SHARE * self._ticks
        self._ticks = self._over = 0
        if bad:
            self._bad_run += 1
            self._good_run = 0
        else:
            self._good_run += 1
            self._bad_run = 0
        # Seconds with no tick at all (a stalled loop) count as bad ones.
        if elapsed > 1:
            self._bad_run += elapsed - 1
            self._good_run = 0
        if self._bad_run >= self.SECONDS:
            self.overloaded = True
        elif self._good_run >= self.SECONDS:
            self.overloaded = False


def _resolve(future: asyncio.Future[SuggestionResult], result: SuggestionResult) -> None:
    if not future.done():
        future.set_result(result)
