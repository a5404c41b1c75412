"""The real supervisor against the real voice bridge, over loopback sockets.

Each test starts ``xswarm-voice`` (echo engine) and ``xswarm-dashboard`` as subprocesses and
places real Twilio Media Streams calls to the bridge. Timeouts here are generous limits on
waiting, never assertions about speed; the speed figures live in the benchmark.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from pathlib import Path

from tests.supervisor.support import (
    operator,
    running_supervisor,
    start_supervisor,
    twilio_call,
)
from tests.support.bridge import running_bridge, start_bridge
from tests.support.waiting import eventually

BRIDGE_CONFIG = '[voice.bridge]\nengine = "echo"\nstatus_interval = 0.2\ndrain_timeout = 2\n'
TOKEN = "test-token-4b1f0c"
CONTROL_TOKEN = "bridge-token-e2e-71c3"
ENV = {"XSWARM_SUPERVISOR_TOKEN": TOKEN, "XSWARM_CONTROL_TOKEN": CONTROL_TOKEN}


def is_type(kind: str, **fields: object):  # type: ignore[no-untyped-def]
    return lambda m: m.get("type") == kind and all(m.get(k) == v for k, v in fields.items())


async def subscribed(op) -> dict:  # type: ignore[no-untyped-def]
    await op.send({"type": "auth", "token": TOKEN})
    result = await op.next()
    assert result == {"type": "auth_result", "success": True, "message": "authenticated"}
    await op.send({"type": "subscribe"})
    return await op.wait_for(is_type("snapshot"))


async def test_call_is_seen_live_then_lands_in_history(tmp_path: Path) -> None:
    with (
        running_bridge(tmp_path, BRIDGE_CONFIG, env=ENV) as bridge,
        running_supervisor(tmp_path, [bridge.ws_url + "/control"], env=ENV) as sup,
    ):
        async with operator(sup.ws_url) as op:
            snap = await subscribed(op)
            assert [i["url"] for i in snap["instances"]] == [bridge.ws_url + "/control"]
            instance = snap["instances"][0]["name"]
            await op.wait_for(is_type("instance_status", instance=instance))
            async with twilio_call(bridge.ws_url) as caller:
                started = await op.wait_for(is_type("call_started"))
                assert started["call_sid"] == caller.call_sid
                assert started["instance"] == instance
                assert started["transport"] == "twilio"
                stats = await op.wait_for(is_type("call_stats", call_id=started["call_id"]))
                assert stats["frames_in"] >= 0
                status, instances = sup.get("/api/instances", token=TOKEN)
                assert status == 200 and instances[0]["state"] == "up"
                assert instances[0]["engine"] == "echo"
                assert instances[0]["pid"] == bridge.proc.pid
                await caller.hang_up()
            ended = await op.wait_for(is_type("call_ended", call_id=started["call_id"]))
            assert ended["reason"] == "caller_hangup"
        status, history = sup.get("/api/calls?limit=5", token=TOKEN)
        assert status == 200
        row = history[0]
        assert row["call_id"] == started["call_id"]
        assert row["reason"] == "caller_hangup"
        assert row["transport"] == "twilio" and row["instance"] == instance
        assert row["frames_in"] == ended["frames_in"]
        assert set(row) == {
            "call_id",
            "instance",
            "transport",
            "remote",
            "caller",
            "started_at",
            "ended_at",
            "duration_s",
            "reason",
            "frames_in",
            "frames_out",
            "late_frames",
            "suggestions",
        }


async def test_a_second_subscriber_gets_a_snapshot_with_the_live_call(tmp_path: Path) -> None:
    with (
        running_bridge(tmp_path, BRIDGE_CONFIG, env=ENV) as bridge,
        running_supervisor(tmp_path, [bridge.ws_url + "/control"], env=ENV) as sup,
    ):
        async with operator(sup.ws_url) as first:
            await subscribed(first)
            async with twilio_call(bridge.ws_url) as caller:
                started = await first.wait_for(is_type("call_started"))
                async with operator(sup.ws_url, TOKEN, header=True) as second:
                    assert (await second.next())["success"] is True
                    await second.send({"type": "subscribe"})
                    snap = await second.wait_for(is_type("snapshot"))
        (call,) = snap["calls"]
        assert call["call_id"] == started["call_id"]
        assert call["state"] == "active"
        assert call["call_sid"] == caller.call_sid
        assert call["duration_s"] >= 0
        assert set(call) >= {
            "call_id",
            "instance",
            "transport",
            "remote",
            "caller",
            "stream_sid",
            "call_sid",
            "started_at",
            "duration_s",
            "level_in_dbfs",
            "level_out_dbfs",
            "latency_p50_ms",
            "latency_p99_ms",
            "frames_in",
            "frames_out",
            "late_frames",
            "state",
        }
        (inst,) = snap["instances"]
        assert set(inst) >= {
            "name",
            "url",
            "state",
            "engine",
            "active_calls",
            "max_concurrent_calls",
            "tick_p50_ms",
            "tick_p99_ms",
            "cpu",
            "rss",
            "limits",
            "restarts",
            "last_seen",
            "version",
            "pid",
            "error",
        }
        assert set(inst["limits"]) == {"memory_high", "memory_max"}


async def test_suggestions_are_acknowledged_to_the_requester_and_everyone(tmp_path: Path) -> None:
    with (
        running_bridge(tmp_path, BRIDGE_CONFIG, env=ENV) as bridge,
        running_supervisor(tmp_path, [bridge.ws_url + "/control"], env=ENV) as sup,
    ):
        async with operator(sup.ws_url) as watcher, operator(sup.ws_url) as requester:
            await subscribed(watcher)
            await requester.send({"type": "auth", "token": TOKEN})
            assert (await requester.next())["success"] is True
            async with twilio_call(bridge.ws_url) as caller:
                started = await watcher.wait_for(is_type("call_started"))
                call_id = started["call_id"]
                await requester.send(
                    {
                        "type": "inject_suggestion",
                        "call_id": call_id,
                        "priority": "high",
                        "text": "Offer the caller a callback.",
                        "request_id": "r-1",
                    }
                )
                applied = await requester.wait_for(is_type("suggestion_applied"))
                assert applied["request_id"] == "r-1" and applied["call_id"] == call_id
                seen = await watcher.wait_for(is_type("suggestion_applied"))
                assert seen["request_id"] == "r-1"
                # No call_id: the only live call is meant.
                await requester.send(
                    {"type": "inject_suggestion", "text": "Be brief.", "request_id": 7}
                )
                answer = await requester.wait_for(
                    lambda m: m["type"] in ("suggestion_applied", "suggestion_rejected")
                )
                assert answer["request_id"] == 7 and answer["call_id"] == call_id
                # The bridge's own policy (one per 2000 ms, at most 5 queued) answers a burst.
                for n in range(8):
                    await requester.send(
                        {
                            "type": "inject_suggestion",
                            "text": f"hint {n}",
                            "call_id": call_id,
                            "request_id": f"b{n}",
                        }
                    )
                rejected = await requester.wait_for(is_type("suggestion_rejected"))
                assert str(rejected["request_id"]).startswith("b")
                await caller.hang_up()
            await watcher.wait_for(is_type("call_ended", call_id=call_id))
        status, history = sup.get("/api/calls", token=TOKEN)
        assert status == 200
        assert history[0]["call_id"] == call_id
        assert history[0]["suggestions"] >= 2


async def test_suggestions_the_supervisor_can_refuse_itself(tmp_path: Path) -> None:
    with (
        running_bridge(tmp_path, BRIDGE_CONFIG, env=ENV) as bridge,
        running_supervisor(tmp_path, [bridge.ws_url + "/control"], env=ENV) as sup,
    ):
        async with operator(sup.ws_url) as op:
            await subscribed(op)
            await op.send({"type": "inject_suggestion", "text": "hello", "request_id": "a"})
            rejected = await op.wait_for(is_type("suggestion_rejected"))
            assert rejected["reason"] == "no live call" and rejected["request_id"] == "a"
            assert rejected["call_id"] is None
            await op.send(
                {"type": "inject_suggestion", "call_id": "c-nope", "text": "hi", "request_id": "b"}
            )
            rejected = await op.wait_for(is_type("suggestion_rejected", request_id="b"))
            assert rejected["reason"] == "no live call c-nope"
            async with twilio_call(bridge.ws_url):
                started = await op.wait_for(is_type("call_started"))
                await op.send(
                    {
                        "type": "inject_suggestion",
                        "call_id": started["call_id"],
                        "text": "   ",
                        "request_id": "c",
                    }
                )
                rejected = await op.wait_for(is_type("suggestion_rejected", request_id="c"))
                assert rejected["reason"] == "empty text"
                await op.send(
                    {
                        "type": "inject_suggestion",
                        "call_id": started["call_id"],
                        "text": "x" * 1001,
                        "request_id": "d",
                    }
                )
                rejected = await op.wait_for(is_type("suggestion_rejected", request_id="d"))
                assert "1001 characters" in rejected["reason"]


async def test_operator_hangup_ends_the_call(tmp_path: Path) -> None:
    with (
        running_bridge(tmp_path, BRIDGE_CONFIG, env=ENV) as bridge,
        running_supervisor(tmp_path, [bridge.ws_url + "/control"], env=ENV) as sup,
    ):
        async with operator(sup.ws_url) as op:
            await subscribed(op)
            async with twilio_call(bridge.ws_url) as caller:
                started = await op.wait_for(is_type("call_started"))
                await op.send({"type": "hangup", "call_id": "c-does-not-exist"})
                error = await op.wait_for(is_type("error"))
                assert error["message"] == "no live call c-does-not-exist"
                await op.send({"type": "hangup", "call_id": started["call_id"]})
                ended = await op.wait_for(is_type("call_ended", call_id=started["call_id"]))
                assert ended["reason"] == "operator_hangup"
                await asyncio.wait_for(caller.closed.wait(), 10)
                assert caller.close_code == 1000
        status, history = sup.get("/api/calls?limit=1", token=TOKEN)
        assert history[0]["call_id"] == started["call_id"]
        assert history[0]["reason"] == "operator_hangup"


async def test_bridge_stop_shows_down_then_restart_comes_back_up(tmp_path: Path) -> None:
    bridge = start_bridge(tmp_path, BRIDGE_CONFIG, env=ENV)
    port = bridge.port
    try:
        with running_supervisor(tmp_path, [bridge.ws_url + "/control"], env=ENV) as sup:
            async with operator(sup.ws_url) as op:
                snap = await subscribed(op)
                name = snap["instances"][0]["name"]
                await op.wait_for(is_type("instance_status"))
                first_pid = bridge.proc.pid
                bridge.stop()
                stopped = time.monotonic()
                down = await op.wait_for(is_type("instance_state", state="down"))
                print(f"instance down reported {time.monotonic() - stopped:.3f} s after stop")
                assert down["instance"] == name and down["reason"]
                status, instances = sup.get("/api/instances", token=TOKEN)
                assert instances[0]["state"] == "down" and instances[0]["error"]
                bridge = start_bridge(tmp_path, BRIDGE_CONFIG, env=ENV, port=port)
                up = await op.wait_for(is_type("instance_state", state="up"), within=30)
                assert up["info"]["pid"] == bridge.proc.pid != first_pid
                assert up["info"]["restarts"] == 1
                status, instances = sup.get("/api/instances", token=TOKEN)
                assert instances[0]["restarts"] == 1 and instances[0]["state"] == "up"
    finally:
        bridge.stop()


async def test_calls_lost_with_their_instance_are_recorded_instance_lost(tmp_path: Path) -> None:
    bridge = start_bridge(tmp_path, BRIDGE_CONFIG, env=ENV)
    port = bridge.port
    try:
        with running_supervisor(tmp_path, [bridge.ws_url + "/control"], env=ENV) as sup:
            async with operator(sup.ws_url) as op:
                await subscribed(op)
                async with twilio_call(bridge.ws_url):
                    started = await op.wait_for(is_type("call_started"))
                    bridge.proc.kill()
                    bridge.proc.wait()
                    down = await op.wait_for(is_type("instance_state", state="down"))
                # Commands for a call whose instance is down are refused by the supervisor.
                await op.send(
                    {
                        "type": "inject_suggestion",
                        "call_id": started["call_id"],
                        "text": "hello?",
                        "request_id": "x",
                    }
                )
                rejected = await op.wait_for(is_type("suggestion_rejected", request_id="x"))
                assert rejected["reason"] == f"instance {down['instance']} is down"
                await op.send({"type": "hangup", "call_id": started["call_id"]})
                error = await op.wait_for(is_type("error"))
                assert error["message"] == (
                    f"instance {down['instance']} is down; cannot hang up {started['call_id']}"
                )
                # While the instance is down the call is unknown, not forgotten.
                async with operator(sup.ws_url) as other:
                    snap = await subscribed(other)
                    assert [c["state"] for c in snap["calls"]] == ["unknown"]
                bridge = start_bridge(tmp_path, BRIDGE_CONFIG, env=ENV, port=port)
                ended = await op.wait_for(
                    is_type("call_ended", call_id=started["call_id"]), within=30
                )
                assert ended["reason"] == "instance_lost"
            status, history = sup.get("/api/calls", token=TOKEN)
            assert history[0]["call_id"] == started["call_id"]
            assert history[0]["reason"] == "instance_lost"
    finally:
        bridge.stop()


async def test_a_silent_bridge_is_marked_stale_then_recovers(tmp_path: Path) -> None:
    with (
        running_bridge(tmp_path, BRIDGE_CONFIG, env=ENV) as bridge,
        running_supervisor(
            tmp_path,
            [bridge.ws_url + "/control"],
            env=ENV,
            extra_toml="stale_after = 1.0\n",
        ) as sup,
    ):
        async with operator(sup.ws_url) as op:
            await subscribed(op)
            await op.wait_for(is_type("instance_status"))
            os.kill(bridge.proc.pid, signal.SIGSTOP)
            try:
                stale = await op.wait_for(is_type("instance_state", state="stale"))
                assert "no message" in stale["reason"]
            finally:
                os.kill(bridge.proc.pid, signal.SIGCONT)
            up = await op.wait_for(is_type("instance_state", state="up"))
            assert up["reason"] in ("messages resumed", "connected")


async def test_kill_9_of_the_supervisor_loses_no_finished_call(tmp_path: Path) -> None:
    with running_bridge(tmp_path, BRIDGE_CONFIG, env=ENV) as bridge:
        sup = start_supervisor(tmp_path, [bridge.ws_url + "/control"], env=ENV)
        try:
            async with operator(sup.ws_url) as op:
                await subscribed(op)
                ids = []
                for _ in range(3):
                    async with twilio_call(bridge.ws_url) as caller:
                        started = await op.wait_for(is_type("call_started"))
                        await caller.hang_up()
                    await op.wait_for(is_type("call_ended", call_id=started["call_id"]))
                    ids.append(started["call_id"])
                async with twilio_call(bridge.ws_url) as survivor:
                    live = await op.wait_for(is_type("call_started"))
                    # The moment the last call_ended has been seen, the supervisor dies.
                    sup.proc.kill()
                    sup.proc.wait()
                    db = sqlite3.connect(sup.state_dir / "xswarm.db")
                    rows = dict(db.execute("SELECT call_id, reason FROM calls").fetchall())
                    db.close()
                    assert {i: rows[i] for i in ids} == {i: "caller_hangup" for i in ids}
                    assert rows[live["call_id"]] is None
                    # The call outlives the supervisor (it never affects calls) and ends
                    # while nobody watches.
                    await survivor.hang_up()
            sup = start_supervisor(tmp_path, [bridge.ws_url + "/control"], env=ENV)
            # The restarted supervisor adopts the open call and, once the bridge's snapshot
            # shows it gone, records it as ended while unobserved.
            _, history = await eventually(
                lambda: asyncio.to_thread(sup.get, "/api/calls", token=TOKEN),
                lambda got: live["call_id"] in {r["call_id"] for r in got[1]},
            )
            reasons = {row["call_id"]: row["reason"] for row in history}
            assert reasons == {**{i: "caller_hangup" for i in ids}, live["call_id"]: "unobserved"}
        finally:
            sup.stop()


async def test_sigterm_closes_operators_with_1001_and_exits_0(tmp_path: Path) -> None:
    with running_bridge(tmp_path, BRIDGE_CONFIG, env=ENV) as bridge:
        sup = start_supervisor(tmp_path, [bridge.ws_url + "/control"], env=ENV)
        try:
            async with operator(sup.ws_url) as op:
                await subscribed(op)
                async with twilio_call(bridge.ws_url) as caller:
                    await op.wait_for(is_type("call_started"))
                    sup.proc.send_signal(signal.SIGTERM)
                    assert await op.closed() == 1001
                    assert await asyncio.to_thread(sup.proc.wait, 30) == 0
                    # The bridge and its call carry on without the supervisor.
                    assert not caller.closed.is_set()
                    status, body = bridge.get("/readyz")
                    assert status == 200
            assert "stopped" in sup.log()
        finally:
            sup.stop()
