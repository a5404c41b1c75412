"""Twilio Media Streams, message by message: every event, every malformed case, signatures."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from xswarm.errors import ProtocolError
from xswarm.protocol import twilio
from xswarm.protocol.twilio import (
    Connected,
    Dtmf,
    Mark,
    Media,
    OutClear,
    OutMark,
    OutMedia,
    Start,
    Stop,
    Unknown,
)

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA5ad3ab5a668481ce02b83e7395059f0"
ACCOUNT = "AC25e16e9a716a4a1786a7c83f58e30482"
FRAME = bytes(range(160))


def twilio_media(**overrides: Any) -> dict[str, Any]:
    """A media message exactly as Twilio's documentation shows it."""
    message: dict[str, Any] = {
        "event": "media",
        "sequenceNumber": "3",
        "media": {
            "track": "inbound",
            "chunk": "1",
            "timestamp": "5",
            "payload": base64.b64encode(FRAME).decode(),
        },
        "streamSid": SID,
    }
    for key, value in overrides.items():
        target = message["media"] if key in ("track", "chunk", "timestamp", "payload") else message
        if value is ...:
            del target[key]
        else:
            target[key] = value
    return message


def twilio_start(media_format: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": ACCOUNT,
            "streamSid": SID,
            "callSid": CALL,
            "tracks": ["inbound"],
            "mediaFormat": media_format
            or {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"FirstName": "Jane", "RemoteParty": "Bob"},
        },
        "streamSid": SID,
    }


def refused(message: str | bytes, code: int, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason) as caught:
        twilio.parse(message)
    assert caught.value.close_code == code


# -- every event Twilio sends ------------------------------------------------------------


def test_connected() -> None:
    text = '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'
    assert twilio.parse(text) == Connected("Call", "1.0.0")


def test_start_as_twilio_documents_it() -> None:
    event = twilio.parse(json.dumps(twilio_start()))
    assert event == Start(
        stream_sid=SID,
        call_sid=CALL,
        account_sid=ACCOUNT,
        tracks=("inbound",),
        custom_parameters={"FirstName": "Jane", "RemoteParty": "Bob"},
        encoding="audio/x-mulaw",
        sample_rate=8000,
        channels=1,
    )


def test_media_as_twilio_documents_it_with_string_numbers() -> None:
    event = twilio.parse(json.dumps(twilio_media()))
    assert event == Media(FRAME, "inbound", 1, 5, 3)


def test_media_accepts_integer_numbers_and_bytes_input() -> None:
    message = twilio_media(chunk=7, timestamp=140, sequenceNumber=9)
    assert twilio.parse(json.dumps(message).encode()) == Media(FRAME, "inbound", 7, 140, 9)


def test_mark_dtmf_stop() -> None:
    mark = {"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "hi"}}
    assert twilio.parse(json.dumps(mark)) == Mark("hi")
    dtmf = {
        "event": "dtmf",
        "streamSid": SID,
        "sequenceNumber": "5",
        "dtmf": {"track": "inbound_track", "digit": "1"},
    }
    assert twilio.parse(json.dumps(dtmf)) == Dtmf("1")
    stop = {
        "event": "stop",
        "sequenceNumber": "5",
        "stop": {"accountSid": ACCOUNT, "callSid": CALL},
        "streamSid": SID,
    }
    assert twilio.parse(json.dumps(stop)) == Stop(CALL, ACCOUNT)


def test_unknown_events_are_returned_not_refused() -> None:
    assert twilio.parse('{"event": "someday", "x": 1}') == Unknown("someday")
    assert twilio.parse(json.dumps({"event": "e" * 1000})) == Unknown("e" * 64)


def test_builders_produce_what_parse_reads() -> None:
    start = twilio.parse(twilio.start_message(SID, CALL, ACCOUNT, {"k": "v"}))
    assert isinstance(start, Start) and start.custom_parameters == {"k": "v"}
    assert twilio.parse(twilio.connected_message()) == Connected("Call", "1.0.0")
    media = twilio.inbound_media_message(SID, 12, 11, 200, FRAME)
    assert twilio.parse(media) == Media(FRAME, "inbound", 11, 200, 12)
    assert twilio.parse(twilio.dtmf_message(SID, 3, "#")) == Dtmf("#")
    assert twilio.parse(twilio.mark_in_message(SID, 3, "end")) == Mark("end")
    assert twilio.parse(twilio.stop_message(SID, 99, CALL, ACCOUNT)) == Stop(CALL, ACCOUNT)
    assert json.loads(media)["streamSid"] == SID


# -- malformed input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["", "not json", "{", '{"event": "media",', "\x00\x01\x02", "[1, 2", "NaNa"]
)
def test_non_json_is_invalid_payload(text: str) -> None:
    refused(text, 1007, "not JSON")


