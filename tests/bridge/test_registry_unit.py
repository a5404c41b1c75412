"""The call registry and one call's lifecycle with plain calls: a fake peer, the echo engine."""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
import pytest

from xswarm.bridge.call import Call, CallState
from xswarm.bridge.engine_loop import EngineLoop
from xswarm.bridge.events import EventHub, Subscriber
from xswarm.bridge.registry import CallRegistry
from xswarm.config import Config
from xswarm.engine.echo import EchoEngine
from xswarm.logs import CallLogger


class Peer:
    def __init__(self, registry: CallRegistry) -> None:
        self.registry = registry
        self.call = Call("twilio", "127.0.0.1:1", EchoEngine.frame_samples)
        self.log = CallLogger(logging.getLogger("test"), {"call_id": self.call.call_id})

    async def deliver(self, pcm: np.ndarray | None, text: str, latency_s: float | None) -> None:
        pass

    async def hangup(self, end_reason: str, code: int = 1000, message: str = "") -> None:
        self.registry.end_call(self, end_reason)


class Ticks:
    def tick_finished(self, duration_s: float, calls: int) -> None:
        pass


def new_registry(capacity: int = 2) -> tuple[CallRegistry, Subscriber]:
    engine = EchoEngine(capacity)
    hub = EventHub("voice")
    events = Subscriber("test")
    hub.add(events)
    registry = CallRegistry(Config(), engine, EngineLoop(engine, Ticks()), hub)
    registry.state = "ready"
    return registry, events


def types(events: Subscriber) -> list[str]:
    seen = []
    while not events.queue.empty():
        seen.append(json.loads(events.queue.get_nowait())["type"])
    return seen


def test_a_call_moves_forward_only_and_ends_once() -> None:
    call = Call("moshi", "peer", 480)
    assert call.state is CallState.ADMITTED
    assert call.advance(CallState.STARTED)
    assert call.advance(CallState.ENDING)
    assert not call.advance(CallState.ENDING)  # a second end is a no-op
    assert not call.advance(CallState.STARTED)
    assert call.advance(CallState.ENDED)
    assert not call.advance(CallState.ENDING)
    with pytest.raises(ValueError, match="admitted to ended"):
        Call("moshi", "peer", 480).advance(CallState.ENDED)


def test_admission_holds_places_up_to_the_limit_and_says_why_it_refuses() -> None:
    registry, _ = new_registry(capacity=1)
    registry.state = "starting"
    refusal = registry.admit()
    assert refusal is not None and "still starting" in refusal.reason
    registry.state = "ready"
    assert registry.admit() is None
    full = registry.admit()
    assert full is not None and "At capacity: 1 of 1" in full.reason
    assert registry.public_state() == "full"
    registry.release()
    registry.state = "draining"
    assert registry.admit() is not None
    assert dict(registry.rejections) == {"starting": 1, "full": 1, "draining": 1}


def test_a_started_call_sends_exactly_one_call_ended_however_often_it_is_ended() -> None:
    registry, events = new_registry()
    peer = Peer(registry)
    assert registry.start_call(peer)
    assert registry.active_calls == 1 and peer.call.slot is not None
    assert registry.end_call(peer, "caller_hangup")
    assert not registry.end_call(peer, "operator_hangup")
    assert peer.call.state is CallState.ENDING and peer.call.end_reason == "caller_hangup"
    assert types(events) == ["call_started", "call_ended"]
    assert registry.active_calls == 0 and registry.outcomes == {"caller_hangup": 1}


def test_a_call_that_never_started_ends_without_events() -> None:
    registry, events = new_registry()
    peer = Peer(registry)
    assert registry.end_call(peer, "protocol_error")
    assert types(events) == [] and not registry.outcomes


def test_no_engine_slot_leaves_the_call_admitted() -> None:
    registry, _ = new_registry(capacity=1)
    assert registry.start_call(Peer(registry))
    second = Peer(registry)
    assert not registry.start_call(second)
    assert second.call.state is CallState.ADMITTED


async def test_wait_idle_returns_when_the_last_call_ends() -> None:
    registry, _ = new_registry()
    await asyncio.wait_for(registry.wait_idle(), 1)  # no calls: at once
    first, second = Peer(registry), Peer(registry)
    registry.start_call(first)
    registry.start_call(second)
    idle = asyncio.create_task(registry.wait_idle())
    registry.end_call(first, "caller_hangup")
    # Proving a negative: wait_idle is given a bounded chance to return while a call is live.
    returned_early, _ = await asyncio.wait({idle}, timeout=0.05)
    assert not returned_early
    registry.end_call(second, "caller_hangup")
    await asyncio.wait_for(idle, 1)


async def test_operator_hangup_and_suggestions_reach_only_live_calls() -> None:
    registry, events = new_registry()
    assert await registry.hangup("c-nope") == "no live call c-nope"
    peer = Peer(registry)
    registry.start_call(peer)
    registry.queue_suggestion(None, "x" * 1001)
    assert types(events)[-1] == "suggestion_rejected"
    assert await registry.hangup(peer.call.call_id) is None
    assert registry.active_calls == 0 and registry.outcomes == {"operator_hangup": 1}
