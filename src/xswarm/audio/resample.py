"""Streaming sample-rate conversion between the telephone (8 kHz) and the engines (24 kHz).

Every millisecond a resampler holds back is a millisecond added to each direction of a call,
so the quality is chosen by the delay measured in our own 20 ms chunking
(:func:`measure_delay_ms`), not by its name: soxr's "VHQ", pipecat's choice, holds back
tens of milliseconds when fed 20 ms at a time, while "QQ" holds back a fraction of one.

"QQ" has a price, measured too: it is cubic interpolation with no low-pass, so going down
to 8 kHz a 6 kHz tone comes out at full level, folded to 2 kHz. An engine's 24 kHz voice
has energy up there (sibilants), and on the phone it becomes noise. "FIR" is our own
band-limited path for integer ratios (8k <-> 24k): a 73-tap Kaiser low-pass, within
0.25 dB to 3.4 kHz, 20 dB down at 4 kHz and 44 dB from 4.4 kHz (better than the ITU-T
G.712 telephone mask), that holds nothing back and delays by its group delay alone, 1.5 ms.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import soxr

SOXR_QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")
QUALITIES = (*SOXR_QUALITIES, "FIR")
FIR_TAPS_PER_FACTOR = 24  # 73 taps at 3:1; odd, so the group delay is whole samples
FIR_KAISER_BETA = 3.5
FIR_CUTOFF = 0.9375  # of the low rate's Nyquist frequency: 3750 Hz for 8 kHz
_EMPTY = np.zeros(0, dtype=np.float32)


class StreamResampler:
    """One direction of one call: float32 mono in, float32 mono out, state kept between chunks."""

    __slots__ = (
        "_chunk",
        "_fed",
        "_pad_start",
        "_returned",
        "_stream",
        "in_rate",
        "out_rate",
        "quality",
    )

    def __init__(
        self, in_rate: int, out_rate: int, quality: str = "QQ", pad_start: bool = False
    ) -> None:
        """``pad_start``: the first output is topped up with leading silence to the length
        the input implies. At QQ, 8 kHz -> 24 kHz, 160 samples in give 475 out, not 480; a
        consumer that waits for whole 480-sample frames would then hold every frame until the
        next one arrives (+20 ms). Five samples (0.2 ms) of silence up front avoid that."""
        if quality not in QUALITIES:
            raise ValueError(f"resampler quality {quality!r} is not one of {', '.join(QUALITIES)}")
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality = quality
        self._stream: soxr.ResampleStream | FirResampler
        if quality == "FIR":
            self._stream = FirResampler(in_rate, out_rate)
        else:
            self._stream = soxr.ResampleStream(
                in_rate, out_rate, 1, dtype="float32", quality=quality
            )
        self._pad_start = pad_start
        self._fed = self._returned = 0
        # soxr's own ``resample_chunk`` checks the input and reshapes it to one channel and
        # back with numpy's Python-level helpers, which cost a quarter of a 20 ms chunk's
        # resampling; mono float32 needs neither, so the chunk goes to its C function directly.
        self._chunk: Callable[[np.ndarray], np.ndarray] = self._stream.resample_chunk
        soxr_process = getattr(self._stream, "_process", None)
        if isinstance(self._stream, soxr.ResampleStream) and callable(soxr_process):
            self._chunk = lambda pcm: soxr_process(pcm.reshape(-1, 1), False).reshape(-1)

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """Feed any number of samples; return every output sample that is ready."""
        if pcm.dtype != np.float32:
            pcm = pcm.astype(np.float32)
        out: np.ndarray = self._chunk(pcm)
        if self._pad_start:
            self._fed += len(pcm)
            self._returned += len(out)
            missing = self._fed * self.out_rate // self.in_rate - self._returned
            if self._fed and self._returned and missing >= 0:
                self._pad_start = False
                if missing:
                    self._returned += missing
                    out = np.concatenate([np.zeros(missing, dtype=np.float32), out])
        return out

    def flush(self) -> np.ndarray:
        """End of stream: return what the filter still holds. The resampler is spent after."""
        out: np.ndarray = self._stream.resample_chunk(_EMPTY, last=True)
        return out


def lowpass_taps(high_rate: int, low_rate: int) -> np.ndarray:
    """The band-limiting filter at ``high_rate`` for the band ``low_rate`` can carry:
    a Kaiser-windowed sinc with unity DC gain. The length is the cheapest that beats the
    ITU-T G.712 mask for 8 kHz telephony with margin (flat within 0.25 dB to 3.4 kHz,
    >= 14 dB down at 4 kHz, >= 32 dB from 4.6 kHz): every call pays for it 100 times a
    second."""
    factor = high_rate // low_rate
    count = FIR_TAPS_PER_FACTOR * factor + 1
    cutoff = FIR_CUTOFF * (low_rate / 2) / high_rate  # cycles per high-rate sample
    offsets = np.arange(count) - (count - 1) / 2
    taps = np.sinc(2 * cutoff * offsets) * np.kaiser(count, FIR_KAISER_BETA)
    return np.asarray(taps / taps.sum(), dtype=np.float32)


class FirResampler:
    """Integer-ratio resampling (up or down by ``factor``) through one linear-phase FIR.

    Output keeps exact pace with input (160 samples in, 480 out, every time), so nothing
    is held back; the audio is delayed by the filter's group delay, ``delay_samples`` at
    the high rate. The filter history carries across chunks of any size.
    """

    __slots__ = ("_history", "_phase", "_taps", "delay_samples", "factor", "up")

    def __init__(self, in_rate: int, out_rate: int) -> None:
        high, low = max(in_rate, out_rate), min(in_rate, out_rate)
        if high % low or high == low:
            raise ValueError(
                f"FIR resampling needs one rate to be a multiple of the other, "
                f"not {in_rate} -> {out_rate}; use a soxr quality such as QQ"
            )
        self.factor = high // low
        self.up = out_rate > in_rate
        self._taps = lowpass_taps(high, low) * (self.factor if self.up else 1)
        self._history = np.zeros(len(self._taps) - 1, dtype=np.float32)
        self._phase = 0  # how many high-rate samples to skip before the next kept one
        self.delay_samples = (len(self._taps) - 1) // 2

    def resample_chunk(self, pcm: np.ndarray, last: bool = False) -> np.ndarray:
        if self.up:
            stuffed = np.zeros(len(pcm) * self.factor, dtype=np.float32)
            stuffed[:: self.factor] = pcm
            pcm = stuffed
        extended = np.concatenate((self._history, pcm))
        self._history = extended[len(extended) - len(self._history) :]
        filtered = np.convolve(extended, self._taps, mode="valid").astype(np.float32, copy=False)
        if self.up:
            return filtered
        kept = filtered[self._phase :: self.factor]
        self._phase = (self._phase - len(pcm)) % self.factor
        return kept


def measure_delay_ms(
    in_rate: int, out_rate: int, quality: str, chunk_ms: float = 20.0, seconds: float = 1.0
) -> float:
    """The latency a stream resampler adds, fed ``chunk_ms`` at a time, in milliseconds.

    Two parts, both sample-count arithmetic on a test signal, never a clock:

    * hold-back: after each chunk, the audio fed minus the audio returned. A real-time
      sender cannot play what it has not got, so the worst case over the run is the delay.
    * phase lag: the offset that best aligns the streamed output with a one-shot,
      zero-phase conversion of the same signal (soxr compensates its filter; we check).
    """
    chunk = round(in_rate * chunk_ms / 1000)
    if chunk <= 0:
        raise ValueError(f"chunk of {chunk_ms} ms at {in_rate} Hz has no samples")
    rng = np.random.default_rng(2024)
    signal = (rng.standard_normal(round(in_rate * seconds)) * 0.1).astype(np.float32)
    resampler = StreamResampler(in_rate, out_rate, quality)
    pieces: list[np.ndarray] = []
    fed = returned = 0
    worst_hold = 0.0
    for start in range(0, len(signal) - chunk + 1, chunk):
        out = resampler.process(signal[start : start + chunk])
        pieces.append(out)
        fed += chunk
        returned += len(out)
        worst_hold = max(worst_hold, fed / in_rate - returned / out_rate)
    pieces.append(resampler.flush())
    streamed = np.concatenate(pieces)
    reference = soxr.resample(signal[:fed], in_rate, out_rate, quality="VHQ").astype(np.float32)
    length = min(len(streamed), len(reference))
    lag_samples = best_lag(streamed[:length], reference[:length])
    return (worst_hold + max(lag_samples, 0) / out_rate) * 1000.0


def best_lag(signal: np.ndarray, reference: np.ndarray) -> int:
    """How many samples ``signal`` trails ``reference`` (negative: leads), by FFT correlation."""
    size = 1 << (len(signal) + len(reference)).bit_length()
    spectrum = np.fft.rfft(signal, size) * np.conj(np.fft.rfft(reference, size))
    correlation = np.fft.irfft(spectrum, size)
    peak = int(np.argmax(correlation))
    return peak if peak < size // 2 else peak - size
