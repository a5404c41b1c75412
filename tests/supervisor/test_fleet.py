"""The fleet state machine, driven with plain function calls and a fake clock."""

from __future__ import annotations

from xswarm.supervisor.fleet import (
    INSTANCE_LOST,
    UNOBSERVED,
    Fleet,
    LiveCall,
    instance_names,
    iso,
    parse_iso,
)


class Clock:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = 1_800_000_000.0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def make_fleet(stale_after: float = 2.0) -> tuple[Fleet, Clock]:
    clock = Clock()
    fleet = Fleet(stale_after, monotonic=lambda: clock.mono, wall=lambda: clock.wall)
    fleet.add_instance("a", "ws://a/control")
    return fleet, clock


def hello(pid: int = 10) -> dict:
    return {
        "type": "hello",
        "instance": "voice",
        "version": "0.1.0",
        "pid": pid,
        "engine": "echo",
        "max_concurrent_calls": 300,
    }


def snapshot(*call_ids: str, pid: int = 10) -> dict:
    return {
        "type": "snapshot",
        "calls": [
            {
                "call_id": c,
                "transport": "twilio",
                "remote": "1.2.3.4",
                "started_at": "2027-01-15T08:00:00.000Z",
                "frames_in": 5,
            }
            for c in call_ids
        ],
        "status": {
            "active_calls": len(call_ids),
            "max_concurrent_calls": 300,
            "engine": "echo",
            "state": "ready",
            "cpu": 3.5,
            "rss": 1000,
            "pid": pid,
            "limits": {"memory_high": None, "memory_max": 2048},
        },
    }


def connect(fleet: Fleet, pid: int = 10, calls: tuple[str, ...] = ()) -> list[dict]:
    fleet.connected("a")
    events = fleet.apply("a", hello(pid)).events
    return events + fleet.apply("a", snapshot(*calls, pid=pid)).events


def test_an_instance_is_down_until_its_hello_then_up() -> None:
    fleet, _ = make_fleet()
    assert fleet.instances["a"].state == "down"
    fleet.connected("a")
    assert fleet.instances["a"].state == "down"
    events = fleet.apply("a", hello()).events
    assert [(e["type"], e["state"]) for e in events] == [("instance_state", "up")]
    inst = fleet.instances["a"].to_dict()
    assert inst["pid"] == 10 and inst["engine"] == "echo" and inst["error"] is None
    assert inst["bridge_name"] == "voice"


def test_events_are_relayed_with_our_instance_name() -> None:
    fleet, _ = make_fleet()
    connect(fleet)
    out = fleet.apply("a", {"type": "text", "instance": "voice", "call_id": "c1", "text": "hi"})
    assert out.events == [{"type": "text", "instance": "a", "call_id": "c1", "text": "hi"}]
    assert fleet.apply("a", {"type": "pong"}).events == []


def test_a_call_lives_from_started_to_ended() -> None:
    fleet, clock = make_fleet()
    connect(fleet)
    out = fleet.apply(
        "a",
        {
            "type": "call_started",
            "call_id": "c1",
            "transport": "twilio",
            "remote": "1.2.3.4",
            "caller": "+15550100",
            "ts": "2027-01-15T08:00:00.000Z",
        },
    )
    assert [c.call_id for c in out.started] == ["c1"]
    fleet.apply(
        "a",
        {
            "type": "call_stats",
            "call_id": "c1",
            "frames_in": 50,
            "latency_p50_ms": 1.5,
            "level_in_dbfs": -30.0,
            "late_frames": "bad",
        },
    )
    fleet.apply("a", {"type": "suggestion_applied", "call_id": "c1", "text": "x"})
    call = fleet.calls[("a", "c1")]
    assert (call.frames_in, call.latency_p50_ms, call.late_frames) == (50, 1.5, None)
    assert fleet.active_call_count() == 1
    out = fleet.apply(
        "a",
        {
            "type": "call_ended",
            "call_id": "c1",
            "reason": "caller_hangup",
            "duration_s": 12.5,
            "frames_in": 600,
            "frames_out": 590,
            "late_frames": 2,
            "ts": "2027-01-15T08:00:12.500+00:00",
        },
    )
    (record,) = out.ended
    assert record.reason == "caller_hangup" and record.duration_s == 12.5
    assert record.suggestions == 1 and record.caller == "+15550100"
    assert record.ended_at == "2027-01-15T08:00:12.500Z"
    assert fleet.calls == {}


