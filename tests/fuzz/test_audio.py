"""G.711 mu-law, the decode every Twilio media payload goes through (there is no A-law in
xswarm): any bytes decode to finite samples in [-1, 1), and decode then encode is the
identity except for mu-law's two zeros."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.fuzz.strategies import examples
from xswarm.audio import mulaw

NEGATIVE_ZERO, POSITIVE_ZERO = 0x7F, 0xFF


@examples(200)
@given(st.binary(max_size=1600))
def test_any_payload_decodes_to_finite_samples_and_back(payload: bytes) -> None:
    pcm = mulaw.decode(payload)
    assert pcm.dtype == np.float32 and pcm.shape == (len(payload),)
    assert np.isfinite(pcm).all() and (pcm >= -1).all() and (pcm < 1).all()
    expected = payload.replace(bytes([NEGATIVE_ZERO]), bytes([POSITIVE_ZERO]))
    assert mulaw.encode(pcm) == expected
    assert mulaw.encode_int16(mulaw.decode_int16(payload)) == expected


# Any float32 at all, the largest included: samples are clipped before they are scaled, so
# nothing overflows (numpy warned on every frame beyond about 1e34 before; now a warning
# fails the test).
samples = st.floats(width=32) | st.sampled_from([float("nan"), float("inf"), float("-inf")])


@pytest.mark.filterwarnings("error")
@examples(150)
@given(hnp.arrays(np.float32, st.integers(0, 400), elements=samples))
def test_any_float_audio_encodes_one_byte_per_sample(pcm: np.ndarray) -> None:
    encoded = mulaw.encode(pcm)
    assert len(encoded) == len(pcm)
    silence = mulaw.encode(np.zeros(1, dtype=np.float32))
    for sample, code in zip(pcm, encoded, strict=True):
        if np.isnan(sample):
            assert bytes([code]) == silence
