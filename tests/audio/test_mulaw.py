"""The mu-law codec against the G.711 reference that every telephone stack shares."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from xswarm.audio import mulaw

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python 3.13 removed it; the tables below still carry the check
        audioop = None  # type: ignore[assignment]

needs_audioop = pytest.mark.skipif(audioop is None, reason="audioop was removed in Python 3.13")
ALL_CODES = bytes(range(256))
SWEEP = np.arange(-32768, 32768, dtype=np.int16)


@needs_audioop
def test_decoding_every_code_matches_audioop() -> None:
    expected = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype=np.int16)
    assert np.array_equal(mulaw.decode_int16(ALL_CODES), expected)
    assert np.array_equal(mulaw.decode(ALL_CODES), expected.astype(np.float32) / 32768)


@needs_audioop
def test_encoding_every_int16_value_matches_audioop() -> None:
    expected = audioop.lin2ulaw(SWEEP.tobytes(), 2)
    assert mulaw.encode_int16(SWEEP) == expected
    assert mulaw.encode(SWEEP.astype(np.float32) / 32768) == expected


def test_known_g711_codes() -> None:
    """Values from the G.711 table: 0xFF and 0x7F are the two zeros, 0x80/0x00 the peaks."""
    assert mulaw.decode_int16(b"\xff\x7f\x80\x00").tolist() == [0, 0, 32124, -32124]
    assert mulaw.encode_int16(np.array([0, 32767, -32768], dtype=np.int16)) == b"\xff\x80\x00"


def test_every_code_survives_decode_then_encode() -> None:
    """Decoding and re-encoding is the identity, except -0 (0x7F) which becomes +0 (0xFF)."""
    again = mulaw.encode(mulaw.decode(ALL_CODES))
    expected = bytearray(ALL_CODES)
    expected[0x7F] = 0xFF
    assert again == bytes(expected)


def test_decode_returns_float32_in_range() -> None:
    pcm = mulaw.decode(ALL_CODES)
    assert pcm.dtype == np.float32
    assert pcm.min() >= -1.0 and pcm.max() < 1.0


def test_encode_clips_out_of_range_and_handles_empty() -> None:
    loud = np.array([4.0, -4.0, 1.0, -1.0], dtype=np.float32)
    assert mulaw.encode(loud) == b"\x80\x00\x80\x00"
    assert mulaw.encode(np.zeros(0, dtype=np.float32)) == b""
    assert mulaw.decode(b"").size == 0


def test_encode_accepts_float64() -> None:
    tone = np.sin(np.linspace(0, 20, 160))
    assert mulaw.encode(tone) == mulaw.encode(tone.astype(np.float32))


def test_nan_from_a_broken_engine_is_silence_and_infinities_clip() -> None:
    bad = np.array([np.nan, np.inf, -np.inf, 0.0], dtype=np.float32)
    assert mulaw.encode(bad) == b"\xff\x80\x00\xff"


@pytest.mark.filterwarnings("error")
def test_samples_far_beyond_full_scale_clip_without_overflow() -> None:
    """A broken engine's 3e38 is the loudest code, with no numpy overflow warning on the way
    (every codec converts through ``pcm16.to_int16``)."""
    from xswarm.audio import alaw, wire

    wild = np.array([3e38, -3e38, np.inf, -np.inf, np.nan], dtype=np.float32)
    edges = np.array([32767 / 32768, -1.0, 32767 / 32768, -1.0, 0.0], dtype=np.float32)
    assert mulaw.encode(wild) == mulaw.encode(edges)
    assert alaw.encode(wild) == alaw.encode(edges)
    assert wire.L16.encode(wild) == np.array([32767, -32768, 32767, -32768, 0], "<i2").tobytes()