def test_bad_field_types_from_a_bridge_are_ignored_not_fatal() -> None:
    fleet, _ = make_fleet()
    connect(fleet)
    fleet.apply("a", {"type": "call_started", "call_id": 5})
    fleet.apply("a", {"type": "call_started", "call_id": "c1", "transport": ["x"]})
    fleet.apply("a", {"type": "instance_status", "cpu": "high", "rss": True, "limits": []})
    fleet.apply("a", {"type": "call_ended", "call_id": None})
    assert list(fleet.calls) == [("a", "c1")]
    assert fleet.calls[("a", "c1")].transport is None


def test_silence_makes_an_instance_stale_and_any_message_revives_it() -> None:
    fleet, clock = make_fleet(stale_after=2.0)
    connect(fleet)
    clock.advance(1.9)
    assert fleet.check_stale().events == []
    clock.advance(0.2)
    (event,) = fleet.check_stale().events
    assert event["state"] == "stale" and event["reason"] == "no message for 2.1 s"
    assert fleet.check_stale().events == []
    (event,) = fleet.apply("a", {"type": "instance_status", "state": "ready"}).events[1:]
    assert event["state"] == "up" and event["reason"] == "messages resumed"


def test_draining_is_reported_from_instance_status() -> None:
    fleet, _ = make_fleet()
    connect(fleet)
    events = fleet.apply("a", {"type": "instance_status", "state": "draining"}).events
    assert events[-1]["state"] == "draining"
    assert fleet.instances["a"].state == "draining"


def test_a_lost_instance_keeps_its_calls_unknown_until_its_snapshot() -> None:
    fleet, clock = make_fleet()
    connect(fleet, calls=("c1", "c2"))
    assert fleet.active_call_count() == 2
    clock.advance(5)
    lost_at = clock.wall
    (event,) = fleet.disconnected("a", "connection refused").events
    assert event["state"] == "down" and event["reason"] == "connection refused"
    assert {c.state for c in fleet.calls.values()} == {"unknown"}
    assert fleet.disconnected("a", "still refused").events == []
    clock.advance(30)
    events = connect(fleet, pid=11, calls=("c2",))
    assert fleet.instances["a"].restarts == 1
    ended = [e for e in events if e["type"] == "call_ended"]
    assert [(e["call_id"], e["reason"]) for e in ended] == [("c1", INSTANCE_LOST)]
    assert ended[0]["ts"] == iso(lost_at)
    assert fleet.calls[("a", "c2")].state == "active"


def test_a_call_first_seen_in_a_snapshot_is_announced_and_stored() -> None:
    fleet, _ = make_fleet()
    fleet.connected("a")
    fleet.apply("a", hello())
    out = fleet.apply("a", snapshot("c9"))
    assert [c.call_id for c in out.started] == ["c9"]
    (started,) = [e for e in out.events if e["type"] == "call_started"]
    assert started["synthetic"] is True and started["call_id"] == "c9"
    assert started["transport"] == "twilio" and started["instance"] == "a"


def test_calls_adopted_after_a_supervisor_restart_end_as_unobserved() -> None:
    fleet, _ = make_fleet()
    out = fleet.adopt_open_calls(
        [
            LiveCall(call_id="c1", instance="a", started_at="2027-01-15T08:00:00.000Z"),
            LiveCall(call_id="c2", instance="a"),
            LiveCall(call_id="c3", instance="gone"),
        ]
    )
    assert [(r.call_id, r.reason) for r in out.ended] == [("c3", UNOBSERVED)]
    events = connect(fleet, calls=("c2",))
    ended = [e for e in events if e["type"] == "call_ended"]
    assert [(e["call_id"], e["reason"], e["duration_s"]) for e in ended] == [
        ("c1", UNOBSERVED, None)
    ]
    assert fleet.calls[("a", "c2")].state == "active"


def test_removing_an_instance_ends_its_calls_and_says_so() -> None:
    fleet, _ = make_fleet()
    connect(fleet, calls=("c1",))
    out = fleet.remove_instance("a")
    assert [r.reason for r in out.ended] == [UNOBSERVED]
    assert out.events[-1]["type"] == "instance_removed"
    assert fleet.instances == {} and fleet.calls == {}
    assert fleet.apply("a", hello()).events == []


def test_snapshot_shape_and_live_duration() -> None:
    fleet, clock = make_fleet()
    connect(fleet, calls=("c1",))
    clock.wall = parse_iso("2027-01-15T08:00:10.000Z") or 0
    snap = fleet.snapshot()
    (call,) = snap["calls"]
    assert call["duration_s"] == 10.0 and call["state"] == "active"
    (inst,) = snap["instances"]
    assert inst["limits"] == {"memory_high": None, "memory_max": 2048}
    assert inst["cpu"] == 3.5 and inst["active_calls"] == 1