@pytest.mark.parametrize("text", ["[]", "1", '"media"', "null", "true"])
def test_json_that_is_not_an_object(text: str) -> None:
    refused(text, 1007, "must be a JSON object")


def test_missing_or_non_string_event() -> None:
    refused('{"streamSid": "x"}', 1007, 'no "event"')
    refused('{"event": 5}', 1007, '"event" must be a string')
    refused('{"event": null}', 1007, '"event" must be a string')


def test_binary_junk_and_non_utf8() -> None:
    refused(b"\xff\xfe\x00garbage", 1007, "UTF-8|not JSON")
    refused(bytes(range(256)), 1007, "UTF-8|not JSON")


def test_oversized_message_is_refused_before_parsing() -> None:
    refused(" " * (twilio.MAX_MESSAGE_BYTES + 1), 1007, "exceeds")


def test_deeply_nested_json() -> None:
    refused("[" * 100_000 + "]" * 100_000, 1007, "not JSON|exceeds")
    refused('{"event":"x","a":' + "[" * 5000 + "]" * 5000 + "}", 1007, "nested too deeply")


def test_bad_base64() -> None:
    refused(json.dumps(twilio_media(payload="!!!not-base64!!!")), 1007, "not valid base64")
    refused(json.dumps(twilio_media(payload="AAA")), 1007, "not valid base64")
    refused(json.dumps(twilio_media(payload="AA AA")), 1007, "not valid base64")


def test_empty_and_oversized_payloads() -> None:
    refused(json.dumps(twilio_media(payload="")), 1007, "empty")
    big = base64.b64encode(bytes(twilio.MAX_PAYLOAD_BYTES + 1)).decode()
    refused(json.dumps(twilio_media(payload=big)), 1007, "more than 1600 bytes")
    exact = base64.b64encode(bytes(twilio.MAX_PAYLOAD_BYTES)).decode()
    event = twilio.parse(json.dumps(twilio_media(payload=exact)))
    assert isinstance(event, Media) and len(event.payload) == twilio.MAX_PAYLOAD_BYTES


def test_odd_sized_payloads_within_bounds_are_the_servers_call() -> None:
    event = twilio.parse(json.dumps(twilio_media(payload=base64.b64encode(b"x").decode())))
    assert isinstance(event, Media) and event.payload == b"x"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"payload": 12}, '"media.payload" must be a string, got the number 12'),
        ({"payload": None}, '"media.payload" must be a string, got null'),
        ({"payload": ...}, '"media.payload" must be a string'),
        ({"chunk": ...}, 'no "media.chunk"'),
        ({"chunk": "one"}, '"media.chunk" must be a non-negative integer'),
        ({"chunk": -1}, '"media.chunk" must be a non-negative integer|out of range'),
        ({"chunk": 1.5}, '"media.chunk" must be a non-negative integer'),
        ({"chunk": True}, '"media.chunk" must be a non-negative integer, got a boolean'),
        ({"timestamp": [1]}, '"media.timestamp" must be a non-negative integer'),
        ({"timestamp": 10**30}, '"media.timestamp" is out of range'),
        ({"timestamp": "9" * 400}, '"media.timestamp" must be a non-negative integer'),
        ({"timestamp": "٣"}, '"media.timestamp" must be a non-negative integer'),
        ({"sequenceNumber": ...}, 'no "sequenceNumber"'),
        ({"sequenceNumber": {}}, '"sequenceNumber" must be a non-negative integer'),
        ({"track": 3}, '"media.track" must be a string'),
        ({"media": "payload"}, '"media" must be an object'),
        ({"media": ...}, '"media" must be an object, got missing'),
    ],
)
def test_media_with_wrong_types_or_missing_fields(overrides: dict[str, Any], reason: str) -> None:
    refused(json.dumps(twilio_media(**overrides)), 1007, reason)


