"""WAV files of every common layout in, 16-bit mono out, and clear errors on garbage."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from xswarm.audio.wav import read_wav, write_wav

RATE = 8000


def ramp(n: int = 800) -> np.ndarray:
    return np.linspace(-0.9, 0.9, n, dtype=np.float32)


def write_with_wave_module(path: Path, width: int, channels: int, samples: np.ndarray) -> None:
    """Write through the standard library, an independent writer, for the read tests."""
    if width == 1:
        raw = np.rint(samples * 127 + 128).astype(np.uint8)
    elif width == 2:
        raw = np.rint(samples * 32767).astype("<i2")
    elif width == 3:
        ints = np.rint(samples * (2**23 - 1)).astype("<i4")
        raw = np.frombuffer(ints.tobytes(), dtype=np.uint8).reshape(-1, 4)[:, :3]
    else:
        raw = np.rint(samples.astype(np.float64) * (2**31 - 1)).astype("<i4")
    interleaved = np.repeat(raw.reshape(len(samples), -1), channels, axis=0)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(RATE)
        out.writeframes(interleaved.tobytes())


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2])
def test_every_pcm_width_mono_and_stereo_reads_back(
    tmp_path: Path, width: int, channels: int
) -> None:
    path = tmp_path / f"w{width}c{channels}.wav"
    write_with_wave_module(path, width, channels, ramp())
    pcm = read_wav(path, RATE)
    assert pcm.dtype == np.float32
    assert pcm.shape == (800,)
    tolerance = 2 / 128 if width == 1 else 1e-4
    assert np.max(np.abs(pcm - ramp())) < tolerance


def test_write_then_read_is_16_bit_exact_and_resamples(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    write_wav(path, ramp(), RATE)
    with wave.open(str(path)) as check:
        assert (check.getnchannels(), check.getsampwidth(), check.getframerate()) == (1, 2, RATE)
    assert np.max(np.abs(read_wav(path, RATE) - ramp())) <= 1 / 32768
    assert read_wav(path, 24000).shape == (2400,)


def test_write_clips_and_survives_nan(tmp_path: Path) -> None:
    path = tmp_path / "loud.wav"
    write_wav(path, np.array([2.0, -2.0, np.nan], dtype=np.float32), RATE)
    assert read_wav(path, RATE).tolist() == [32767 / 32768, -1.0, 0.0]


def extensible_wav(bits: int, format_code: int, payload: bytes, channels: int = 1) -> bytes:
    block = channels * bits // 8
    guid = struct.pack("<H", format_code) + bytes.fromhex("000000001000800000aa00389b71")
    fmt = struct.pack("<HHIIHH", 0xFFFE, channels, RATE, RATE * block, block, bits)
    fmt += struct.pack("<HHI", 22, bits, 0) + guid
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # odd chunk, padded
    chunks += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def test_extensible_24_bit_and_float_files(tmp_path: Path) -> None:
    ints = np.array([0, 2**22, -(2**22)], dtype="<i4").tobytes()
    packed = b"".join(ints[i : i + 3] for i in range(0, 12, 4))
    (tmp_path / "a.wav").write_bytes(extensible_wav(24, 1, packed))
    assert read_wav(tmp_path / "a.wav", RATE).tolist() == [0.0, 0.5, -0.5]
    floats = np.array([0.25, -0.5, np.inf], dtype="<f4").tobytes()
    (tmp_path / "f.wav").write_bytes(extensible_wav(32, 3, floats))
    assert read_wav(tmp_path / "f.wav", RATE).tolist() == [0.25, -0.5, 1.0]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "no RIFF/WAVE header"),
        (b"hello world, I am not audio at all", "no RIFF/WAVE header"),
        (b"RIFF\x00\x00\x00\x00WAVEdata\x00\x00\x00\x00", "no 'fmt ' chunk"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt \x04\x00\x00\x00abcd", "at least 16"),
        (bytes(range(256)) * 40, "no RIFF/WAVE header"),
    ],
)
def test_garbage_is_refused_naming_the_file(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "junk.wav"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=reason) as caught:
        read_wav(path, RATE)
    assert str(path) in str(caught.value)


def test_unsupported_encodings_name_the_fix(tmp_path: Path) -> None:
    fmt = struct.pack("<HHIIHH", 0x0055, 1, RATE, RATE, 1, 8)  # MP3 in a WAV
    blob = b"RIFF\x00\x00\x00\x00WAVEfmt " + struct.pack("<I", 16) + fmt + b"data\x00\x00\x00\x00"
    (tmp_path / "mp3.wav").write_bytes(blob)
    with pytest.raises(ValueError, match="0x55 is not supported.*ffmpeg"):
        read_wav(tmp_path / "mp3.wav", RATE)
    pcm_fmt = struct.pack("<HHIIHH", 1, 1, RATE, RATE * 2, 2, 16)
    (tmp_path / "nodata.wav").write_bytes(blob.replace(fmt, pcm_fmt)[:-8])
    with pytest.raises(ValueError, match="no 'data' chunk"):
        read_wav(tmp_path / "nodata.wav", RATE)
    weird = struct.pack("<HHIIHH", 1, 1, RATE, RATE, 1, 12)
    (tmp_path / "12.wav").write_bytes(blob.replace(fmt, weird))
    with pytest.raises(ValueError, match="12-bit PCM"):
        read_wav(tmp_path / "12.wav", RATE)
    zero_rate = struct.pack("<HHIIHH", 1, 1, 0, 0, 2, 16)
    (tmp_path / "rate.wav").write_bytes(blob.replace(fmt, zero_rate))
    with pytest.raises(ValueError, match="sample rate 0"):
        read_wav(tmp_path / "rate.wav", RATE)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read it"):
        read_wav(tmp_path / "absent.wav", RATE)
    with pytest.raises(ValueError, match="cannot read it"):
        read_wav(tmp_path, RATE)


def test_truncated_data_keeps_whole_frames(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    write_wav(path, ramp(100), RATE)
    path.write_bytes(path.read_bytes()[:-51])
    assert read_wav(path, RATE).shape == (74,)