def test_find_calls_by_id_across_instances() -> None:
    fleet, _ = make_fleet()
    fleet.add_instance("b", "ws://b/control")
    connect(fleet, calls=("c1",))
    fleet.connected("b")
    fleet.apply("b", hello(20))
    fleet.apply("b", snapshot("c1"))
    assert len(fleet.find_calls("c1")) == 2
    assert [c.instance for c in fleet.find_calls("c1", "b")] == ["b"]
    assert fleet.find_calls("c2") == []


def test_instance_names_are_stable_and_unique() -> None:
    names = instance_names(
        [
            "ws://127.0.0.1:9998/control",
            "ws://127.0.0.1:9998/control",
            "wss://10.0.0.5:10001/control#voice-b",
            "ws://10.0.0.6:10001/control#voice-b",
        ]
    )
    assert names == {
        "127.0.0.1:9998": "ws://127.0.0.1:9998/control",
        "voice-b": "wss://10.0.0.5:10001/control#voice-b",
        "voice-b~2": "ws://10.0.0.6:10001/control#voice-b",
    }


def test_iso_round_trip() -> None:
    assert iso(0) == "1970-01-01T00:00:00.000Z"
    assert parse_iso("1970-01-01T00:00:01.500Z") == 1.5
    assert parse_iso("1970-01-01T00:00:01") == 1.0
    assert parse_iso("yesterday") is None and parse_iso(5) is None


def status(refused: dict[str, int]) -> dict:
    return {"type": "instance_status", "active_calls": 0, "pid": 10, "refused_total": refused}


def test_refusals_in_the_last_minute_come_from_the_growth_of_the_bridges_counts() -> None:
    fleet, clock = make_fleet()
    connect(fleet)
    fleet.apply("a", status({"full": 4, "auth": 1}))
    inst = fleet.instances["a"]
    assert (inst.refusals_total, inst.refusals_last_minute) == (5, 0), "older ones are not recent"
    for second in range(30):
        clock.advance(1)
        fleet.apply("a", status({"full": 4 + second // 10, "auth": 1}))
    assert (inst.refusals_total, inst.refusals_last_minute) == (7, 2)
    (relayed,) = fleet.apply("a", status({"full": 8, "auth": 1})).events
    assert relayed["refusals_total"] == 9 and relayed["refusals_last_minute"] == 4
    assert relayed["refused_total"] == {"full": 8, "auth": 1}
    clock.advance(61)
    fleet.apply("a", status({"full": 8, "auth": 1}))
    assert inst.refusals_last_minute == 0, "nothing refused for a minute"
    info = inst.to_dict()
    assert info["refusals_total"] == 9 and info["refusals_last_minute"] == 0


def test_a_restarted_bridge_counts_its_refusals_from_zero() -> None:
    fleet, clock = make_fleet()
    connect(fleet)
    fleet.apply("a", status({"full": 50}))
    clock.advance(1)
    fleet.apply("a", status({"full": 3}))
    inst = fleet.instances["a"]
    assert (inst.refusals_total, inst.refusals_last_minute) == (3, 3)


def test_a_bridge_without_refusal_counts_shows_none() -> None:
    fleet, _ = make_fleet()
    connect(fleet)
    (relayed,) = fleet.apply("a", {"type": "instance_status", "active_calls": 0}).events
    assert "refusals_total" not in relayed
    assert fleet.instances["a"].to_dict()["refusals_last_minute"] is None


def test_an_instance_shows_its_gpu_and_slots_from_instance_status() -> None:
    fleet, _ = make_fleet()
    connect(fleet)
    assert fleet.instances["a"].info().device is None
    status = {
        "type": "instance_status",
        "device": "cuda:1",
        "gpu": "NVIDIA H200 at 0000:62:00.0",
        "engine_details": {"device": "cuda:1", "slots": 80, "step_ms_p99": 41.0},
        "tick_p50_ms": 30.5,
        "tick_p99_ms": 44.0,
    }
    fleet.apply("a", status)
    info = fleet.instances["a"].to_dict()
    assert info["device"] == "cuda:1" and info["gpu"] == "NVIDIA H200 at 0000:62:00.0"
    assert info["slots"] == 80 and info["tick_p99_ms"] == 44.0
    # A status without them (an older bridge, a mistyped field) keeps what was known.
    fleet.apply("a", {"type": "instance_status", "engine_details": {"slots": "many"}})
    again = fleet.instances["a"].to_dict()
    assert again["device"] == "cuda:1" and again["slots"] == 80