def test_huge_json_numbers() -> None:
    text = json.dumps(twilio_media()).replace('"chunk": "1"', '"chunk": ' + "9" * 5000)
    refused(text, 1007, "not JSON|out of range")
    text = json.dumps(twilio_media()).replace('"chunk": "1"', '"chunk": 1e999')
    refused(text, 1007, '"media.chunk" must be a non-negative integer')


def test_start_in_another_audio_format_is_unsupported() -> None:
    for media_format in (
        {"encoding": "audio/x-l16", "sampleRate": 8000, "channels": 1},
        {"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1},
        {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 2},
    ):
        refused(json.dumps(twilio_start(media_format)), 1003, "only audio/x-mulaw at 8000 Hz")


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("start",), None, '"start" must be an object'),
        (("start", "streamSid"), 5, '"start.streamSid" must be a string'),
        (("start", "callSid"), ..., '"start.callSid" must be a string, got missing'),
        (("start", "tracks"), "inbound", '"start.tracks" must be a list'),
        (("start", "customParameters"), ["a"], '"start.customParameters" must be an object'),
        (("start", "customParameters"), {"a": 1}, '"start.customParameters" must be an object'),
        (("start", "mediaFormat"), "mulaw", '"start.mediaFormat" must be an object'),
        (("start", "accountSid"), 7, '"start.accountSid" must be a string'),
    ],
)
def test_malformed_start(path: tuple[str, ...], value: Any, reason: str) -> None:
    message = twilio_start()
    target = message
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    refused(json.dumps(message), 1007, reason)


def test_malformed_mark_dtmf_stop_connected() -> None:
    refused('{"event": "mark", "mark": {}}', 1007, '"mark.name" must be a string')
    refused('{"event": "mark"}', 1007, '"mark" must be an object')
    refused('{"event": "dtmf", "dtmf": {"digit": "12"}}', 1007, "is not a DTMF digit")
    refused('{"event": "dtmf", "dtmf": {"digit": 1}}', 1007, '"dtmf.digit" must be a string')
    refused('{"event": "stop", "stop": {"accountSid": "AC"}}', 1007, '"stop.callSid"')
    refused('{"event": "connected", "protocol": 1}', 1007, '"protocol" must be a string')


# -- what the server sends back ----------------------------------------------------------


def test_outbound_messages_are_the_json_twilio_expects() -> None:
    out = twilio.Outbound(SID)
    assert json.loads(out.media(FRAME)) == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": base64.b64encode(FRAME).decode()},
    }
    assert json.loads(out.mark("m1")) == {"event": "mark", "streamSid": SID, "mark": {"name": "m1"}}
    assert json.loads(out.clear()) == {"event": "clear", "streamSid": SID}
    assert twilio.media_message(SID, FRAME) == out.media(FRAME)
    assert out.media_bytes(FRAME) == out.media(FRAME).encode()
    assert twilio.mark_message(SID, "m1") == out.mark("m1")
    assert twilio.clear_message(SID) == out.clear()


def test_hostile_stream_sid_and_mark_name_are_escaped() -> None:
    hostile = 'MZ"},"event":"clear\\\n\u2028'
    out = twilio.Outbound(hostile)
    assert json.loads(out.media(b"\x00"))["streamSid"] == hostile
    assert json.loads(out.media_bytes(b"\x00"))["streamSid"] == hostile
    assert json.loads(out.mark('"}'))["mark"]["name"] == '"}'
    assert json.loads(out.clear()) == {"event": "clear", "streamSid": hostile}
    with pytest.raises(ValueError, match="non-empty"):
        twilio.Outbound("")


