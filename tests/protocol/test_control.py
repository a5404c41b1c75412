"""The bridge ⇄ supervisor wire: every event and command round-trips, and bad input is named."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from xswarm.bridge.app import Bridge
from xswarm.bridge.call import Call
from xswarm.bridge.events import EventHub
from xswarm.config import defaults
from xswarm.engine.echo import EchoEngine
from xswarm.protocol import control
from xswarm.protocol.values import BadMessage

EVENTS: list[control.Event] = [
    control.Hello("0.1.0", 42, "echo", 300),
    control.InstanceStatus(
        active_calls=1,
        max_concurrent_calls=300,
        engine="moshi",
        state="ready",
        cpu=12.5,
        rss=1 << 30,
        limits=control.MemoryLimits(None, 2 << 30),
        tick_p50_ms=8.1,
        tick_p99_ms=19.0,
        late_frames=3,
        uptime_s=10.5,
        version="0.1.0",
        pid=42,
        reloads=1,
        engine_details={"device": "cuda"},
    ),
    control.CallStarted("c-1", "twilio", "1.2.3.4", "MZ1", "CA1", "+15550100"),
    control.CallStarted("c-2", "moshi", "::1"),
    control.CallStats("c-1", -30.5, -20.0, 4.2, None, 12.25, control.Counters(600, 590, 2)),
    control.CallEnded("c-1", 12.5, "caller_hangup", control.Counters(600, 590, 2)),
    control.UserSpeech("c-1", 840),
    control.Text("c-1", "hello there"),
    control.Dtmf("c-1", "5"),
    control.SuggestionApplied("c-1", "offer a callback", "sv-1"),
    control.SuggestionApplied("c-1", "no id"),
    control.SuggestionRejected(None, "call_id is required when 0 calls are live", 7),
    control.Pong(3),
    control.Pong(),
    control.Error("invalid JSON"),
    control.Snapshot(
        (
            control.SnapshotCall(
                control.CallStarted("c-1", "twilio", "1.2.3.4"),
                control.CallStats("c-1", -30.0, -25.0, 1.0, 2.0, 3.0, control.Counters(1, 2, 0)),
                started_at=1_800_000_000.5,
            ),
        ),
        control.InstanceStatus(active_calls=1, state="ready"),
    ),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_round_trips_through_json(event: control.Event) -> None:
    message = control.stamp(event, "2027-01-15T08:00:00.000Z", "voice@1")
    assert list(message)[:3] == ["type", "ts", "instance"]
    envelope = control.decode_event(json.loads(json.dumps(message)))
    assert envelope == control.Envelope(event, "2027-01-15T08:00:00.000Z", "voice@1")


def _bridge_call() -> Call:
    call = Call("twilio", "203.0.113.9", frame_samples=480)
    call.stream_sid, call.call_sid, call.caller = "MZ123", "CA456", "+15550100"
    tone = (0.1 * np.sin(np.arange(480) / 5)).astype(np.float32)
    call.push_audio(tone, arrived=0.0)
    call.note_output(tone, latency_s=0.012)
    call.frames_out = 1
    call.end_reason = "caller_hangup"
    return call


def _sent(hub: EventHub, event_type: str, body: dict[str, Any]) -> dict[str, Any]:
    """A message exactly as the bridge puts it on the wire."""
    decoded: dict[str, Any] = json.loads(hub.message(event_type, body))
    return decoded


def test_the_bridges_own_events_decode_and_encode_back_unchanged() -> None:
    """The producers in bridge/call.py and bridge/app.py: encode() must give what they give."""
    config = defaults()
    bridge = Bridge(config, EchoEngine(4), instance="voice@1")
    call = _bridge_call()
    hub = bridge.hub
    captured = [
        _sent(
            hub,
            "hello",
            {"version": "0.1.0", "pid": 1, "engine": "echo", "max_concurrent_calls": 4},
        ),
        _sent(hub, "call_started", call.started_event()),
        _sent(hub, "call_stats", call.stats_event()),
        _sent(hub, "call_ended", call.ended_event()),
        _sent(hub, "instance_status", bridge.status.instance_status()),
        _sent(
            hub,
            "snapshot",
            {"calls": [call.snapshot_entry()], "status": bridge.status.instance_status()},
        ),
        _sent(hub, "user_speech", {"call_id": call.call_id, "duration_ms": 320}),
        _sent(hub, "text", {"call_id": call.call_id, "text": "hi"}),
        _sent(hub, "dtmf", {"call_id": call.call_id, "digit": "#"}),
        _sent(hub, "suggestion_applied", {"call_id": call.call_id, "request_id": "r", "text": "x"}),
        _sent(hub, "suggestion_rejected", {"call_id": None, "reason": "no live call"}),
    ]
    for message in captured:
        envelope = control.decode_event(message)
        assert envelope.instance == "voice@1"
        assert envelope.ts is not None
        again = control.stamp(envelope.event, envelope.ts, envelope.instance)
        assert again == message
        assert list(again) == list(message), "field order as the bridge writes it"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, True, "12", [1], {"a": 1}])
def test_non_finite_and_non_numbers_read_as_absent(bad: object) -> None:
    message = {"type": "call_stats", "call_id": "c-1", "level_in_dbfs": bad, "frames_in": bad}
    event = control.decode_event(message).event
    assert isinstance(event, control.CallStats)
    assert event.level_in_dbfs is None and event.counters.frames_in is None
    status = control.decode_event({"type": "instance_status", "cpu": bad, "rss": bad}).event
    assert isinstance(status, control.InstanceStatus)
    assert status.cpu is None and status.rss is None


def test_nan_from_json_text_is_dropped_so_it_is_never_relayed() -> None:
    message = json.loads('{"type":"call_stats","call_id":"c","latency_p50_ms":NaN}')
    event = control.decode_event(message).event
    encoded = json.dumps(event.encode(), allow_nan=False)
    assert '"latency_p50_ms": null' in encoded


@pytest.mark.parametrize(
    ("message", "reason", "field"),
    [
        ({}, 'missing "type"', "type"),
        ({"type": 5}, '"type" must be a string, got a number', "type"),
        ({"type": "launch"}, "unknown event type 'launch'", "type"),
        ({"type": "call_started"}, 'call_started: missing "call_id"', "call_id"),
        (
            {"type": "call_ended", "call_id": None},
            '"call_id" must be a string, got null',
            "call_id",
        ),
        ({"type": "call_stats", "call_id": ""}, '"call_id" must not be empty', "call_id"),
        (
            {"type": "text", "call_id": 5},
            'text: "call_id" must be a string, got a number',
            "call_id",
        ),
    ],
)
def test_unusable_events_name_the_field(message: dict[str, Any], reason: str, field: str) -> None:
    with pytest.raises(BadMessage, match=reason) as caught:
        control.decode_event(message)
    assert caught.value.field == field


def test_snapshot_skips_entries_without_a_call_id_and_keeps_the_rest() -> None:
    snapshot = control.Snapshot.decode(
        {"calls": [{"call_id": 5}, "x", {"call_id": "c-1", "frames_in": 3}], "status": []}
    )
    assert [c.call_id for c in snapshot.calls] == ["c-1"]
    assert snapshot.calls[0].stats.counters.frames_in == 3
    assert snapshot.status is None


COMMANDS: list[control.Command] = [
    control.InjectSuggestion("offer a callback", "c-1", "high", "sv-1"),
    control.InjectSuggestion("only call"),
    control.Hangup("c-1"),
    control.Hangup("c-1", "operator"),
    control.RequestSnapshot(),
    control.Ping(7),
    control.Ping(),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_every_command_round_trips(command: control.Command) -> None:
    assert control.decode_command(json.dumps(command.encode()), 4096) == command


def test_the_supervisors_inject_command_is_the_documented_shape() -> None:
    assert control.InjectSuggestion("t", "c-1", "normal", "sv-3").encode() == {
        "type": "inject_suggestion",
        "call_id": "c-1",
        "text": "t",
        "priority": "normal",
        "request_id": "sv-3",
    }


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "invalid JSON"),
        ("[]", "expected a JSON object, got an array"),
        (b"{}", "binary messages are not accepted"),
        ('{"type":"launch_missiles"}', "unknown command type launch_missiles"),
        ('{"type":null}', "unknown command type null"),
        ('{"type":"hangup","call_id":42}', "hangup needs a call_id string, got a number"),
        ('{"type":"hangup"}', "hangup needs a call_id string, got null"),
        ('{"type":"inject_suggestion","call_id":1,"text":"x"}', "call_id must be a string"),
        ('{"type":"inject_suggestion"}', 'inject_suggestion: missing "text"'),
        ('{"type":"inject_suggestion","text":"x","priority":2}', "priority must be one of"),
        ('{"type":"ping","pad":"' + "x" * 5000 + '"}', "the limit is 4096"),
    ],
)
def test_bad_commands_get_one_precise_error(raw: str | bytes, reason: str) -> None:
    with pytest.raises(BadMessage, match=reason):
        control.decode_command(raw, 4096)


@pytest.mark.parametrize(
    ("text", "priority", "problem"),
    [
        ("ok", "normal", None),
        ("x" * control.MAX_SUGGESTION_CHARS, "high", None),
        ("   ", "normal", "empty text"),
        (
            "x" * (control.MAX_SUGGESTION_CHARS + 1),
            "low",
            "text is 1001 characters; the limit is 1000",
        ),
        ("ok", "urgent", "priority 'urgent'; expected one of low, normal, high"),
    ],
)
def test_suggestion_limits(text: str, priority: str, problem: str | None) -> None:
    assert control.suggestion_problem(text, priority) == problem
