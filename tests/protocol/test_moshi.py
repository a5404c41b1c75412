"""The Moshi client protocol, sans-I/O: kind bytes, framing and parsing with plain calls."""

from __future__ import annotations

import pytest

from xswarm.errors import ProtocolError
from xswarm.protocol import moshi


def test_kind_bytes_are_kyutais() -> None:
    assert moshi.HANDSHAKE == b"\x00"
    assert [kind.value for kind in moshi.Kind] == list(range(8))
    assert moshi.Kind.AUDIO == 0x01 and moshi.Kind.TEXT == 0x02


def test_messages_are_the_kind_byte_then_the_payload() -> None:
    assert moshi.audio(b"OggS...") == b"\x01OggS..."
    assert moshi.text("héllo") == b"\x02" + "héllo".encode()


def test_what_is_written_parses_back() -> None:
    assert moshi.parse(moshi.audio(b"OggSpage")) == moshi.Audio(b"OggSpage")
    assert moshi.parse(moshi.text("bonjour")) == moshi.Text("bonjour")
    assert moshi.parse(moshi.HANDSHAKE) == moshi.Other(moshi.Kind.HANDSHAKE, b"")


def test_the_handshake_is_recognised_by_its_first_byte() -> None:
    assert moshi.is_handshake(b"\x00")
    assert moshi.is_handshake(b"\x00\x01\x00\x00\x00")
    assert not moshi.is_handshake(b"\x01OggS") and not moshi.is_handshake(b"")


def test_the_other_kyutai_kinds_are_returned_for_the_receiver_to_ignore() -> None:
    assert moshi.parse(b"\x06ping") == moshi.Other(moshi.Kind.PING, b"ping")
    assert moshi.parse(b"\x03") == moshi.Other(moshi.Kind.CONTROL, b"")


def test_text_that_is_not_utf8_is_replaced_not_refused() -> None:
    assert moshi.parse(b"\x02\xffok") == moshi.Text("\ufffdok")


def test_a_kind_outside_the_protocol_is_returned_and_named_by_its_error() -> None:
    message = moshi.parse(b"\x42hello")
    assert message == moshi.Unknown(0x42)
    assert isinstance(message, moshi.Unknown)
    error = moshi.unknown_kind(message)
    assert error.close_code == moshi.UNSUPPORTED and "unknown message kind 0x42" in str(error)


@pytest.mark.parametrize(
    ("data", "words"),
    [(b"", "expected a kind byte"), (b"\x01not-ogg", "not Ogg-Opus"), (b"\x01", "OggS")],
)
def test_malformed_messages_raise_with_the_close_code_to_answer(data: bytes, words: str) -> None:
    with pytest.raises(ProtocolError, match=words) as caught:
        moshi.parse(data)
    assert caught.value.close_code == moshi.INVALID
