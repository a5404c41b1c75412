"""Telnyx's media-stream dialect, sans-I/O, on fixtures shaped as Telnyx documents them.

Fixtures: developers.telnyx.com, "Media Streaming" (Programmable Voice): the connected,
start (``start.media_format``, ``stream_id``, ``call_control_id``), media (``media.payload``
with ``track``/``chunk``/``timestamp`` as strings), dtmf, mark and stop examples, and the
bidirectional "media"/"mark"/"clear" messages a server sends.
"""

from __future__ import annotations

import base64
import json

import pytest

from xswarm.errors import ProtocolError
from xswarm.protocol import media_stream as ms
from xswarm.protocol import telnyx

STREAM_ID = "32de0dea-53cb-4b21-89a4-9b7b8f1e2a33"
CALL = "v3:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ"
START = {
    "event": "start",
    "sequence_number": "1",
    "start": {
        "user_id": "3E6F995F-85F7-4705-9741-53B116D28237",
        "call_control_id": CALL,
        "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
        "media_format": {"encoding": "PCMA", "sample_rate": 8000, "channels": 1},
    },
    "stream_id": STREAM_ID,
}
MEDIA = {
    "event": "media",
    "sequence_number": "4",
    "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": "1dXV1Q=="},
    "stream_id": STREAM_ID,
}


def test_documented_messages_parse() -> None:
    assert telnyx.parse('{"event": "connected", "version": "1.0.0"}') == ms.Connected()
    start = telnyx.parse(json.dumps(START))
    assert start == ms.Start(STREAM_ID, CALL, "PCMA")
    assert telnyx.parse(json.dumps(MEDIA)) == ms.Media(b"\xd5" * 4, 5)
    outbound_track = dict(MEDIA, media=dict(MEDIA["media"], track="outbound"))  # type: ignore[arg-type]
    assert telnyx.parse(json.dumps(outbound_track)) == ms.Media(b"\xd5" * 4, 5, inbound=False)
    dtmf = {"event": "dtmf", "stream_id": STREAM_ID, "sequence_number": "5", "dtmf": {"digit": "1"}}
    assert telnyx.parse(json.dumps(dtmf)) == ms.Dtmf("1")
    mark = {"event": "mark", "sequence_number": "6", "stream_id": STREAM_ID, "mark": {"name": "m"}}
    assert telnyx.parse(json.dumps(mark)) == ms.Mark("m")
    stop = {"event": "stop", "sequence_number": "7", "stop": {"call_control_id": CALL}}
    assert telnyx.parse(json.dumps(stop)) == ms.Stop()
    error = {"event": "error", "payload": {"code": 100002, "title": "unknown_error"}}
    assert telnyx.parse(json.dumps(error)) == ms.Unknown("error")


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        ("{", 1007, "not JSON"),
        ("[]", 1007, "JSON object"),
        ('{"event": 5}', 1007, '"event" must be a string'),
        (json.dumps(dict(MEDIA, media={"payload": 5})), 1007, "media.payload"),
        (json.dumps(dict(MEDIA, media={"payload": "!!"})), 1007, "base64"),
        (json.dumps(dict(MEDIA, media={"payload": "A" * 4000})), 1007, "more than 1600 bytes"),
        (
            json.dumps(dict(MEDIA, media={"payload": "1dXV1Q==", "timestamp": -1})),
            1007,
            "media.timestamp",
        ),
        (json.dumps({"event": "dtmf", "dtmf": {"digit": "x"}}), 1007, "not a DTMF digit"),
        (json.dumps(dict(START, stream_id="a b")), 1007, "stream_id"),
        (
            json.dumps(
                dict(START, start=dict(START["start"], media_format={"encoding": "OPUS"}))  # type: ignore[arg-type]
            ),
            1003,
            "PCMU or PCMA",
        ),
        ("x" * (ms.MAX_MESSAGE_BYTES + 1), 1007, "exceeds"),
    ],
)
def test_malformed_messages_are_refused_with_the_close_code(
    message: str, code: int, words: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        telnyx.parse(message)
    assert caught.value.close_code == code
    assert words in str(caught.value)


def test_outbound_is_what_telnyx_takes_and_round_trips() -> None:
    out = telnyx.outbound(ms.Start(STREAM_ID, CALL, "PCMU"))
    media = json.loads(out.media(b"\xff\x00"))
    assert media == {"event": "media", "media": {"payload": base64.b64encode(b"\xff\x00").decode()}}
    assert json.loads(out.clear()) == {"event": "clear"}
    assert json.loads(out.mark('a"b')) == {"event": "mark", "mark": {"name": 'a"b'}}
    assert telnyx.parse_outbound(out.media(b"\x01")) == ms.OutMedia(b"\x01")
    assert telnyx.parse_outbound(out.mark("x")) == ms.OutMark("x")
    assert telnyx.parse_outbound(out.clear()) == ms.OutClear()
    with pytest.raises(ProtocolError):
        telnyx.parse_outbound('{"event": "start"}')


def test_the_simulated_caller_speaks_what_the_parser_reads() -> None:
    caller = telnyx.Caller("PCMA", caller="+15550001111")
    connected, start = caller.opening()
    assert telnyx.parse(connected) == ms.Connected()
    assert telnyx.parse(start) == ms.Start(caller.stream_id, caller.call_id, "PCMA", "+15550001111")
    assert telnyx.parse(caller.media(2, 1, 0, b"\xd5" * 160)) == ms.Media(b"\xd5" * 160, 0)
    assert telnyx.parse(caller.dtmf(3, "#")) == ms.Dtmf("#")
    assert telnyx.parse(caller.played(4, "m")) == ms.Mark("m")
    assert telnyx.parse(caller.stop(5)) == ms.Stop()
    with pytest.raises(ValueError):
        telnyx.Caller("L16")
