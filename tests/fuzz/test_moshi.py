"""The Moshi binary protocol and the Ogg-Opus input behind it, as far as neither needs a
socket: ``parse`` answers a message or a ProtocolError, and the Opus reader the bridge feeds
with a client's pages fails only with the ValueError the bridge turns into close 1007."""

from __future__ import annotations

import numpy as np
import sphn
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import examples
from xswarm.errors import ProtocolError
from xswarm.protocol import moshi

RATE = 24000


@examples(300)
@given(st.binary(max_size=200))
def test_any_bytes_are_a_message_or_a_protocol_error(data: bytes) -> None:
    try:
        message = moshi.parse(data)
    except ProtocolError as exc:
        assert exc.close_code == moshi.INVALID
        assert data[:1] in (b"", bytes([moshi.Kind.AUDIO]))
        return
    if isinstance(message, moshi.Audio):
        assert message.pages.startswith(moshi.OGG_MAGIC)
    elif isinstance(message, moshi.Unknown):
        assert message.kind > max(moshi.Kind)
        assert moshi.unknown_kind(message).close_code == moshi.UNSUPPORTED


@examples(150)
@given(st.binary(max_size=200), st.text(st.characters(exclude_categories=["Cs"]), max_size=100))
def test_audio_and_text_round_trip(tail: bytes, words: str) -> None:
    pages = moshi.OGG_MAGIC + tail
    assert moshi.parse(moshi.audio(pages)) == moshi.Audio(pages)
    assert moshi.parse(moshi.text(words)) == moshi.Text(words)


def _genuine_pages() -> bytes:
    writer = sphn.OpusStreamWriter(RATE)
    tone = (0.3 * np.sin(np.arange(RATE // 5) * 2 * np.pi * 440 / RATE)).astype(np.float32)
    pages = b""
    for start in range(0, len(tone), 1920):
        pages += writer.append_pcm(tone[start : start + 1920])
    return pages


GENUINE = _genuine_pages()


def _feed(chunks: list[bytes]) -> None:
    """What MoshiSession._handle does with each audio message's pages."""
    reader = sphn.OpusStreamReader(RATE)
    for chunk in chunks:
        try:
            pcm = reader.append_bytes(chunk)
        except ValueError:
            return  # the bridge answers close 1007 "undecodable Ogg-Opus audio"
        assert pcm.dtype == np.float32 and pcm.ndim == 1


@examples(100)
@given(st.lists(st.binary(max_size=300).map(lambda tail: moshi.OGG_MAGIC + tail), max_size=4))
def test_the_opus_reader_fails_only_with_value_error_on_random_pages(chunks: list[bytes]) -> None:
    _feed(chunks)


@examples(100)
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=len(GENUINE) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    ),
    st.integers(min_value=1, max_value=len(GENUINE)),
)
def test_the_opus_reader_fails_only_with_value_error_on_damaged_pages(
    damage: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(GENUINE)
    for offset, value in damage:
        data[offset] = value
    _feed([bytes(data[:cut]), bytes(data[cut:])])
