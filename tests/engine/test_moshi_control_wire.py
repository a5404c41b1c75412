"""Issue 14's events and commands on the wire: a real ``xswarm-voice`` with the tiny MOSHI.

The engine's steering, context and call-length events are tested in-process elsewhere; these
follow them through the bridge to an authenticated /control subscriber (and one through the
supervisor to an operator), as an operator's tools would see them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.engine.test_moshi_bridge import ONE_THREAD, moshi_bridge_toml
from tests.supervisor.support import operator, running_supervisor, twilio_call
from tests.support.bridge import BridgeProcess, running_bridge
from tests.support.calls import ControlClient, TwilioCaller, tone

pytestmark = pytest.mark.moshi

CONTROL_TOKEN = "bridge-token-moshi-wire-3e1f"
OPERATOR_TOKEN = "operator-token-moshi-wire-90ab"
ENV = ONE_THREAD | {
    "XSWARM_CONTROL_TOKEN": CONTROL_TOKEN,
    "XSWARM_SUPERVISOR_TOKEN": OPERATOR_TOKEN,
}
# Warm-up sizes the batch against this step p99: the whole frame, for a busy shared CPU.
SHARED_CPU_BUDGET = 80.0
# Several words, so that a cancel sent right after suggestion_applied finds most unsaid.
LONG = "hello world thank you for calling the voice bridge how can i help today"


@pytest.fixture
def steering_bridge(tmp_path: Path, tiny_moshi: dict[str, Any]) -> Iterator[BridgeProcess]:
    """Context 16 steps (1.28 s), so every call here passes it; suggestions a minute apart,
    so that a second one waits in the bridge's queue."""
    toml = moshi_bridge_toml(tiny_moshi, context=16, step_budget_ms=SHARED_CPU_BUDGET).replace(
        "min_interval_ms = 0", "min_interval_ms = 60000"
    )
    with running_bridge(tmp_path, toml, env=ENV, ready_timeout=120) as bridge:
        yield bridge


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@contextlib.asynccontextmanager
async def talking(
    http: aiohttp.ClientSession, bridge: BridgeProcess, control: ControlClient, seconds: float
) -> AsyncIterator[tuple[TwilioCaller, str]]:
    """A Twilio call speaking in real time in the background; yields it and its call_id."""
    caller = TwilioCaller(http, bridge.ws_url)
    await caller.connect()
    call_id = (await control.wait_for("call_started", stream_sid=caller.stream_sid))["call_id"]
    speech = asyncio.create_task(caller.send_audio(tone(seconds, freq=300.0)))
    try:
        yield caller, call_id
    finally:
        speech.cancel()
        # A call the bridge ended (max_duration) closes the caller's socket; a frame the
        # caller was still sending then meets a closing transport, which is no failure.
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientConnectionResetError):
            await speech
        await caller.close()


