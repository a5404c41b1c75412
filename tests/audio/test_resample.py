"""The stream resampler: delay measured from the signal, and audio that survives the trip."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from xswarm.audio import mulaw
from xswarm.audio.levels import dbfs
from xswarm.audio.resample import StreamResampler, best_lag, measure_delay_ms


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_frequency(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])


@pytest.mark.parametrize("quality", ["QQ", "FIR"])
@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 24000), (24000, 8000)])
def test_low_delay_qualities_add_under_5_ms_each_way_in_20_ms_chunks(
    in_rate: int, out_rate: int, quality: str
) -> None:
    assert measure_delay_ms(in_rate, out_rate, quality, chunk_ms=20.0) < 5.0


def test_fir_delay_is_its_group_delay_exactly() -> None:
    """73 taps at 24 kHz: 36 samples, 1.5 ms, found by correlation, not assumed."""
    assert measure_delay_ms(8000, 24000, "FIR") == pytest.approx(1.5, abs=0.05)
    assert measure_delay_ms(24000, 8000, "FIR") == pytest.approx(1.5, abs=0.2)


def downsampled_level(freq: float, quality: str) -> float:
    source = tone(freq, 24000, 1.0)
    down = StreamResampler(24000, 8000, quality)
    out = np.concatenate([down.process(source[i : i + 480]) for i in range(0, 24000, 480)])
    return dbfs(out[800:]) - dbfs(source)


@pytest.mark.parametrize(
    ("freq", "floor_db"), [(4000, -14), (4600, -32), (6000, -50), (11000, -50)]
)
def test_fir_keeps_engine_audio_above_4_khz_off_the_phone_line(
    freq: float, floor_db: float
) -> None:
    """At least the ITU-T G.712 mask at 4 and 4.6 kHz, and far more above."""
    assert downsampled_level(freq, "FIR") < floor_db


def test_qq_folds_it_back_in_full_which_is_what_fir_is_for() -> None:
    assert downsampled_level(6000, "QQ") > -1


@pytest.mark.parametrize("freq", [300, 1000, 3000, 3400])
def test_fir_passes_the_telephone_band_flat(freq: float) -> None:
    assert downsampled_level(freq, "FIR") == pytest.approx(0, abs=0.25)


def test_fir_keeps_pace_with_any_chunking_and_refuses_odd_ratios() -> None:
    up, down = StreamResampler(8000, 24000, "FIR"), StreamResampler(24000, 8000, "FIR")
    assert [len(up.process(np.ones(n, dtype=np.float32))) for n in (160, 7, 1)] == [480, 21, 3]
    sizes = [480, 7, 1, 2, 480]
    assert [len(down.process(np.ones(n, dtype=np.float32))) for n in sizes] == [160, 3, 0, 1, 160]
    assert len(down.flush()) == 0
    with pytest.raises(ValueError, match="multiple of the other"):
        StreamResampler(8000, 22050, "FIR")


def test_vhq_holds_back_far_more_which_is_why_we_do_not_use_it() -> None:
    """The measurement is real: a high-quality filter fed 20 ms at a time shows its delay."""
    assert measure_delay_ms(8000, 24000, "VHQ") > 30.0


def test_streamed_output_is_time_aligned_with_one_shot_output() -> None:
    signal = tone(440, 8000, 1.0)
    resampler = StreamResampler(8000, 24000)
    streamed = np.concatenate(
        [resampler.process(signal[i : i + 160]) for i in range(0, 8000, 160)] + [resampler.flush()]
    )
    assert len(streamed) == 24000
    reference = tone(440, 24000, 1.0)
    assert best_lag(streamed, reference) == 0


def test_any_chunk_size_gives_the_same_total() -> None:
    signal = tone(300, 24000, 0.5)
    resampler = StreamResampler(24000, 8000)
    sizes = [1, 7, 480, 1000, 13, 2500]
    out, start = [], 0
    for size in sizes * 10:
        out.append(resampler.process(signal[start : start + size]))
        start += size
        if start >= len(signal):
            break
    out.append(resampler.flush())
    assert abs(sum(len(piece) for piece in out) - len(signal) // 3) <= 1


@pytest.mark.parametrize("quality", ["QQ", "FIR"])
def test_tone_survives_the_full_telephone_round_trip(quality: str) -> None:
    """24 kHz -> 8 kHz -> mu-law -> 8 kHz -> 24 kHz, in 20 ms frames, as a call does it."""
    source = tone(440, 24000, 1.0, amplitude=0.3)
    down, up = StreamResampler(24000, 8000, quality), StreamResampler(8000, 24000, quality)
    returned = []
    for start in range(0, len(source), 480):
        wire = mulaw.encode(down.process(source[start : start + 480]))
        returned.append(up.process(mulaw.decode(wire)))
    back = np.concatenate(returned)
    steady = back[2400:-2400]
    assert peak_frequency(steady, 24000) == pytest.approx(440, abs=2)
    assert dbfs(steady) == pytest.approx(dbfs(source), abs=0.5)


def test_bad_arguments_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="quality 'BEST'"):
        StreamResampler(8000, 24000, "BEST")
    with pytest.raises(ValueError, match="positive"):
        StreamResampler(0, 24000)
    with pytest.raises(ValueError, match="no samples"):
        measure_delay_ms(8000, 24000, "QQ", chunk_ms=0.01)


def test_float64_input_is_accepted() -> None:
    resampler = StreamResampler(8000, 24000)
    out = resampler.process(np.zeros(160, dtype=np.float64))
    assert out.dtype == np.float32


def test_pad_start_makes_every_telephone_frame_a_whole_engine_frame() -> None:
    """Without it the first 20 ms frame gives 475 samples and each engine frame waits for the
    next telephone frame; with it every 160 samples in give exactly 480 out."""
    plain, padded = StreamResampler(8000, 24000), StreamResampler(8000, 24000, pad_start=True)
    signal = tone(440, 8000, 0.2)
    frames = [signal[i : i + 160] for i in range(0, len(signal), 160)]
    assert len(plain.process(frames[0])) == 475
    assert [len(padded.process(frame)) for frame in frames] == [480] * len(frames)


def test_pad_start_leaves_a_resampler_without_hold_back_alone() -> None:
    down = StreamResampler(24000, 8000, pad_start=True)
    assert [len(down.process(np.ones(480, dtype=np.float32))) for _ in range(3)] == [160] * 3


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 24000), (24000, 8000)])
def test_soxr_fed_directly_gives_what_its_own_wrapper_gives(in_rate: int, out_rate: int) -> None:
    """StreamResampler skips soxr's Python wrapper for speed: the samples must not change."""
    rng = np.random.default_rng(5)
    ours = StreamResampler(in_rate, out_rate, "QQ")
    theirs = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="QQ")
    for size in (160, 480, 1, 0, 333, 1920):
        chunk = (0.3 * rng.standard_normal(size)).astype(np.float32)
        expected = theirs.resample_chunk(chunk)
        got = ours.process(chunk)
        assert got.dtype == np.float32 and got.ndim == 1
        np.testing.assert_array_equal(got, expected)
