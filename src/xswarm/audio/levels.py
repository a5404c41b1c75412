"""Audio levels and a small energy speech detector, pure functions over PCM arrays.

The bridge reports levels in ``call_stats`` and emits ``user_speech`` when a caller stops
talking. An energy threshold with a hangover is enough for that: it is cheap enough to run
on every 20 ms frame of every call, and the hangover keeps the short pauses inside a
sentence from splitting it into many segments.
"""

from __future__ import annotations

import math

import numpy as np

SILENCE_DBFS = -120.0


def dbfs(pcm: np.ndarray) -> float:
    """RMS level relative to full scale (a full-scale square wave is 0 dBFS)."""
    if pcm.size == 0:
        return SILENCE_DBFS
    # Not np.dot: that is BLAS, and once torch is loaded in the process OpenBLAS's threads
    # make each call 20-100x slower under CPU contention (measured: 300 one-second levels
    # took 75-375 ms instead of 4). A plain ufunc reduction has no threads to wait for.
    mean_square = float(np.add.reduce(np.square(pcm, dtype=np.float64))) / pcm.size
    if not math.isfinite(mean_square):
        return 0.0  # NaN or infinity in the audio: report it as loud as it gets, not silent
    if mean_square <= 1e-12:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(mean_square))


class SpeechDetector:
    """Finds where a caller's speech segments end, frame by frame.

    A frame at or above ``threshold_dbfs`` is speech. A segment ends once ``hangover_ms`` of
    quieter audio has followed it; its duration counts from its first loud sample to its
    last loud one, so the hangover itself is not counted as speech.
    """

    __slots__ = (
        "_hangover",
        "_quiet",
        "_rate",
        "_speech",
        "_threshold",
        "_in_segment",
        "_loud_energy",
    )

    def __init__(
        self, sample_rate: int, threshold_dbfs: float = -45.0, hangover_ms: int = 300
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if hangover_ms < 0:
            raise ValueError(f"hangover_ms must be zero or more, got {hangover_ms}")
        self._rate = sample_rate
        self._threshold = threshold_dbfs
        self._loud_energy = 10.0 ** (threshold_dbfs / 10.0)  # mean square at the threshold
        self._hangover = sample_rate * hangover_ms // 1000
        self._in_segment = False
        self._speech = 0  # samples from the segment's start to its last loud frame
        self._quiet = 0  # quiet samples since the last loud frame

    @property
    def speaking(self) -> bool:
        return self._in_segment

    @property
    def hangover_samples(self) -> int:
        """While not ``speaking``, the caller has been quiet for at least this long."""
        return self._hangover

    def feed(self, pcm: np.ndarray) -> int | None:
        """Take the next frame; return the segment's duration in ms when one has just ended."""
        # dbfs(pcm) >= threshold, as energy against the threshold's energy: no float64 copy
        # and no log for every frame of every call. Non-finite audio counts as loud, as dbfs
        # reports it.
        energy = float(np.add.reduce(np.square(pcm))) if pcm.size else 0.0
        loud = pcm.size > 0 and not energy < self._loud_energy * pcm.size
        if loud:
            if self._in_segment:
                self._speech += self._quiet + pcm.size
            else:
                self._in_segment = True
                self._speech = pcm.size
            self._quiet = 0
            return None
        if not self._in_segment:
            return None
        self._quiet += pcm.size
        if self._quiet < self._hangover:
            return None
        duration_ms = self._speech * 1000 // self._rate
        self._in_segment = False
        self._speech = self._quiet = 0
        return duration_ms
