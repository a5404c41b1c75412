"""A-law against CPython's ``audioop`` (the ITU G.711 reference code), every value."""

from __future__ import annotations

import warnings

import numpy as np

from xswarm.audio import alaw

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def test_every_code_decodes_as_audioop() -> None:
    codes = bytes(range(256))
    expected = np.frombuffer(audioop.alaw2lin(codes, 2), dtype=np.int16)
    assert np.array_equal(alaw.decode_int16(codes), expected)


def test_every_int16_encodes_as_audioop() -> None:
    every = np.arange(-32768, 32768, dtype=np.int16)
    assert alaw.encode_int16(every) == audioop.lin2alaw(every.tobytes(), 2)


def test_float_encoding_of_int16_audio_is_bit_exact() -> None:
    every = np.arange(-32768, 32768, dtype=np.int16)
    assert alaw.encode(every.astype(np.float32) / 32768.0) == audioop.lin2alaw(every.tobytes(), 2)


def test_float_decode_is_the_int16_decode_scaled() -> None:
    codes = bytes(range(256))
    assert np.array_equal(alaw.decode(codes) * 32768.0, alaw.decode_int16(codes).astype(np.float32))


def test_decode_then_encode_is_the_identity_on_codes() -> None:
    codes = bytes(range(256))
    assert alaw.encode_int16(alaw.decode_int16(codes)) == codes


def test_silence_clipping_and_nan() -> None:
    assert alaw.encode(np.zeros(3, dtype=np.float32)) == alaw.SILENCE * 3 == b"\xd5\xd5\xd5"
    loud = alaw.encode(np.array([4.0, -4.0, np.nan], dtype=np.float32))
    assert loud == audioop.lin2alaw(np.array([32767, -32768, 0], dtype=np.int16).tobytes(), 2)
