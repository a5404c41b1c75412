"""Twilio Media Streams JSON: whatever arrives, ``parse`` answers an event or a ProtocolError
naming what is wrong, and every message our simulated Twilio writes reads back as sent."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from tests.fuzz.strategies import examples, json_values, objects_with
from xswarm.errors import ProtocolError
from xswarm.protocol import twilio

sids = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")
payloads = st.binary(min_size=1, max_size=twilio.MAX_PAYLOAD_BYTES)
numbers = st.integers(min_value=0, max_value=(1 << 63) - 1)

FIELDS = ("event", "sequenceNumber", "streamSid", "media", "start", "stop", "mark", "dtmf")
EVENTS = ("media", "start", "stop", "mark", "dtmf", "connected", "clear")


def parse_or_refuse(raw: str | bytes) -> twilio.Event | None:
    try:
        return twilio.parse(raw)
    except ProtocolError as exc:
        assert exc.close_code in (twilio.INVALID, twilio.UNSUPPORTED)
        assert str(exc)
        return None


@examples(300)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_any_bytes_are_an_event_or_a_protocol_error(raw: str | bytes) -> None:
    parse_or_refuse(raw)


@examples(120)
@given(
    st.fixed_dictionaries(
        {"event": st.sampled_from(EVENTS) | json_values},
        optional={
            name: json_values
            | objects_with(
                (
                    "payload",
                    "track",
                    "chunk",
                    "timestamp",
                    "streamSid",
                    "callSid",
                    "accountSid",
                    "mediaFormat",
                    "customParameters",
                    "tracks",
                    "name",
                    "digit",
                )
            )
            for name in FIELDS[1:]
        },
    )
)
def test_any_json_object_is_an_event_or_a_protocol_error(message: dict[str, Any]) -> None:
    event = parse_or_refuse(json.dumps(message))
    if isinstance(event, twilio.Unknown):
        assert len(event.event) <= 64


@examples(200)
@given(st.sampled_from(["chunk", "timestamp", "sequenceNumber", "payload", "track"]), json_values)
def test_a_wrong_media_field_is_named(name: str, value: object) -> None:
    message = json.loads(twilio.inbound_media_message("MZ1", 1, 1, 20, b"\xff" * 160))
    owner = message if name == "sequenceNumber" else message["media"]
    owner[name] = value
    try:
        twilio.parse(json.dumps(message))
    except ProtocolError as exc:
        assert name in str(exc), str(exc)


@examples(200)
@given(
    st.sampled_from(["streamSid", "callSid", "accountSid", "tracks", "customParameters"]),
    json_values,
)
def test_a_wrong_start_field_is_named(name: str, value: object) -> None:
    message = json.loads(twilio.start_message("MZ1", "CA1"))
    message["start"][name] = value
    try:
        twilio.parse(json.dumps(message))
    except ProtocolError as exc:
        assert f"start.{name}" in str(exc), str(exc)


@examples(150)
@given(sids, sids, sids, st.dictionaries(st.text(max_size=12), st.text(max_size=24), max_size=3))
def test_start_round_trips(
    stream_sid: str, call_sid: str, account_sid: str, custom: dict[str, str]
) -> None:
    event = twilio.parse(twilio.start_message(stream_sid, call_sid, account_sid, custom))
    assert event == twilio.Start(
        stream_sid, call_sid, account_sid, ("inbound",), custom, twilio.ENCODING, 8000, 1
    )


@examples(200)
@given(sids, numbers, numbers, numbers, payloads)
def test_media_round_trips(
    sid: str, sequence: int, chunk: int, timestamp: int, payload: bytes
) -> None:
    message = twilio.inbound_media_message(sid, sequence, chunk, timestamp, payload)
    assert twilio.parse(message) == twilio.Media(payload, "inbound", chunk, timestamp, sequence)


@examples(100)
@given(sids, numbers, sids, sids, st.text(max_size=40), st.sampled_from("0123456789*#ABCDabcd"))
def test_stop_mark_and_dtmf_round_trip(
    sid: str, sequence: int, call_sid: str, account_sid: str, name: str, digit: str
) -> None:
    assert twilio.parse(twilio.stop_message(sid, sequence, call_sid, account_sid)) == twilio.Stop(
        call_sid, account_sid
    )
    assert twilio.parse(twilio.mark_in_message(sid, sequence, name)) == twilio.Mark(name)
    assert twilio.parse(twilio.dtmf_message(sid, sequence, digit)) == twilio.Dtmf(digit)


@examples(150)
@given(st.text(min_size=1, max_size=40), payloads, st.text(max_size=40))
def test_outbound_messages_round_trip(sid: str, payload: bytes, name: str) -> None:
    out = twilio.Outbound(sid)
    assert twilio.parse_outbound(out.media(payload)) == twilio.OutMedia(payload, sid)
    assert twilio.parse_outbound(out.mark(name)) == twilio.OutMark(name, sid)
    assert twilio.parse_outbound(out.clear()) == twilio.OutClear(sid)


@examples(200)
@given(st.binary(max_size=200) | st.text(max_size=200) | json_values.map(json.dumps))
def test_parse_outbound_refuses_with_a_protocol_error_only(raw: str | bytes) -> None:
    try:
        twilio.parse_outbound(raw)
    except ProtocolError as exc:
        assert str(exc)


@examples(100)
@given(
    st.text(max_size=40),
    sids,
    st.integers(min_value=0, max_value=10**12),
    st.text(max_size=60),
    st.floats(allow_nan=False, min_value=0, max_value=2e12),
)
def test_stream_tokens_verify_only_for_their_call(
    secret: str, call_sid: str, expires: int, forged: str, now: float
) -> None:
    assume(secret)

    def start_with(token: str) -> twilio.Start:
        return twilio.Start(
            "MZ1",
            call_sid,
            "",
            ("inbound",),
            {twilio.STREAM_TOKEN_PARAMETER: token},
            twilio.ENCODING,
            8000,
            1,
        )

    genuine = twilio.stream_token(secret, call_sid, expires)
    problem = twilio.stream_token_problem(secret, start_with(genuine), now)
    if now <= expires <= now + twilio.MAX_STREAM_TOKEN_LIFETIME:
        assert problem is None
    else:
        assert problem is not None
    if forged != genuine:
        assert twilio.stream_token_problem(secret, start_with(forged), now) is not None
