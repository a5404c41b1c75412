"""G.711 A-law, the codec of European and most non-US carriers (Telnyx PCMA), as lookup tables.

The tables follow the ITU-T G.711 reference (Sun's ``g711.c``) exactly as CPython's
``audioop.lin2alaw``/``alaw2lin`` did, so our bytes are bit-identical to every other
telephony stack's. Like ``mulaw``, each direction is one table lookup per sample: a bridge full
of A-law calls codes thousands of frames a second and has no room for per-sample Python.
"""

from __future__ import annotations

import numpy as np

from xswarm.audio.pcm16 import to_int16

# The upper bound of each of the 8 segments, in the 13-bit magnitude domain.
_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
# A-law inverts the even bits of every code so that idle lines carry transitions.
_EVEN_BITS = 0x55


def _build_decode_table() -> np.ndarray:
    """The 256 linear 16-bit values, one per A-law code."""
    codes = np.arange(256, dtype=np.int32) ^ _EVEN_BITS
    segment = (codes & 0x70) >> 4
    mantissa = (codes & 0x0F) << 4
    magnitude = np.where(
        segment == 0,
        mantissa + 8,
        (mantissa + 0x108) << np.maximum(segment - 1, 0),
    )
    return np.where(codes & 0x80, magnitude, -magnitude).astype(np.int16)


def _build_encode_table() -> np.ndarray:
    """The A-law code of every int16 value, indexed by the value's uint16 bit pattern."""
    linear = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    value = linear >> 3  # G.711 A-law works on 13-bit samples
    negative = value < 0
    mask = np.where(negative, _EVEN_BITS, 0x80 | _EVEN_BITS)
    magnitude = np.where(negative, -value - 1, value)
    segment = np.searchsorted(_SEGMENT_ENDS, magnitude, side="left")
    shift = np.where(segment < 2, 1, segment)
    code = (segment << 4) | ((magnitude >> shift) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)  # beyond the last segment: the loudest code
    return ((code ^ mask) & 0xFF).astype(np.uint8)


DECODE_INT16 = _build_decode_table()
ENCODE_UINT16 = _build_encode_table()
_DECODE_FLOAT = (DECODE_INT16.astype(np.float32) / np.float32(32768.0)).astype(np.float32)
SILENCE = bytes([ENCODE_UINT16[0]])  # 0xD5


def decode(payload: bytes) -> np.ndarray:
    """A-law bytes to float32 PCM in [-1, 1)."""
    return _DECODE_FLOAT.take(np.frombuffer(payload, dtype=np.uint8))


def decode_int16(payload: bytes) -> np.ndarray:
    """A-law bytes to int16 PCM, exactly ``audioop.alaw2lin(payload, 2)``."""
    return DECODE_INT16.take(np.frombuffer(payload, dtype=np.uint8))


def encode(pcm: np.ndarray) -> bytes:
    """Float PCM (clipped to [-1, 1]) to A-law bytes; NaN is silence.

    Samples are rounded to the nearest int16 first, so an input that came from int16 audio
    (``x / 32768``) encodes exactly as ``audioop.lin2alaw`` would have encoded the original.
    """
    encoded: np.ndarray = ENCODE_UINT16.take(to_int16(pcm).view(np.uint16))
    return encoded.tobytes()


def encode_int16(pcm: np.ndarray) -> bytes:
    """Int16 PCM to A-law bytes, exactly ``audioop.lin2alaw(pcm.tobytes(), 2)``."""
    return ENCODE_UINT16[np.asarray(pcm, dtype=np.int16).view(np.uint16)].tobytes()
