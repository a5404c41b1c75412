"""The bridge ⇄ supervisor wire: every event and command round-trips, and bad input is named."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from xswarm.bridge import control as bridge_control
from xswarm.bridge import events, status
from xswarm.bridge.app import Bridge
from xswarm.bridge.call import Call
from xswarm.bridge.events import Subscriber
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
    control.InstanceStatus(
        active_calls=0,
        engine="moshi",
        engine_details={"device": "cuda:1", "slots": 80},
        device="cuda:1",
        gpu="NVIDIA H200 at 0000:62:00.0",
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


# What the bridge puts on the wire, byte for byte, with time, ids, process facts and the
# call's clock pinned (`_pinned_bridge`). Field names and order are the ones the bridge sent
# before its producers became the types above; the one change is `suggestion_rejected` from
# an engine refusal, which now has the documented order of every other rejection.
WIRE: dict[str, str] = {
    "hello": (
        '{"type": "hello", "ts": "2027-01-15T08:00:00.000Z", "instance": "voice@1", '
        '"version": "9.9.9", "pid": 4242, "engine": "echo", "max_concurrent_calls": 4}'
    ),
    "call_started": (
        '{"type": "call_started", "ts": "2027-01-15T08:00:00.000Z", "instance": "voice@1", '
        '"call_id": "c-0123456789ab", "transport": "twilio", "remote": "203.0.113.9", '
        '"stream_sid": "MZ123", "call_sid": "CA456", "caller": "+15550100"}'
    ),
    "call_started_moshi": (
        '{"type": "call_started", "ts": "2027-01-15T08:00:00.000Z", "instance": "voice@1", '
        '"call_id": "c-ba9876543210", "transport": "moshi", "remote": "203.0.113.9"}'
    ),
    "call_stats": (
        '{"type": "call_stats", "ts": "2027-01-15T08:00:00.000Z", "instance": "voice@1", '
        '"call_id": "c-0123456789ab", "level_in_dbfs": -23.0, "level_out_dbfs": -23.0, '
        '"latency_p50_ms": 12.0, "latency_p99_ms": 12.0, "duration_s": 12.5, "frames_in": 1, '
        '"frames_out": 1, "late_frames": 0}'
    ),
    "call_ended": (
        '{"type": "call_ended", "ts": "2027-01-15T08:00:00.000Z", "instance": "voice@1", '
        '"call_id": "c-0123456789ab", "duration_s": 12.5, "reason": "caller_hangup", '
        '"frames_in": 1, "frames_out": 1, "late_frames": 0, "underruns": 0, "late_steps": 0, '
        '"dropped_frames": 0, "dropped": {}}'
    ),
    "call_ended_unknown": (
        '{"type": "call_ended", "ts": "2027-01-15T08:00:00.000Z", "instance": "voice@1", '
        '"call_id": "c-ba9876543210", "duration_s": 12.5, "reason": "unknown", "frames_in": 1, '
        '"frames_out": 1, "late_frames": 0, "underruns": 0, "late_steps": 0, '
        '"dropped_frames": 0, "dropped": {}}'
    ),
    "instance_status": (
        '{"type": "instance_status", "ts": "2027-01-15T08:00:00.000Z", "instance": "voice@1", '
        '"active_calls": 0, "max_concurrent_calls": 4, "engine": "echo", "state": "starting", '
        '"cpu": 12.5, "rss": 1073741824, "limits": {"memory_high": null, '
        '"memory_max": 2147483648}, "tick_p50_ms": null, "tick_p99_ms": null, '
        '"late_frames": 0, "uptime_s": 10.5, "version": "9.9.9", "pid": 4242, "reloads": 0, '
        '"engine_details": {}, "refused_total": {"full": 0, "draining": 0, "starting": 0, '
        '"auth": 0, "per_source": 0}}'
    ),
    "snapshot": (
        '{"type": "snapshot", "ts": "2027-01-15T08:00:00.000Z", "instance": "voice@1", '
        '"calls": [{"call_id": "c-0123456789ab", "transport": "twilio", '
        '"remote": "203.0.113.9", "stream_sid": "MZ123", "call_sid": "CA456", '
        '"caller": "+15550100", "started_at": 1800000000.25, "level_in_dbfs": -23.0, '
        '"level_out_dbfs": -23.0, "latency_p50_ms": 12.0, "latency_p99_ms": 12.0, '
        '"duration_s": 12.5, "frames_in": 1, "frames_out": 1, "late_frames": 0}], '
        '"status": {"active_calls": 1, "max_concurrent_calls": 4, "engine": "echo", '
        '"state": "starting", "cpu": 12.5, "rss": 1073741824, "limits": {"memory_high": null, '
        '"memory_max": 2147483648}, "tick_p50_ms": null, "tick_p99_ms": null, '
        '"late_frames": 0, "uptime_s": 10.5, "version": "9.9.9", "pid": 4242, "reloads": 0, '
        '"engine_details": {}, "refused_total": {"full": 0, "draining": 0, "starting": 0, '
        '"auth": 0, "per_source": 0}}}'
    ),
    "user_speech": (
        '{"type": "user_speech", "ts": "2027-01-15T08:00:00.000Z", "instance": "voice@1", '
        '"call_id": "c-0123456789ab", "duration_ms": 320}'
    ),
    "text": (
        '{"type": "text", "ts": "2027-01-15T08:00:00.000Z", "instance": "voice@1", '
        '"call_id": "c-0123456789ab", "text": "hi"}'
    ),
    "dtmf": (
        '{"type": "dtmf", "ts": "2027-01-15T08:00:00.000Z", "instance": "voice@1", '
        '"call_id": "c-0123456789ab", "digit": "#"}'
    ),
    "suggestion_applied": (
        '{"type": "suggestion_applied", "ts": "2027-01-15T08:00:00.000Z", '
        '"instance": "voice@1", "call_id": "c-0123456789ab", "request_id": "r-1", '
        '"text": "offer a callback"}'
    ),
    "suggestion_applied_no_id": (
        '{"type": "suggestion_applied", "ts": "2027-01-15T08:00:00.000Z", '
        '"instance": "voice@1", "call_id": "c-0123456789ab", "text": "offer a callback"}'
    ),
    "suggestion_rejected_no_call": (
        '{"type": "suggestion_rejected", "ts": "2027-01-15T08:00:00.000Z", '
        '"instance": "voice@1", "call_id": null, '
        '"reason": "call_id is required when 0 calls are live", "request_id": 7}'
    ),
    "suggestion_rejected_unknown_call": (
        '{"type": "suggestion_rejected", "ts": "2027-01-15T08:00:00.000Z", '
        '"instance": "voice@1", "call_id": "c-gone", "reason": "no live call c-gone"}'
    ),
    "suggestion_rejected_by_engine": (
        '{"type": "suggestion_rejected", "ts": "2027-01-15T08:00:00.000Z", '
        '"instance": "voice@1", "call_id": "c-ba9876543210", "reason": "engine busy", '
        '"request_id": "r-2"}'
    ),
    "pong": ('{"type": "pong", "ts": "2027-01-15T08:00:00.000Z", "instance": "voice@1", "id": 3}'),
    "pong_no_id": ('{"type": "pong", "ts": "2027-01-15T08:00:00.000Z", "instance": "voice@1"}'),
    "pong_odd_id": (
        '{"type": "pong", "ts": "2027-01-15T08:00:00.000Z", "instance": "voice@1", '
        '"id": {"a": [1.5]}}'
    ),
    "error": (
        '{"type": "error", "ts": "2027-01-15T08:00:00.000Z", "instance": "voice@1", '
        '"message": "invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2"}'
    ),
    "error_hangup": (
        '{"type": "error", "ts": "2027-01-15T08:00:00.000Z", "instance": "voice@1", '
        '"message": "no live call c-gone"}'
    ),
}

TS = "2027-01-15T08:00:00.000Z"


class _Process:
    """The psutil process as the status board reads it, with fixed numbers."""

    def cpu_percent(self, interval: None) -> float:
        return 12.5

    def memory_info(self) -> SimpleNamespace:
        return SimpleNamespace(rss=1 << 30)


def _pinned_bridge(monkeypatch: pytest.MonkeyPatch) -> Bridge:
    monkeypatch.setattr(events, "utc_now", lambda: TS)
    monkeypatch.setattr(status, "__version__", "9.9.9")
    monkeypatch.setattr(status, "uptime", lambda started: 10.5)
    monkeypatch.setattr(Call, "duration_s", 12.5)
    bridge = Bridge(defaults(), EchoEngine(4), instance="voice@1")
    monkeypatch.setattr(status.os, "getpid", lambda: 4242)
    bridge.status.limits = control.MemoryLimits(None, 2 << 30)
    monkeypatch.setattr(bridge.status, "_process", _Process())
    return bridge


def _call(call_id: str, transport: str) -> Call:
    call = Call(transport, "203.0.113.9", frame_samples=480)
    call.call_id = call_id
    call.started_at = 1_800_000_000.25
    if transport == "twilio":
        call.stream_sid, call.call_sid, call.caller = "MZ123", "CA456", "+15550100"
    tone = (0.1 * np.sin(np.arange(480) / 5)).astype(np.float32)
    call.push_audio(tone, arrived=0.0)
    call.note_output(tone, latency_s=0.012)
    call.frames_out = 1
    return call


def _go_live(bridge: Bridge, call: Call) -> None:
    peer = SimpleNamespace(call=call, log=logging.LoggerAdapter(logging.getLogger("test")))
    bridge.calls.live[call.call_id] = peer  # type: ignore[assignment]


async def _everything_the_bridge_sends(bridge: Bridge) -> dict[str, str]:
    """Each event from the producer that makes it in the bridge (types the transports build
    inline are built here the same way), as the hub serialises it."""
    hub = bridge.hub
    subscriber = Subscriber("test")
    hub.add(subscriber)
    twilio, moshi = _call("c-0123456789ab", "twilio"), _call("c-ba9876543210", "moshi")
    twilio.end_reason = "caller_hangup"

    async def reply(command: str) -> str:
        event = await bridge_control._command(bridge, command)
        assert event is not None
        return hub.message(event)

    async def published() -> str:
        return await asyncio.wait_for(subscriber.queue.get(), 5)

    sent = {
        "hello": hub.message(control.Hello("9.9.9", 4242, bridge.engine.name, bridge.max_calls)),
        "call_started": hub.message(twilio.started_event()),
        "call_started_moshi": hub.message(moshi.started_event()),
        "call_stats": hub.message(twilio.stats_event()),
        "call_ended": hub.message(twilio.ended_event()),
        "call_ended_unknown": hub.message(moshi.ended_event()),
        "instance_status": hub.message(bridge.status.instance_status()),
        "user_speech": hub.message(control.UserSpeech(twilio.call_id, 320)),
        "text": hub.message(control.Text(twilio.call_id, "hi")),
        "dtmf": hub.message(control.Dtmf(twilio.call_id, "#")),
        "suggestion_applied_no_id": hub.message(
            control.SuggestionApplied(twilio.call_id, "offer a callback")
        ),
        "pong": await reply('{"type":"ping","id":3}'),
        "pong_no_id": await reply('{"type":"ping"}'),
        "pong_odd_id": await reply('{"type":"ping","id":{"a":[1.5]}}'),
        "error": await reply("{not json"),
        "error_hangup": await reply('{"type":"hangup","call_id":"c-gone"}'),
    }
    bridge.queue_suggestion(None, "x", "normal", 7)
    sent["suggestion_rejected_no_call"] = await published()
    bridge.queue_suggestion("c-gone", "x")
    sent["suggestion_rejected_unknown_call"] = await published()
    _go_live(bridge, twilio)
    sent["snapshot"] = await reply('{"type":"snapshot"}')

    async def suggest(call: Call, text: str) -> SimpleNamespace:
        return SimpleNamespace(applied=call is twilio, reason="engine busy")

    bridge.engine_loop.suggest = suggest  # type: ignore[method-assign,assignment]
    _go_live(bridge, moshi)
    bridge.queue_suggestion(twilio.call_id, "offer a callback", "normal", "r-1")
    bridge.queue_suggestion(moshi.call_id, "refuse me", "normal", "r-2")
    for _ in range(2):
        message = await published()
        name = "suggestion_applied" if "applied" in message else "suggestion_rejected_by_engine"
        sent[name] = message
    return sent


def test_the_bridge_sends_exactly_these_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every producer's event, serialised by the hub, is the pinned text (one type each)."""
    sent = asyncio.run(_everything_the_bridge_sends(_pinned_bridge(monkeypatch)))
    assert sent == WIRE


