"""The calls of one bridge: admission, the live calls, their counters and suggestion queues.

``CallRegistry`` is the ``CallHost`` every call session works against: it admits an upgrade
(or says why not), attaches a started call to the engine loop, records its end exactly once,
and keeps the totals of the calls that have ended, so that ``/metrics`` counters never go
back. Operators reach a live call through it (suggestions, hang-up).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from xswarm.bridge.call import Call, CallState, Suggestion
from xswarm.bridge.engine_loop import EngineLoop
from xswarm.bridge.events import EventHub
from xswarm.bridge.host import CallPeer, Refusal
from xswarm.config import Config
from xswarm.engine import base as engine_events
from xswarm.engine.base import Engine, SlotOutput
from xswarm.protocol import control

# Seconds a refused caller is told to wait before trying again.
RETRY_AFTER_SECONDS = 5
REJECTION_REASONS = ("full", "draining", "starting", "auth", "per_source")


@dataclass
class FrameCounts:
    frames_in: int = 0
    frames_out: int = 0
    late_frames: int = 0
    dropped_frames: int = 0
    underruns: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def add(self, call: Call) -> None:
        self.frames_in += call.frames_in
        self.frames_out += call.frames_out
        self.late_frames += call.late_frames
        self.dropped_frames += call.dropped_frames
        self.underruns += call.underruns
        self.dropped.update(call.dropped)


class CallRegistry:
    """Admission and the live calls; ``state`` is ``starting``, ``ready`` or ``draining``."""

    def __init__(
        self, config: Config, engine: Engine, engine_loop: EngineLoop, hub: EventHub
    ) -> None:
        self.config = config
        self.engine = engine
        self.engine_loop = engine_loop
        self.hub = hub
        self.state = "starting"
        self.live: dict[str, CallPeer] = {}
        self.reserved = 0
        self.ended = FrameCounts()
        self.outcomes: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        # Per call, the request ids of applied suggestions not yet finished, in order.
        self.speaking: dict[str, deque[str | int | None]] = {}
        self.context_exceeded = 0
        engine_loop.on_output = self._engine_output
        self.unknown_events = 0
        # Admitted calls per source; a source leaves the map with its last call.
        self.sources: Counter[str] = Counter()
        self.budget_exceeded: Counter[str] = Counter()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- settings that a reload may change ---------------------------------------------------

    @property
    def max_calls(self) -> int:
        return min(self.config.bridge.max_concurrent_calls, self.engine.capacity)

    @property
    def active_calls(self) -> int:
        return len(self.live)

    def public_state(self) -> str:
        if self.state == "ready" and self.reserved >= self.max_calls:
            return "full"
        return self.state

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def publish(self, event: control.Event) -> None:
        self.hub.publish(event)

    # -- admission ---------------------------------------------------------------------------

    def admit(self, source: str = "unknown") -> Refusal | None:
        refusal = self._refusal(source)
        if refusal is None:
            self.reserved += 1
            self.sources[source] += 1
        return refusal

    def _refusal(self, source: str) -> Refusal | None:
        if self.state == "draining":
            self.rejections["draining"] += 1
            return Refusal("Server is shutting down.", RETRY_AFTER_SECONDS)
        if self.state != "ready":
            self.rejections["starting"] += 1
            return Refusal("The voice bridge is still starting.", RETRY_AFTER_SECONDS)
        if self.reserved >= self.max_calls:
            self.rejections["full"] += 1
            return Refusal(
                f"At capacity: {self.reserved} of {self.max_calls} calls.", RETRY_AFTER_SECONDS
            )
        per_source = self.config.bridge.max_calls_per_source
        if self.sources[source] >= per_source:
            self.rejections["per_source"] += 1
            return Refusal(
                f"Too many calls from one address: {per_source} at once "
                "([voice.bridge] max_calls_per_source).",
                RETRY_AFTER_SECONDS,
                status=429,
            )
        return None

    def release(self, source: str = "unknown") -> None:
        self.reserved -= 1
        self.sources[source] -= 1
        if self.sources[source] <= 0:
            del self.sources[source]

    def count_abuse(self, budget: str) -> None:
        self.budget_exceeded[budget] += 1

    def count_rejection(self, reason: str) -> None:
        self.rejections[reason] += 1

    def count_unknown_event(self) -> None:
        self.unknown_events += 1

    # -- the live calls ----------------------------------------------------------------------

    def start_call(self, peer: CallPeer) -> bool:
        call = peer.call
        if call.state is not CallState.ADMITTED:
            raise ValueError(
                f"call {call.call_id} is {call.state.value}; only admitted calls start"
            )
        if not self.engine_loop.attach(call, peer):
            return False
        call.advance(CallState.STARTED)
        self.live[call.call_id] = peer
        self._idle.clear()
        self.publish(call.started_event())
        return True

    async def serve_arrived(self, call: Call) -> None:
        await self.engine_loop.serve_arrived(call)

    def end_call(self, peer: CallPeer, reason: str) -> bool:
        call = peer.call
        had_started = call.state is CallState.STARTED
        if not call.advance(CallState.ENDING):
            return False
        call.end_reason = reason
        if had_started:
            self._record_end(peer, reason)
        return True

    def _record_end(self, peer: CallPeer, reason: str) -> None:
        call = peer.call
        self.engine_loop.detach(call)
        del self.live[call.call_id]
        self.ended.add(call)
        self.outcomes[reason] += 1
        ended = call.ended_event()
        peer.log.info(
            "call ended: %s after %.1f s (%d frames in, %d out, %d late)",
            reason,
            ended.duration_s,
            call.frames_in,
            call.frames_out,
            call.late_frames,
        )
        for suggestion in call.suggestions:
            self._suggestion_rejected(call.call_id, "call ended", suggestion.request_id)
        call.suggestions.clear()
        self.speaking.pop(call.call_id, None)
        self.publish(ended)
        if not self.live:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no call is active (at once when none is); for the drain."""
        await self._idle.wait()

    def frame_totals(self) -> FrameCounts:
        """Frame counters over every call, ended and live."""
        totals = replace(self.ended, dropped=Counter(self.ended.dropped))
        for peer in self.live.values():
            totals.add(peer.call)
        return totals

    # -- operator commands -------------------------------------------------------------------

    def find_call(self, call_id: str | None) -> tuple[CallPeer | None, str]:
        if call_id is None:
            if len(self.live) == 1:
                return next(iter(self.live.values())), ""
            return None, f"call_id is required when {len(self.live)} calls are live"
        peer = self.live.get(call_id)
        return peer, "" if peer else f"no live call {call_id}"

    def queue_suggestion(
        self, call_id: str | None, text: Any, priority: Any = "normal", request_id: Any = None
    ) -> None:
        """Queue a suggestion; the answer comes as a suggestion_applied/rejected event."""
        request_id = request_id if isinstance(request_id, str | int) else None
        peer, problem = self.find_call(call_id)
        shown_id = call_id if peer is None else peer.call.call_id
        if peer is None:
            self._suggestion_rejected(shown_id, problem, request_id)
            return
        if not isinstance(text, str) or not isinstance(priority, str):
            self._suggestion_rejected(shown_id, "text and priority must be strings", request_id)
            return
        limit_problem = control.suggestion_problem(text, priority)
        if limit_problem is not None:
            self._suggestion_rejected(shown_id, limit_problem, request_id)
            return
        max_queue = self.config.suggestions.max_queue
        call = peer.call
        if len(call.suggestions) >= max_queue:
            self._suggestion_rejected(
                shown_id, f"queue full ({max_queue} waiting); try again later", request_id
            )
            return
        suggestion = Suggestion(text, request_id, priority)
        if priority == "high":
            call.suggestions.appendleft(suggestion)
        else:
            call.suggestions.append(suggestion)
        self.apply_due_suggestions()

    def apply_due_suggestions(self) -> None:
        """Hand each call its next queued suggestion once ``min_interval_ms`` has passed."""
        interval = self.config.suggestions.min_interval_ms / 1000
        now = time.monotonic()
        for peer in list(self.live.values()):
            call = peer.call
            if call.suggestions and now - call.last_suggestion_mono >= interval:
                suggestion = call.suggestions.popleft()
                call.last_suggestion_mono = now
                self.spawn(self._apply(peer, suggestion))

    async def _apply(self, peer: CallPeer, suggestion: Suggestion) -> None:
        call_id, request_id = peer.call.call_id, suggestion.request_id
        result = await self.engine_loop.suggest(peer.call, suggestion.text)
        if result.applied:
            peer.log.info("suggestion applied (%d chars)", len(suggestion.text))
            self.speaking.setdefault(call_id, deque()).append(request_id)
            self.publish(control.SuggestionApplied(call_id, suggestion.text, request_id))
        else:
            self.publish(control.SuggestionRejected(call_id, result.reason, request_id))

    def cancel_suggestion(self, call_id: str | None) -> str | None:
        """Drop the call's queued suggestions and what it has not yet said of applied ones."""
        peer, problem = self.find_call(call_id)
        if peer is None:
            return problem
        call = peer.call
        for suggestion in call.suggestions:
            self._suggestion_rejected(call.call_id, "cancelled", suggestion.request_id)
        call.suggestions.clear()
        self.engine_loop.cancel(call)
        for request_id in self.speaking.pop(call.call_id, deque()):
            self.publish(control.SuggestionFinished(call.call_id, request_id, cancelled=True))
        return None

    def _engine_output(self, call: Call, output: SlotOutput) -> None:
        """What a step said about a call beyond its audio: suggestion progress, its context,
        and a request to end it (``max_call_seconds``)."""
        peer = self.live.get(call.call_id)
        if peer is None:
            return
        speaking = self.speaking.setdefault(call.call_id, deque())
        for event in output.events:
            if event == engine_events.SUGGESTION_STARTED:
                first = speaking[0] if speaking else None
                self.publish(control.SuggestionStarted(call.call_id, first))
            elif event in (engine_events.SUGGESTION_FINISHED, engine_events.SUGGESTION_CANCELLED):
                done = speaking.popleft() if speaking else None
                cancelled = event == engine_events.SUGGESTION_CANCELLED
                self.publish(control.SuggestionFinished(call.call_id, done, cancelled))
            elif event == engine_events.CONTEXT_EXCEEDED:
                self.context_exceeded += 1
                peer.log.warning("call passed the model's context; it goes on past its training")
                self.publish(control.ContextExceeded(call.call_id))
        if output.end_reason:
            self.spawn(peer.hangup(output.end_reason, 1000, "call reached its time limit"))

    def _suggestion_rejected(
        self, call_id: str | None, reason: str, request_id: str | int | None
    ) -> None:
        self.publish(control.SuggestionRejected(call_id, reason, request_id))

    async def hangup(self, call_id: Any) -> str | None:
        """Close a call for the operator; returns a problem, or None when done."""
        if not isinstance(call_id, str):
            return "hangup needs a call_id string"
        peer = self.live.get(call_id)
        if peer is None:
            return f"no live call {call_id}"
        await peer.hangup("operator_hangup", 1000, "hung up by operator")
        return None
