"""WAV files in and out, for `xswarm call`, the samples and the tests.

The RIFF chunks are walked by hand instead of through the standard ``wave`` module because
``wave`` on Python 3.11 refuses WAVE_FORMAT_EXTENSIBLE, which most recorders write for
24-bit and stereo audio, and refuses float files. Whatever is read comes back as float32
mono at the rate asked for; whatever is wrong names the file and what was found.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import soxr

_FORMAT_PCM = 1
_FORMAT_FLOAT = 3
_FORMAT_EXTENSIBLE = 0xFFFE
MAX_WAV_BYTES = 1 << 30


def _pcm_to_float(data: bytes, width: int, channels: int) -> np.ndarray:
    usable = len(data) - len(data) % (width * channels)
    raw = np.frombuffer(data, dtype=np.uint8, count=usable)
    if width == 1:
        samples = (raw.astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = raw.view("<i2").astype(np.float32) / 32768.0
    elif width == 3:
        triples = raw.reshape(-1, 3).astype(np.int32)
        value = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        samples = value.astype(np.float32) / float(1 << 23)
    else:
        samples = (raw.view("<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    return samples.reshape(-1, channels)


def read_wav(path: str | os.PathLike[str], rate: int) -> np.ndarray:
    """Any PCM (8/16/24/32-bit) or 32/64-bit float WAV, mono or multi-channel, as float32
    mono at ``rate``. Raises ValueError naming the file when it is not such a WAV."""
    name = os.fspath(path)
    try:
        size = os.path.getsize(name)
        if size > MAX_WAV_BYTES:
            raise ValueError(f"{name}: {size} bytes is larger than the {MAX_WAV_BYTES} allowed")
        blob = Path(name).read_bytes()
    except OSError as exc:
        raise ValueError(f"{name}: cannot read it: {exc.strerror or exc}") from exc
    if len(blob) < 12 or blob[0:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise ValueError(f"{name}: not a WAV file (no RIFF/WAVE header)")
    fmt: tuple[int, int, int, int] | None = None
    data: bytes | None = None
    offset = 12
    while offset + 8 <= len(blob):
        chunk_id = blob[offset : offset + 4]
        (chunk_size,) = struct.unpack_from("<I", blob, offset + 4)
        body = blob[offset + 8 : offset + 8 + chunk_size]
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(name, body)
        elif chunk_id == b"data":
            data = body  # a truncated data chunk keeps what is there, as players do
            break
        offset += 8 + chunk_size + (chunk_size & 1)
    if fmt is None:
        raise ValueError(f"{name}: WAV has no 'fmt ' chunk before its audio")
    if data is None:
        raise ValueError(f"{name}: WAV has no 'data' chunk")
    code, channels, file_rate, bits = fmt
    width = bits // 8
    if code == _FORMAT_FLOAT:
        dtype = "<f4" if width == 4 else "<f8"
        usable = len(data) - len(data) % (width * channels)
        frames = np.frombuffer(data, dtype=dtype, count=usable // width).astype(np.float32)
        frames = np.nan_to_num(frames, nan=0.0, posinf=1.0, neginf=-1.0).reshape(-1, channels)
    else:
        frames = _pcm_to_float(data, width, channels)
    mono = np.ascontiguousarray(frames.mean(axis=1, dtype=np.float32))
    if file_rate != rate and mono.size:
        mono = soxr.resample(mono, file_rate, rate, quality="HQ").astype(np.float32)
    return mono


def _parse_fmt(name: str, body: bytes) -> tuple[int, int, int, int]:
    if len(body) < 16:
        raise ValueError(f"{name}: WAV 'fmt ' chunk is {len(body)} bytes, needs at least 16")
    code, channels, file_rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body)
    if code == _FORMAT_EXTENSIBLE:
        if len(body) < 26:
            raise ValueError(f"{name}: WAV extensible 'fmt ' chunk is too short")
        (code,) = struct.unpack_from("<H", body, 24)  # the sub-format GUID starts with the code
    if code == _FORMAT_PCM:
        if bits not in (8, 16, 24, 32):
            raise ValueError(f"{name}: {bits}-bit PCM is not supported (8, 16, 24 or 32 bits)")
    elif code == _FORMAT_FLOAT:
        if bits not in (32, 64):
            raise ValueError(f"{name}: {bits}-bit float is not supported (32 or 64 bits)")
    else:
        raise ValueError(
            f"{name}: WAV encoding {code:#x} is not supported; convert it to PCM, e.g. "
            f"`ffmpeg -i {name} -acodec pcm_s16le out.wav`"
        )
    if not 1 <= channels <= 64:
        raise ValueError(f"{name}: WAV says {channels} channels")
    if not 1000 <= file_rate <= 768_000:
        raise ValueError(f"{name}: WAV sample rate {file_rate} Hz is out of range")
    return code, channels, file_rate, bits


def write_wav(path: str | os.PathLike[str], pcm: np.ndarray, rate: int) -> None:
    """16-bit mono PCM, clipped to full scale."""
    if rate <= 0:
        raise ValueError(f"{os.fspath(path)}: sample rate must be positive, got {rate}")
    finite = np.nan_to_num(np.asarray(pcm, dtype=np.float32), nan=0.0)
    scaled = np.clip(finite * 32768.0, -32768.0, 32767.0)
    data = np.rint(scaled).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, _FORMAT_PCM, 1, rate, rate * 2, 2, 16)
    header += b"data" + struct.pack("<I", len(data))
    Path(path).write_bytes(header + data)