async def test_a_suggestion_is_applied_started_and_finished_and_the_context_is_reported(
    steering_bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    async with (
        ControlClient(http, steering_bridge.ws_url, token=CONTROL_TOKEN) as control,
        talking(http, steering_bridge, control, 8.0) as (caller, call_id),
    ):
        await control.send(
            {
                "type": "inject_suggestion",
                "call_id": call_id,
                "text": "hello world",
                "request_id": "r1",
            }
        )
        applied = await control.wait_for("suggestion_applied", call_id=call_id)
        started = await control.wait_for("suggestion_started", call_id=call_id)
        finished = await control.wait_for("suggestion_finished", call_id=call_id)
        exceeded = await control.wait_for("context_exceeded", call_id=call_id)
        order = [
            e["type"]
            for e in control.events
            if e.get("call_id") == call_id and e["type"].startswith("suggestion_")
        ]
    assert applied["request_id"] == started["request_id"] == finished["request_id"] == "r1"
    assert finished["cancelled"] is False
    assert order == ["suggestion_applied", "suggestion_started", "suggestion_finished"]
    assert exceeded == {"type": "context_exceeded", "call_id": call_id, **_head(exceeded)}
    status, metrics = steering_bridge.get("/metrics")
    assert status == 200 and isinstance(metrics, str)
    assert "xswarm_context_exceeded_total 1" in metrics


async def test_cancel_suggestion_drops_the_queued_one_and_stops_the_one_being_spoken(
    steering_bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    async with (
        ControlClient(http, steering_bridge.ws_url, token=CONTROL_TOKEN) as control,
        talking(http, steering_bridge, control, 8.0) as (caller, call_id),
    ):
        for request_id in ("spoken", "queued"):
            await control.send(
                {
                    "type": "inject_suggestion",
                    "call_id": call_id,
                    "text": LONG,
                    "request_id": request_id,
                }
            )
        await control.wait_for("suggestion_applied", call_id=call_id, request_id="spoken")
        await control.send({"type": "cancel_suggestion", "call_id": call_id})
        dropped = await control.wait_for("suggestion_rejected", call_id=call_id)
        stopped = await control.wait_for(
            "suggestion_finished", call_id=call_id, request_id="spoken"
        )
        await control.send({"type": "cancel_suggestion", "call_id": "no-such-call"})
        refused = await control.wait_for("error")
        await asyncio.sleep(1.0)  # the queued one must never be applied, now or later
        applied = control.of_type("suggestion_applied", call_id=call_id)
    assert dropped["request_id"] == "queued" and dropped["reason"] == "cancelled"
    assert stopped["cancelled"] is True
    assert [a["request_id"] for a in applied] == ["spoken"]
    assert "no-such-call" in refused["message"]


async def test_max_call_seconds_ends_the_call_with_max_duration(
    tmp_path: Path, tiny_moshi: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    toml = moshi_bridge_toml(tiny_moshi, max_call_seconds=1.0, step_budget_ms=SHARED_CPU_BUDGET)
    with running_bridge(tmp_path, toml, env=ENV, ready_timeout=120) as bridge:
        async with (
            ControlClient(http, bridge.ws_url, token=CONTROL_TOKEN) as control,
            talking(http, bridge, control, 10.0) as (caller, call_id),
        ):
            ended = await control.wait_for("call_ended", call_id=call_id, timeout=15)
    assert ended["reason"] == "max_duration"
    # 1 s of the call is 13 steps of 80 ms; it ends at a pause or at most 25 steps (2 s) later.
    assert 1.0 <= ended["duration_s"] < 6.0, ended


async def test_the_supervisor_relays_suggestion_progress_and_context_to_operators(
    steering_bridge: BridgeProcess, tmp_path: Path
) -> None:
    def of(kind: str, **fields: Any) -> Any:
        return lambda m: m.get("type") == kind and all(m.get(k) == v for k, v in fields.items())

    with running_supervisor(tmp_path, [steering_bridge.ws_url + "/control"], env=ENV) as sup:
        async with operator(sup.ws_url) as op:
            await op.send({"type": "auth", "token": OPERATOR_TOKEN})
            assert (await op.next())["success"] is True
            await op.send({"type": "subscribe"})
            await op.wait_for(of("snapshot"))
            async with twilio_call(steering_bridge.ws_url):
                call_id = (await op.wait_for(of("call_started")))["call_id"]
                await op.send(
                    {"type": "inject_suggestion", "call_id": call_id, "text": "hello world"}
                )
                wanted = ("suggestion_started", "suggestion_finished", "context_exceeded")
                seen: dict[str, dict[str, Any]] = {}
                # Whatever order they come in: the context may run out mid-suggestion.
                while len(seen) < len(wanted):
                    event = await op.wait_for(
                        lambda m: m.get("type") in wanted and m.get("call_id") == call_id
                    )
                    seen.setdefault(event["type"], event)
    assert len({e["instance"] for e in seen.values()}) == 1
    assert seen["suggestion_finished"]["cancelled"] is False


def _head(event: dict[str, Any]) -> dict[str, Any]:
    """The envelope fields every /control event carries besides its own."""
    return {k: event[k] for k in ("ts", "instance") if k in event}