@pytest.mark.parametrize("name", [name for name in WIRE if name != "pong_odd_id"])
def test_what_the_bridge_sends_decodes_and_stamps_back_unchanged(name: str) -> None:
    """The supervisor reads every bridge message as a type that encodes back to it."""
    message = json.loads(WIRE[name])
    envelope = control.decode_event(message)
    assert (envelope.ts, envelope.instance) == (TS, "voice@1")
    again = control.stamp(envelope.event, TS, "voice@1")
    assert again == message
    assert list(again) == list(message), "field order as the bridge writes it"


def test_a_ping_id_the_supervisor_never_sends_is_echoed_but_read_as_absent() -> None:
    """The bridge echoes any JSON id; the supervisor only matches the strings and integers
    it sends, so anything else reads as no id rather than as a bad message."""
    event = control.decode_event(json.loads(WIRE["pong_odd_id"])).event
    assert event == control.Pong(None)


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


def test_instance_status_names_its_device_only_when_it_has_one() -> None:
    """Echo has no device and an older bridge sends none: the field is then absent, and a
    decoder reads a missing or mistyped one as None."""
    assert "device" not in control.InstanceStatus(engine="echo").encode()
    body = control.InstanceStatus(device="cuda:3", gpu="NVIDIA H200 at 0000:c1:00.0").encode()
    assert body["device"] == "cuda:3" and body["gpu"] == "NVIDIA H200 at 0000:c1:00.0"
    old = control.InstanceStatus.decode({"type": "instance_status", "active_calls": 2})
    assert old.device is None and old.gpu is None and old.active_calls == 2
    bad = control.InstanceStatus.decode({"device": 3, "gpu": ["x"]})
    assert bad.device is None and bad.gpu is None
