"""The supervisor ⇄ operator wire: commands round-trip, bad ones are named, records are tolerant."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from xswarm.protocol import operator
from xswarm.protocol.control import MemoryLimits
from xswarm.protocol.values import BadMessage

COMMANDS: list[operator.Command] = [
    operator.Auth("s3cret"),
    operator.Subscribe(),
    operator.Subscribe(batch=True),
    operator.Ping(3),
    operator.Ping("abc"),
    operator.Ping(),
    operator.InjectSuggestion("hi", "high", "c1", "r", "a"),
    operator.InjectSuggestion(""),
    operator.Hangup("c1"),
    operator.Hangup("c1", "voice-b"),
    operator.Watch(("c1", "c2")),
    operator.Watch(()),
    operator.Watch(),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_every_command_round_trips(command: operator.Command) -> None:
    assert operator.decode_command(json.dumps(command.encode())) == command


def test_the_tuis_inject_command_is_the_documented_shape() -> None:
    sent = operator.InjectSuggestion("t", "normal", call_id="c-1", request_id="tui-1").encode()
    assert sent == {
        "type": "inject_suggestion",
        "call_id": "c-1",
        "text": "t",
        "priority": "normal",
        "request_id": "tui-1",
    }


@pytest.mark.parametrize(
    ("raw", "reason", "field"),
    [
        ("{", "invalid JSON: Expecting property name", None),
        ('{"type": 5}', '"type" must be a string, got a number', "type"),
        ("{}", 'missing "type"; expected one of auth, subscribe', "type"),
        ('{"type": "nope"}', "unknown type 'nope'; expected one of", "type"),
        ('{"type": "auth"}', 'auth: missing "token"', "token"),
        ('{"type": "auth", "token": ""}', 'auth: "token" must not be empty', "token"),
        (
            '{"type": "inject_suggestion", "text": ["a"]}',
            '"text" must be a string, got an array',
            "text",
        ),
        (
            '{"type": "inject_suggestion", "text": "a", "priority": "asap"}',
            '"priority" must be one of',
            "priority",
        ),
        (
            '{"type": "inject_suggestion", "text": "a", "request_id": 1.5}',
            "string or an integer, got a number",
            "request_id",
        ),
        (
            '{"type": "inject_suggestion", "text": "a", "request_id": "' + "r" * 129 + '"}',
            "longer than 128",
            "request_id",
        ),
        (
            '{"type": "hangup", "call_id": {"a": 1}}',
            '"call_id" must be a string, got an object',
            "call_id",
        ),
        ('{"type": "ping", "id": true}', "got a boolean", "id"),
        ('{"type": "subscribe", "batch": 1}', '"batch" must be true or false', "batch"),
        ('{"type": "watch", "call_ids": "c1"}', '"call_ids" must be a list', "call_ids"),
        ('{"type": "watch", "call_ids": [1]}', '"call_ids" must be a list', "call_ids"),
        (
            json.dumps({"type": "watch", "call_ids": ["c"] * 1001}),
            "names 1001 calls; at most 1000",
            "call_ids",
        ),
    ],
)
def test_bad_commands_name_the_field(raw: str, reason: str, field: str | None) -> None:
    with pytest.raises(BadMessage, match=reason) as caught:
        operator.decode_command(raw)
    assert caught.value.field == field


def test_batches_say_how_slowly_unwatched_calls_come() -> None:
    batch = operator.Batch("t", ({"type": "call_stats", "call_id": "c1"},), background_s=5.0)
    assert batch.encode()["background_s"] == 5.0
    assert operator.Batch.decode(batch.encode()) == batch
    old = operator.Batch.decode({"type": "batch", "ts": "t", "events": []})
    assert old.background_s is None, "a supervisor without watch"


def test_oversize_and_binary_messages_are_refused() -> None:
    with pytest.raises(BadMessage, match="the limit is 65536"):
        operator.decode_command('{"type":"ping","pad":"' + "x" * 70_000 + '"}')
    with pytest.raises(BadMessage, match="binary"):
        operator.decode_command(b'{"type":"ping"}')
    with pytest.raises(BadMessage, match="nested too deeply"):
        operator.decode_command("[" * 100_000 + "]" * 100_000, max_bytes=1 << 20)


INSTANCE = operator.InstanceInfo(
    name="voice-b",
    url="ws://10.0.0.5:10001/control#voice-b",
    state="up",
    engine="echo",
    active_calls=1,
    max_concurrent_calls=300,
    tick_p50_ms=1.5,
    tick_p99_ms=3.0,
    cpu=2.5,
    rss=1000,
    limits=MemoryLimits(None, 2048),
    restarts=0,
    last_seen="2027-01-15T08:00:00.000Z",
    version="0.1.0",
    pid=10,
    error=None,
    bridge_name="voice",
    refusals_total=12,
    refusals_last_minute=3,
)
CALL = operator.CallInfo(
    call_id="c-1",
    instance="voice-b",
    transport="twilio",
    remote="1.2.3.4",
    caller="+15550100",
    started_at="2027-01-15T08:00:00.000Z",
    duration_s=10.0,
    level_in_dbfs=-30.0,
    frames_in=5,
    suggestions=0,
    state="active",
)


def test_snapshot_round_trips() -> None:
    snapshot = operator.Snapshot("2027-01-15T08:00:10.000Z", (INSTANCE,), (CALL,))
    assert operator.Snapshot.decode(json.loads(json.dumps(snapshot.encode()))) == snapshot


def test_instance_state_carries_the_instance_record() -> None:
    event = operator.InstanceState("ts", "voice-b", "down", "connection refused", INSTANCE)
    encoded = event.encode()
    assert encoded["info"]["limits"] == {"memory_high": None, "memory_max": 2048}
    assert operator.InstanceInfo.decode(encoded["info"]) == INSTANCE


@pytest.mark.parametrize("bad", [math.nan, math.inf, True, "3", None, [1]])
def test_records_drop_bad_values_instead_of_failing(bad: Any) -> None:
    call = operator.CallInfo.decode({"call_id": "c-1", "duration_s": bad, "caller": [bad]})
    assert call.duration_s is None and call.caller is None
    inst = operator.InstanceInfo.decode({"name": "a", "cpu": bad, "limits": bad})
    assert inst.cpu is None and inst.limits == MemoryLimits()


def test_snapshot_skips_records_without_identity() -> None:
    snapshot = operator.Snapshot.decode(
        {"instances": [{"name": 5}, {"name": "a"}, 7], "calls": [{}, {"call_id": "c"}], "ts": 1}
    )
    assert [i.name for i in snapshot.instances] == ["a"]
    assert [c.call_id for c in snapshot.calls] == ["c"]
    assert snapshot.ts == ""


@pytest.mark.parametrize(
    ("message", "result"),
    [
        ({"success": True, "message": "ok"}, operator.AuthResult(True, "ok")),
        ({"success": "true"}, operator.AuthResult(False, "")),
        ({"success": 1, "message": 5}, operator.AuthResult(False, "5")),
    ],
)
def test_auth_result_is_success_only_when_true(message: dict[str, Any], result: Any) -> None:
    assert operator.AuthResult.decode(message) == result


def test_replies_encode_as_documented() -> None:
    assert operator.AuthResult(True, "authenticated").encode() == {
        "type": "auth_result",
        "success": True,
        "message": "authenticated",
    }
    assert operator.Pong(7).encode() == {"type": "pong", "id": 7}
    assert operator.Pong().encode() == {"type": "pong"}
    assert operator.Error("no").encode() == {"type": "error", "message": "no"}
    assert operator.InstanceRemoved("a", "ts").encode() == {
        "type": "instance_removed",
        "instance": "a",
        "ts": "ts",
    }


def test_subscribe_is_plain_unless_batch_is_asked_for() -> None:
    assert operator.Subscribe().encode() == {"type": "subscribe"}
    assert operator.decode_command('{"type": "subscribe", "batch": false}') == operator.Subscribe()
    assert operator.Subscribe(batch=True).encode() == {"type": "subscribe", "batch": True}


def test_batch_round_trips_in_order() -> None:
    events = (
        {"type": "call_stats", "instance": "a", "call_id": "c1", "frames_in": 5},
        {"type": "call_ended", "instance": "a", "call_id": "c1", "reason": "caller_hangup"},
    )
    batch = operator.Batch("2027-01-15T08:00:10.000Z", events)
    wire = json.loads(json.dumps(batch.encode()))
    assert wire == {"type": "batch", "ts": "2027-01-15T08:00:10.000Z", "events": list(events)}
    assert operator.Batch.decode(wire) == batch


def test_batch_decode_skips_what_is_not_an_event() -> None:
    wire = {"type": "batch", "events": [1, "x", {"no": "type"}, {"type": 5}, {"type": "text"}]}
    assert operator.Batch.decode(wire) == operator.Batch("", ({"type": "text"},))
    assert operator.Batch.decode({"type": "batch", "events": {"a": 1}}).events == ()
