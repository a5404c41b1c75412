"""The bridge ⇄ supervisor wire: any event a bridge sends decodes to a typed event or a
BadMessage naming ``type``/``call_id``, never to a NaN; any command text decodes or is refused
with a BadMessage naming the field; every typed message round-trips through JSON."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import (
    examples,
    finite_json_values,
    json_values,
    non_finite_numbers,
    objects_with,
    typed,
)
from xswarm.protocol import control
from xswarm.protocol.values import BadMessage

MAX_BYTES = 65536
EVENT_CLASSES = [control._EVENTS[name] for name in control.EVENT_TYPES]
FIELDS = sorted(
    {spec.name for cls in EVENT_CLASSES for spec in dataclasses.fields(cls)}
    | {
        spec.name
        for cls in (control.Counters, control.InjectSuggestion, control.Hangup)
        for spec in dataclasses.fields(cls)
    }
    | {"ts", "instance", "call_id", "started_at", "request_id", "id"}
)

# A call event is identified by a non-empty call_id (the decoder refuses an empty one).
call_ids = st.text(min_size=1, max_size=24)
started_at = (
    st.none() | st.text(min_size=1, max_size=24) | st.floats(allow_nan=False, allow_infinity=False)
)
request_ids = st.none() | st.text(max_size=24) | st.integers(min_value=-(2**63), max_value=2**63)


@st.composite
def snapshot_calls(draw: st.DrawFn) -> control.SnapshotCall:
    call_id = st.just(draw(call_ids))
    return control.SnapshotCall(
        started=draw(typed(control.CallStarted, call_id=call_id)),
        stats=draw(typed(control.CallStats, call_id=call_id)),
        started_at=draw(started_at),
    )


OVERRIDES = {control.SnapshotCall: snapshot_calls()}
events = st.one_of(
    *(
        typed(cls, OVERRIDES, request_id=request_ids, id=request_ids, call_id=call_ids)
        for cls in EVENT_CLASSES
    )
)


def _decode(message: dict[str, Any]) -> control.Envelope | None:
    try:
        return control.decode_event(message)
    except BadMessage as exc:
        assert exc.field in ("type", "call_id"), exc
        assert exc.field in str(exc)
        return None


@examples(150)
@given(objects_with(FIELDS, control.EVENT_TYPES))
def test_any_event_object_decodes_or_names_its_field(message: dict[str, Any]) -> None:
    envelope = _decode(message)
    if envelope is not None:
        assert not non_finite_numbers(envelope), non_finite_numbers(envelope)
        # What the supervisor relays must be JSON again, without NaN.
        json.dumps(envelope.event.encode(), allow_nan=False)


@examples(300)
@given(events, st.text(max_size=24), st.text(max_size=24))
def test_every_event_round_trips_through_json(event: control.Event, ts: str, instance: str) -> None:
    wire = json.loads(json.dumps(control.stamp(event, ts, instance), allow_nan=False))
    assert control.decode_event(wire) == control.Envelope(event, ts, instance)


commands = st.one_of(
    typed(
        control.InjectSuggestion, request_id=request_ids, call_id=st.none() | st.text(max_size=24)
    ),
    typed(control.Hangup, call_id=st.text(max_size=24)),
    st.just(control.RequestSnapshot()),
    st.builds(control.Ping, finite_json_values),
)


@examples(200)
@given(commands)
def test_every_command_round_trips_through_json(command: control.Command) -> None:
    raw = json.dumps(command.encode(), allow_nan=False)
    assert control.decode_command(raw, MAX_BYTES) == command


@examples(150)
@given(
    st.binary(max_size=200)
    | st.text(max_size=200)
    | objects_with(FIELDS, control.COMMAND_TYPES).map(json.dumps)
    | json_values.map(json.dumps)
)
def test_any_command_text_decodes_or_is_a_bad_message(raw: str | bytes) -> None:
    try:
        command = control.decode_command(raw, MAX_BYTES)
    except BadMessage as exc:
        assert str(exc)
        if exc.field is not None:
            assert exc.field in str(exc)
        return
    assert not non_finite_numbers(command), command
    json.dumps(command.encode(), allow_nan=False)


@examples(200)
@given(st.sampled_from(["call_id", "priority", "text"]), finite_json_values)
def test_a_wrong_suggestion_field_is_named(name: str, value: object) -> None:
    message = control.InjectSuggestion("hi", "c1").encode() | {name: value}
    try:
        control.decode_command(json.dumps(message), MAX_BYTES)
    except BadMessage as exc:
        assert exc.field == name and name in str(exc), exc


def test_a_huge_integer_is_a_bad_message_not_a_value_error() -> None:
    raw = '{"type":"ping","id":' + "1" * 5000 + "}"
    try:
        control.decode_command(raw, MAX_BYTES)
    except BadMessage as exc:
        assert "integer" in str(exc)
    else:
        raise AssertionError("a 5000-digit integer was accepted")


def test_nan_in_a_command_is_refused_so_it_is_never_echoed() -> None:
    for constant in ("NaN", "Infinity", "-Infinity"):
        try:
            control.decode_command('{"type":"ping","id":' + constant + "}", MAX_BYTES)
        except BadMessage as exc:
            assert constant in str(exc)
        else:
            raise AssertionError(f"{constant} was accepted as a ping id")


def test_engine_details_never_carry_nan() -> None:
    event = control.decode_event(
        json.loads(
            '{"type":"instance_status","engine_details":{"a":NaN,"b":[Infinity,1],"c":{"d":-Infinity}}}'
        )
    )
    assert not non_finite_numbers(event)
    assert event.event.engine_details == {"a": None, "b": [None, 1], "c": {"d": None}}
