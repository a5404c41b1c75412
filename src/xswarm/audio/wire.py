"""The telephone audio encodings carriers put on the wire, as one table: name -> codec.

A carrier's stream says which encoding it carries (Telnyx PCMU or PCMA, Plivo mu-law, Exotel
16-bit linear); the bridge and the simulated callers look the codec up here instead of each
knowing every format. Every one is mono; telephone audio is 8 kHz (a 20 ms frame is 160
samples), and the wideband streams some carriers offer for 16-bit linear PCM run at 16 or
24 kHz (``frame_samples``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from xswarm.audio import alaw, mulaw
from xswarm.audio.pcm16 import to_int16

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at SAMPLE_RATE


def frame_samples(sample_rate: int) -> int:
    """Samples in one 20 ms frame at ``sample_rate``."""
    return sample_rate // 50


def _l16_decode(payload: bytes) -> np.ndarray:
    usable = len(payload) - len(payload) % 2
    samples = np.frombuffer(payload[:usable], dtype="<i2").astype(np.float32)
    samples *= np.float32(1 / 32768)
    return samples


def _l16_encode(pcm: np.ndarray) -> bytes:
    encoded: bytes = to_int16(pcm).astype("<i2", copy=False).tobytes()
    return encoded


@dataclass(frozen=True, slots=True)
class WireCodec:
    """One encoding: float32 PCM in [-1, 1) to bytes and back, and what one sample costs."""

    name: str
    decode: Callable[[bytes], np.ndarray]
    encode: Callable[[np.ndarray], bytes]
    sample_bytes: int
    silence: bytes  # one sample of silence

    @property
    def frame_bytes(self) -> int:
        return FRAME_SAMPLES * self.sample_bytes


PCMU = WireCodec("PCMU", mulaw.decode, mulaw.encode, 1, b"\xff")
PCMA = WireCodec("PCMA", alaw.decode, alaw.encode, 1, alaw.SILENCE)
L16 = WireCodec("L16", _l16_decode, _l16_encode, 2, b"\x00\x00")  # signed, little-endian

CODECS = {codec.name: codec for codec in (PCMU, PCMA, L16)}
