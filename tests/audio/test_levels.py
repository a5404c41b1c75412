"""dBFS and the speech detector, frame by frame."""

from __future__ import annotations

import numpy as np
import pytest

from xswarm.audio.levels import SILENCE_DBFS, SpeechDetector, dbfs

RATE = 8000
FRAME = 160


def frames(level: float, count: int) -> list[np.ndarray]:
    """``count`` 20 ms frames of square wave at ``level`` dBFS (RMS equals amplitude)."""
    amplitude = 10 ** (level / 20)
    square = np.where(np.arange(FRAME) % 2 == 0, amplitude, -amplitude).astype(np.float32)
    return [square] * count


def test_full_scale_square_is_0_dbfs_and_half_is_minus_6() -> None:
    assert dbfs(frames(0.0, 1)[0]) == pytest.approx(0.0, abs=1e-6)
    assert dbfs(np.full(100, 0.5, dtype=np.float32)) == pytest.approx(-6.0206, abs=1e-3)


def test_silence_empty_and_non_finite_audio() -> None:
    assert dbfs(np.zeros(160, dtype=np.float32)) == SILENCE_DBFS
    assert dbfs(np.zeros(0, dtype=np.float32)) == SILENCE_DBFS
    assert dbfs(np.array([np.nan, 0.0], dtype=np.float32)) == 0.0


def test_a_segment_is_reported_once_after_the_hangover_with_its_speech_length() -> None:
    detector = SpeechDetector(RATE, threshold_dbfs=-40, hangover_ms=300)
    results = [detector.feed(f) for f in frames(-60, 5) + frames(-20, 50) + frames(-60, 20)]
    ended = [r for r in results if r is not None]
    assert ended == [1000]
    assert results.index(1000) == 5 + 50 + 15 - 1  # 300 ms of quiet = 15 frames


def test_short_pauses_inside_speech_do_not_split_it() -> None:
    detector = SpeechDetector(RATE, threshold_dbfs=-40, hangover_ms=300)
    audio = frames(-20, 10) + frames(-60, 10) + frames(-20, 10) + frames(-60, 30)
    ended = [r for r in (detector.feed(f) for f in audio) if r is not None]
    assert ended == [600]


def test_quiet_audio_never_reports_and_detector_is_reusable() -> None:
    detector = SpeechDetector(RATE)
    assert all(detector.feed(f) is None for f in frames(-70, 100))
    for f in frames(-10, 5) + frames(-70, 20):
        detector.feed(f)
    assert not detector.speaking
    ended = [r for r in (detector.feed(f) for f in frames(-10, 3) + frames(-70, 20)) if r]
    assert ended == [60]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        SpeechDetector(0)
    with pytest.raises(ValueError, match="hangover_ms"):
        SpeechDetector(RATE, hangover_ms=-1)