def test_parse_outbound_reads_each_server_message() -> None:
    out = twilio.Outbound(SID)
    assert twilio.parse_outbound(out.media(FRAME)) == OutMedia(FRAME, SID)
    assert twilio.parse_outbound(out.mark("x")) == OutMark("x", SID)
    assert twilio.parse_outbound(out.clear()) == OutClear(SID)


def test_parse_outbound_refuses_anything_else() -> None:
    with pytest.raises(ProtocolError, match="not an event a server may send"):
        twilio.parse_outbound(
            twilio.inbound_media_message(SID, 1, 1, 0, FRAME).replace('"media"', '"start"', 1)
        )
    with pytest.raises(ProtocolError, match='"streamSid" must be a string'):
        twilio.parse_outbound('{"event": "clear"}')
    with pytest.raises(ProtocolError, match="not valid base64"):
        twilio.parse_outbound('{"event":"media","streamSid":"s","media":{"payload":"@@"}}')
    with pytest.raises(ProtocolError, match="not JSON"):
        twilio.parse_outbound("junk")


# -- X-Twilio-Signature ------------------------------------------------------------------

# Twilio's own worked example (twilio-php "Validate Incoming Requests", token 12345).
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
DOC_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_signature_matches_twilios_published_example() -> None:
    assert twilio.expected_signature("12345", DOC_URL, DOC_PARAMS) == DOC_SIGNATURE
    assert twilio.validate_signature("12345", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)


def test_signature_fails_on_any_change() -> None:
    assert not twilio.validate_signature("12346", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)
    assert not twilio.validate_signature("12345", DOC_URL + "&x=1", DOC_PARAMS, DOC_SIGNATURE)
    changed = dict(DOC_PARAMS, Digits="1235")
    assert not twilio.validate_signature("12345", DOC_URL, changed, DOC_SIGNATURE)
    assert not twilio.validate_signature("12345", DOC_URL, DOC_PARAMS, "")
    assert not twilio.validate_signature("12345", DOC_URL, DOC_PARAMS, "\u00e9" * 28)


def test_websocket_upgrade_signs_the_url_alone() -> None:
    url = "wss://voice.example.com/twilio"
    signature = twilio.expected_signature("tok", url, {})
    assert twilio.validate_signature("tok", url, {}, signature)
    assert not twilio.validate_signature("tok", "wss://voice.example.com/twilio2", {}, signature)


def test_new_sids_look_like_twilios() -> None:
    stream, call = twilio.new_stream_sid(), twilio.new_call_sid()
    assert stream.startswith("MZ") and len(stream) == 34 and stream != twilio.new_stream_sid()
    assert call.startswith("CA") and len(call) == 34


@pytest.mark.parametrize(
    "sid", ["MZ\n<3>forged", "MZ\u2028x", "MZ" + "a" * 63, "", "MZ 1", "MZ\u00e9"]
)
def test_stream_ids_outside_twilios_alphabet_are_refused(sid: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        twilio.parse(twilio.start_message(sid, CALL))
    assert refused.value.close_code == 1007 and "letters or digits" in str(refused.value)
    with pytest.raises(ProtocolError):
        twilio.parse(twilio.start_message(SID, sid))


def test_stream_tokens_bind_a_call_and_expire() -> None:
    secret = "tw-secret"
    good = twilio.stream_token(secret, CALL, 1_000_060)
    start = twilio.parse(
        twilio.start_message(SID, CALL, custom_parameters={twilio.STREAM_TOKEN_PARAMETER: good})
    )
    assert isinstance(start, twilio.Start)
    assert twilio.stream_token_problem(secret, start, now=1_000_000) is None
    assert "expired" in str(twilio.stream_token_problem(secret, start, now=1_000_061))
    assert "does not match" in str(twilio.stream_token_problem("other", start, now=1_000_000))
    far = twilio.stream_token(secret, CALL, 10**11)
    start_far = twilio.parse(
        twilio.start_message(SID, CALL, custom_parameters={twilio.STREAM_TOKEN_PARAMETER: far})
    )
    assert isinstance(start_far, twilio.Start)
    assert "more than" in str(twilio.stream_token_problem(secret, start_far, now=1_000_000))
