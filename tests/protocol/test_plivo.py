"""Plivo's audio-stream dialect, sans-I/O, on fixtures shaped as Plivo documents them.

Fixtures: plivo.com/docs, "Audio Streaming" and the XML "Stream" element: the start
(``start.streamId``, ``start.callId``, ``start.mediaFormat.{encoding, sampleRate}``), media
(``media.payload``, ``timestamp``, ``chunk``), dtmf, ``playedStream`` and ``clearedAudio``
events, and the ``playAudio`` (``media.contentType``, ``media.sampleRate``), ``checkpoint``
and ``clearAudio`` messages a server sends.
"""

from __future__ import annotations

import json

import pytest

from xswarm.errors import ProtocolError
from xswarm.protocol import media_stream as ms
from xswarm.protocol import plivo

STREAM_ID = "20170ada-f610-433b-8758-c02a2aab3662"
CALL_ID = "ba6a9a3c-3b2f-4ae7-8a6e-1f0d2a5b6c7d"
START = {
    "event": "start",
    "sequenceNumber": 0,
    "start": {
        "callId": CALL_ID,
        "streamId": STREAM_ID,
        "accountId": "MAXXXXXXXXXXXXXXXXXX",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
    },
    "extra_headers": "{}",
}
MEDIA = {
    "event": "media",
    "sequenceNumber": 2,
    "streamId": STREAM_ID,
    "media": {"track": "inbound", "timestamp": "1678369426736", "chunk": 1, "payload": "//8="},
    "extra_headers": "{}",
}


def test_documented_messages_parse() -> None:
    assert plivo.parse(json.dumps(START)) == ms.Start(STREAM_ID, CALL_ID, "PCMU")
    l16 = dict(START, start=dict(START["start"], mediaFormat={"encoding": "audio/x-l16", "sampleRate": 8000}))  # type: ignore[arg-type]  # fmt: skip
    assert plivo.parse(json.dumps(l16)) == ms.Start(STREAM_ID, CALL_ID, "L16")
    assert plivo.parse(json.dumps(MEDIA)) == ms.Media(b"\xff\xff", 1678369426736)
    dtmf = {"event": "dtmf", "streamId": STREAM_ID, "dtmf": {"track": "inbound", "digit": "5"}}
    assert plivo.parse(json.dumps(dtmf)) == ms.Dtmf("5")
    played = {"event": "playedStream", "sequenceNumber": 3, "streamId": STREAM_ID, "name": "cp"}
    assert plivo.parse(json.dumps(played)) == ms.Mark("cp")
    cleared = {"event": "clearedAudio", "sequenceNumber": 4, "streamId": STREAM_ID}
    assert plivo.parse(json.dumps(cleared)) == ms.Cleared()
    assert plivo.parse('{"event": "stop"}') == ms.Stop()
    assert plivo.parse('{"event": "somethingNew"}') == ms.Unknown("somethingNew")


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        ("{", 1007, "not JSON"),
        ('{"no": "event"}', 1007, '"event"'),
        (json.dumps(dict(MEDIA, media="x")), 1007, '"media" must be an object'),
        (json.dumps(dict(MEDIA, media={"payload": ""})), 1007, "empty"),
        (json.dumps(dict(MEDIA, media={"payload": "A" * 12000})), 1007, "more than 6400 bytes"),
        (json.dumps({"event": "playedStream", "name": 3}), 1007, '"name" must be a string'),
        (json.dumps(dict(START, start=dict(START["start"], callId=7))), 1007, "start.callId"),  # type: ignore[arg-type]
        (
            json.dumps(
                dict(
                    START,
                    start=dict(
                        START["start"],
                        mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": 16000},
                    ),
                )
            ),  # type: ignore[arg-type]  # fmt: skip
            1003,
            "at 8000 Hz",
        ),
    ],
)
def test_malformed_messages_are_refused_with_the_close_code(
    message: str, code: int, words: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        plivo.parse(message)
    assert caught.value.close_code == code
    assert words in str(caught.value)


def test_outbound_is_play_audio_checkpoint_and_clear_audio() -> None:
    out = plivo.outbound(ms.Start(STREAM_ID, CALL_ID, "PCMU"))
    assert json.loads(out.media(b"\xff\xff")) == {
        "event": "playAudio",
        "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": "//8="},
    }
    assert json.loads(out.mark("cp")) == {
        "event": "checkpoint",
        "streamId": STREAM_ID,
        "name": "cp",
    }
    assert json.loads(out.clear()) == {"event": "clearAudio", "streamId": STREAM_ID}
    l16 = plivo.outbound(ms.Start(STREAM_ID, CALL_ID, "L16"))
    assert json.loads(l16.media(b"\x00\x00"))["media"]["contentType"] == "audio/x-l16"
    assert plivo.parse_outbound(out.media(b"\x01")) == ms.OutMedia(b"\x01")
    assert plivo.parse_outbound(out.mark("x")) == ms.OutMark("x")
    assert plivo.parse_outbound(out.clear()) == ms.OutClear()
    with pytest.raises(ProtocolError):
        plivo.parse_outbound('{"event": "media", "media": {"payload": "AA=="}}')


def test_the_simulated_caller_speaks_what_the_parser_reads() -> None:
    caller = plivo.Caller("L16")
    (start,) = caller.opening()
    assert plivo.parse(start) == ms.Start(caller.stream_id, caller.call_id, "L16")
    assert plivo.parse(caller.media(2, 1, 40, b"\x00" * 320)) == ms.Media(b"\x00" * 320, 40)
    assert plivo.parse(caller.dtmf(3, "*")) == ms.Dtmf("*")
    assert plivo.parse(caller.played(4, "m")) == ms.Mark("m")
    assert plivo.parse(caller.stop(5)) == ms.Stop()


def test_l16_may_be_wideband_and_the_reply_says_so() -> None:
    caller = plivo.Caller("L16", sample_rate=16000)
    (opening,) = caller.opening()
    start = plivo.parse(opening)
    assert isinstance(start, ms.Start)
    assert (start.encoding, start.sample_rate) == ("L16", 16000)
    reply = json.loads(plivo.outbound(start).media(b"\x00\x00"))
    assert reply["media"] == {"contentType": "audio/x-l16", "sampleRate": 16000, "payload": "AAA="}


def test_mulaw_is_telephone_rate_only() -> None:
    with pytest.raises(ValueError, match="PCMU at"):
        plivo.Caller("PCMU", sample_rate=16000)
