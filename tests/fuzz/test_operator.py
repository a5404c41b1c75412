"""The supervisor ⇄ operator wire: any operator text decodes to a command or a BadMessage
naming the field, and every typed message, both ways, round-trips through JSON."""

from __future__ import annotations

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
from xswarm.protocol import operator
from xswarm.protocol.values import BadMessage

FIELDS = ("token", "id", "text", "priority", "call_id", "request_id", "instance")
ids = (
    st.none()
    | st.text(max_size=operator.MAX_ID_CHARS)
    | st.integers(min_value=-(2**63), max_value=2**63)
)
names = st.text(min_size=1, max_size=24)

commands = st.one_of(
    st.builds(operator.Auth, names),
    st.just(operator.Subscribe()),
    st.builds(operator.Ping, ids),
    typed(operator.InjectSuggestion, priority=st.sampled_from(operator.PRIORITIES), request_id=ids),
    typed(operator.Hangup, call_id=names),
)


@examples(200)
@given(commands)
def test_every_operator_command_round_trips(command: operator.Command) -> None:
    assert operator.decode_command(json.dumps(command.encode(), allow_nan=False)) == command


@examples(150)
@given(
    st.binary(max_size=200)
    | st.text(max_size=200)
    | objects_with(FIELDS, operator.COMMAND_TYPES).map(json.dumps)
    | json_values.map(json.dumps)
)
def test_any_operator_text_decodes_or_is_a_bad_message(raw: str | bytes) -> None:
    try:
        command = operator.decode_command(raw)
    except BadMessage as exc:
        assert str(exc)
        if exc.field is not None:
            assert exc.field in str(exc)
        return
    assert not non_finite_numbers(command)


@examples(150)
@given(
    st.sampled_from(["text", "priority", "call_id", "request_id", "instance"]), finite_json_values
)
def test_a_wrong_field_is_named(name: str, value: object) -> None:
    message = operator.InjectSuggestion("hi", call_id="c1").encode() | {name: value}
    try:
        operator.decode_command(json.dumps(message))
    except BadMessage as exc:
        assert exc.field == name and name in str(exc), exc


def test_a_huge_integer_is_a_bad_message() -> None:
    try:
        operator.decode_command('{"type":"ping","id":' + "9" * 5000 + "}")
    except BadMessage:
        return
    raise AssertionError("a 5000-digit ping id was accepted")


@examples(100)
@given(
    typed(operator.InstanceInfo, name=names),
    typed(operator.CallInfo, call_id=names),
    st.text(max_size=24),
)
def test_snapshots_round_trip(
    instance: operator.InstanceInfo, call: operator.CallInfo, ts: str
) -> None:
    snapshot = operator.Snapshot(ts, (instance,), (call,))
    wire = json.loads(json.dumps(snapshot.encode(), allow_nan=False))
    assert operator.Snapshot.decode(wire) == snapshot


INFO_FIELDS = [*operator.InstanceInfo.__dataclass_fields__, *operator.CallInfo.__dataclass_fields__]


@examples(60)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "ts": json_values,
            "instances": st.lists(objects_with(INFO_FIELDS), max_size=3) | json_values,
            "calls": st.lists(objects_with(INFO_FIELDS), max_size=3) | json_values,
        },
    ),
    objects_with(["success", "message"]),
)
def test_what_the_supervisor_sends_decodes_without_nan(
    snapshot: dict[str, Any], auth: dict[str, Any]
) -> None:
    decoded = operator.Snapshot.decode(snapshot)
    assert not non_finite_numbers(decoded)
    json.dumps(decoded.encode(), allow_nan=False)
    result = operator.AuthResult.decode(auth)
    assert result.success is (auth.get("success") is True)
