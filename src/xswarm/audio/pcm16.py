"""Float PCM to 16-bit samples, the one conversion every wire codec starts from.

Clipped before it is scaled: a broken engine's 1e38 then clips quietly instead of
overflowing float32 (numpy warned on every such frame), and NaN is silence. For input in
[-1, 1] the result is the same as scaling first, so an input that came from int16 audio
(``x / 32768``) converts back to exactly the original samples.
"""

from __future__ import annotations

import numpy as np

_HIGHEST = np.float32(32767 / 32768)  # exact in float32: scales to 32767


def to_int16(pcm: np.ndarray) -> np.ndarray:
    """Float PCM in [-1, 1) (anything beyond is clipped, NaN is 0) as int16, rounded."""
    clipped = np.minimum(pcm, _HIGHEST, dtype=np.float32)
    np.maximum(clipped, np.float32(-1.0), out=clipped)
    np.copyto(clipped, np.float32(0.0), where=np.isnan(clipped))
    np.multiply(clipped, np.float32(32768.0), out=clipped)
    samples: np.ndarray = np.rint(clipped, out=clipped).astype(np.int16)
    return samples
