"""WS /control: authentication, events, suggestions and hang-ups, against the real bridge."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.support.bridge import BridgeProcess, running_bridge
from tests.support.calls import ControlClient, TwilioCaller, tone
from tests.support.waiting import eventually

TOKEN = "s3cret-token"


@pytest.fixture
def secured(tmp_path) -> BridgeProcess:
    config = '[voice.bridge]\nengine = "echo"\n[voice.suggestions]\nmin_interval_ms = 500\nmax_queue = 2\n'
    with running_bridge(tmp_path, config, env={"XSWARM_CONTROL_TOKEN": TOKEN}) as bridge:
        yield bridge


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic s3cret-token", "Bearer "])
async def test_control_refuses_missing_or_wrong_tokens_with_401(secured, http, header) -> None:
    headers = {"Authorization": header} if header else {}
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(secured.ws_url + "/control", headers=headers)
    assert refused.value.status == 401


async def test_hello_then_snapshot_of_live_calls(secured, http) -> None:
    caller = TwilioCaller(http, secured.ws_url)
    await caller.connect()
    await eventually(
        lambda: asyncio.to_thread(secured.get, "/readyz"), lambda got: got[1]["active_calls"] == 1
    )
    async with ControlClient(http, secured.ws_url, TOKEN) as control:
        hello, snapshot = control.events[0], control.events[1]
        assert (
            hello["type"] == "hello" and hello["engine"] == "echo" and hello["instance"] == "voice"
        )
        assert [c["stream_sid"] for c in snapshot["calls"]] == [caller.stream_sid]
        assert snapshot["status"]["active_calls"] == 1
        assert all(e["ts"].endswith("Z") for e in control.events)
        status = await control.wait_for("instance_status")
        assert status["state"] == "ready" and status["rss"] > 0
        stats = await control.wait_for("call_stats")
        assert {"level_in_dbfs", "latency_p50_ms", "latency_p99_ms"} <= stats.keys()
    await caller.close()


async def test_suggestions_are_applied_rate_limited_and_bounded(secured, http) -> None:
    async with ControlClient(http, secured.ws_url, TOKEN) as control:
        caller = TwilioCaller(http, secured.ws_url)
        await caller.connect()
        call_id = (await control.wait_for("call_started"))["call_id"]
        sending = asyncio.create_task(caller.send_audio(tone(2.5)))
        for n in range(4):
            await control.send(
                {
                    "type": "inject_suggestion",
                    "call_id": call_id,
                    "text": f"hint {n}",
                    "request_id": n,
                }
            )
        # One applied at once, two queued (max_queue = 2), the fourth refused.
        rejected = await control.wait_for("suggestion_rejected", request_id=3)
        assert "queue full" in rejected["reason"]
        for n in range(3):
            applied = await control.wait_for("suggestion_applied", request_id=n, timeout=5)
            assert applied["text"] == f"hint {n}"
        times = [e["ts"] for e in control.of_type("suggestion_applied")]
        assert times == sorted(times)
        # The echo engine speaks a suggestion as the call's words.
        text = await control.wait_for("text", call_id=call_id)
        assert text["text"].startswith("hint")
        await sending
        await caller.close()


async def test_bad_suggestions_and_commands_get_precise_answers(secured, http) -> None:
    async with ControlClient(http, secured.ws_url, TOKEN) as control:
        await control.send({"type": "inject_suggestion", "call_id": "nope", "text": "x"})
        assert "no live call nope" in (await control.wait_for("suggestion_rejected"))["reason"]
        await control.send({"type": "inject_suggestion", "text": "x", "request_id": "no-call"})
        rejected = await control.wait_for("suggestion_rejected", request_id="no-call")
        assert "call_id is required when 0 calls are live" in rejected["reason"]
        assert control.ws is not None
        await control.ws.send_str("{not json")
        error = await control.wait_for("error")
        assert "invalid JSON" in error["message"]
        await control.send({"type": "launch_missiles"})
        errors = await eventually(lambda: control.of_type("error"), lambda e: len(e) >= 2)
        assert "unknown command type launch_missiles" in errors[-1]["message"]
        await control.send({"type": "hangup", "call_id": 42})
        errors = await eventually(lambda: control.of_type("error"), lambda e: len(e) >= 3)
        assert "call_id string" in errors[-1]["message"]
        await control.ws.send_bytes(b"\x00\x01")
        errors = await eventually(lambda: control.of_type("error"), lambda e: len(e) >= 4)
        assert "binary" in errors[-1]["message"]
        await control.send({"type": "ping", "id": 7})
        assert (await control.wait_for("pong"))["id"] == 7


async def test_operator_hangup_closes_the_call_cleanly(secured, http) -> None:
    async with ControlClient(http, secured.ws_url, TOKEN) as control:
        caller = TwilioCaller(http, secured.ws_url)
        await caller.connect()
        call_id = (await control.wait_for("call_started"))["call_id"]
        await control.send({"type": "hangup", "call_id": call_id})
        ended = await control.wait_for("call_ended", call_id=call_id)
        assert ended["reason"] == "operator_hangup"
        assert await caller.wait_closed() == 1000


async def test_without_a_token_only_loopback_may_subscribe(tmp_path, http) -> None:
    with running_bridge(tmp_path, '[voice.bridge]\nengine = "echo"\n') as bridge:
        async with ControlClient(http, bridge.ws_url) as control:
            assert control.events[0]["type"] == "hello"
        assert "open to loopback peers only" in bridge.log()
