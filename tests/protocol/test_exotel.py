"""Exotel's stream dialect, sans-I/O, on fixtures shaped as Exotel documents them.

Fixtures: support.exotel.com, "Working with the Stream and Voicebot Applet": connected; start
with ``stream_sid`` and ``start.{call_sid, account_sid, from, to, custom_parameters,
media_format}``; media with ``media.{chunk, timestamp, payload}`` (16-bit 8 kHz little-endian
PCM, base64); dtmf with ``dtmf.{duration, digit}``; mark; stop with ``stop.reason``; and the
media/mark/clear messages a server sends, each with ``stream_sid``.
"""

from __future__ import annotations

import json

import pytest

from xswarm.errors import ProtocolError
from xswarm.protocol import exotel
from xswarm.protocol import media_stream as ms

SID = "b6e1c0fd3a0e4a1c8d7f3b1e2a9c4d5e"
CALL_SID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
START = {
    "event": "start",
    "sequence_number": 1,
    "stream_sid": SID,
    "start": {
        "stream_sid": SID,
        "call_sid": CALL_SID,
        "account_sid": "exotel1",
        "from": "09999999999",
        "to": "08888888888",
        "custom_parameters": {"lang": "hi"},
        "media_format": {"encoding": "base64", "sample_rate": "8000", "bit_rate": "128kbps"},
    },
}
MEDIA = {
    "event": "media",
    "sequence_number": 3,
    "stream_sid": SID,
    "media": {"chunk": 2, "timestamp": "40", "payload": "AAD/fw=="},
}


def test_documented_messages_parse() -> None:
    assert exotel.parse('{"event": "connected"}') == ms.Connected()
    assert exotel.parse(json.dumps(START)) == ms.Start(
        SID, CALL_SID, "L16", "09999999999", {"lang": "hi"}
    )
    assert exotel.parse(json.dumps(MEDIA)) == ms.Media(b"\x00\x00\xff\x7f", 40)
    dtmf = {"event": "dtmf", "stream_sid": SID, "dtmf": {"duration": "1000", "digit": "9"}}
    assert exotel.parse(json.dumps(dtmf)) == ms.Dtmf("9")
    mark = {"event": "mark", "stream_sid": SID, "mark": {"name": "m"}}
    assert exotel.parse(json.dumps(mark)) == ms.Mark("m")
    stop = {
        "event": "stop",
        "stream_sid": SID,
        "stop": {"call_sid": CALL_SID, "reason": "callended"},
    }
    assert exotel.parse(json.dumps(stop)) == ms.Stop("callended")
    assert exotel.parse('{"event": "stop"}') == ms.Stop()


def test_l16_payload_is_little_endian() -> None:
    from xswarm.audio import wire

    pcm = wire.L16.decode(exotel.parse(json.dumps(MEDIA)).payload)  # type: ignore[union-attr]
    assert pcm.tolist() == [0.0, 32767 / 32768]


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        ("\xff{", 1007, "not JSON"),
        (json.dumps(dict(MEDIA, media={"payload": None})), 1007, "media.payload"),
        (json.dumps(dict(MEDIA, media={"payload": "A" * 64400})), 1007, "48000 bytes"),
        (json.dumps(dict(START, stream_sid="x" * 200)), 1007, "stream_sid"),
        (
            json.dumps(dict(START, start=dict(START["start"], custom_parameters={"a": 1}))),
            1007,
            "custom_parameters",
        ),  # type: ignore[arg-type]  # fmt: skip
        (
            json.dumps(
                dict(START, start=dict(START["start"], media_format={"sample_rate": "11025"}))
            ),
            1003,
            "8000 Hz, 16000 Hz or 24000 Hz",
        ),  # type: ignore[arg-type]  # fmt: skip
        (json.dumps({"event": "dtmf", "dtmf": {}}), 1007, "dtmf.digit"),
    ],
)
def test_malformed_messages_are_refused_with_the_close_code(
    message: str, code: int, words: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        exotel.parse(message)
    assert caught.value.close_code == code
    assert words in str(caught.value)


def test_outbound_names_the_stream_sid() -> None:
    out = exotel.outbound(ms.Start(SID, CALL_SID, "L16"))
    assert json.loads(out.media(b"\x00\x00")) == {
        "event": "media",
        "stream_sid": SID,
        "media": {"payload": "AAA="},
    }
    assert json.loads(out.mark("m")) == {"event": "mark", "stream_sid": SID, "mark": {"name": "m"}}
    assert json.loads(out.clear()) == {"event": "clear", "stream_sid": SID}
    assert exotel.parse_outbound(out.media(b"\x01\x00")) == ms.OutMedia(b"\x01\x00")
    assert exotel.parse_outbound(out.clear()) == ms.OutClear()


def test_the_simulated_caller_speaks_what_the_parser_reads() -> None:
    caller = exotel.Caller(caller="0999")
    connected, start = caller.opening()
    assert exotel.parse(connected) == ms.Connected()
    assert exotel.parse(start) == ms.Start(caller.stream_id, caller.call_id, "L16", "0999")
    assert exotel.parse(caller.media(2, 1, 0, b"\x00" * 320)) == ms.Media(b"\x00" * 320, 0)
    assert exotel.parse(caller.dtmf(3, "1")) == ms.Dtmf("1")
    assert exotel.parse(caller.stop(4)) == ms.Stop("callended")


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_a_wideband_stream_names_its_rate(rate: int) -> None:
    """Exotel streams 16 or 24 kHz when the applet's URL asks (?sample-rate=16000)."""
    caller = exotel.Caller(sample_rate=rate)
    start = exotel.parse(caller.opening()[1])
    assert isinstance(start, ms.Start)
    assert (start.encoding, start.sample_rate) == ("L16", rate)
    assert exotel.DIALECT.min_outbound_ms == 100


def test_the_simulated_caller_refuses_a_rate_exotel_does_not_stream() -> None:
    with pytest.raises(ValueError, match="8000, 16000 or 24000 Hz, not 44100"):
        exotel.Caller(sample_rate=44100)
