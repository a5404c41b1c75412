"""Per-frame CPU of the Twilio conversion path, and each resampler quality's delay.

    .venv/bin/python benchmarks/codec.py [--frames N]

The path is what the bridge does with every 20 ms of every call, both ways:
parse -> mu-law decode -> 8k->24k, then 24k->8k -> mu-law encode -> media message.
CPU time (process_time), not wall time, so a busy neighbour inflates it less.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from xswarm.audio import mulaw
from xswarm.audio.levels import dbfs
from xswarm.audio.resample import QUALITIES, StreamResampler, measure_delay_ms
from xswarm.protocol import twilio


def per_frame_us(frames: int, quality: str) -> dict[str, float]:
    rng = np.random.default_rng(7)
    voice = (np.sin(np.arange(frames * 160) / 8000 * 2 * np.pi * 440) * 0.3).astype(np.float32)
    voice += (rng.standard_normal(voice.size) * 0.01).astype(np.float32)
    payloads = [mulaw.encode(voice[i : i + 160]) for i in range(0, voice.size, 160)]
    sid = twilio.new_stream_sid()
    inbound = twilio.InboundMedia(sid)
    messages = [inbound.message(k + 2, k + 1, k * 20, p) for k, p in enumerate(payloads)]
    outbound = twilio.Outbound(sid)
    up = StreamResampler(8000, 24000, quality, pad_start=True)
    down = StreamResampler(24000, 8000, quality)
    stages = dict.fromkeys(("parse", "decode", "up", "down", "encode", "message"), 0.0)
    clock = time.process_time
    for text in messages:
        t0 = clock()
        event = twilio.parse(text)
        t1 = clock()
        assert isinstance(event, twilio.Media)
        pcm8 = mulaw.decode(event.payload)
        t2 = clock()
        pcm24 = up.process(pcm8)
        t3 = clock()
        back8 = down.process(pcm24)
        t4 = clock()
        wire = mulaw.encode(back8)
        t5 = clock()
        outbound.media(wire)
        t6 = clock()
        for name, spent in zip(
            stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5), strict=True
        ):
            stages[name] += spent
    return {name: spent / frames * 1e6 for name, spent in stages.items()}


def alias_db(quality: str, tone_hz: float = 6000.0) -> float:
    """How loud a 24 kHz tone above the phone band comes out at 8 kHz, relative to itself."""
    tone = (np.sin(np.arange(24000) / 24000 * 2 * np.pi * tone_hz) * 0.5).astype(np.float32)
    down = StreamResampler(24000, 8000, quality)
    out = np.concatenate([down.process(tone[i : i + 480]) for i in range(0, 24000, 480)])
    return dbfs(out[800:]) - dbfs(tone)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    frames = parser.parse_args().frames
    for quality in ("QQ", "FIR"):
        stages = per_frame_us(frames, quality)
        print(f"Twilio path at {quality}, CPU per 20 ms frame (mean over {frames} frames):")
        print("  " + "  ".join(f"{name} {micros:.1f}" for name, micros in stages.items()) + " us")
        total = sum(stages.values())
        print(f"  total {total:.1f} us = {total / 20_000 * 100:.2f}% of one core per call")
    print("resampler per quality, fed 20 ms chunks: delay each way (worst hold-back + phase")
    print("lag) and a 6 kHz tone's level after 24k->8k (aliasing; lower is better):")
    for quality in QUALITIES:
        up = measure_delay_ms(8000, 24000, quality)
        down = measure_delay_ms(24000, 8000, quality)
        print(
            f"  {quality:4s} 8k->24k {up:6.2f} ms   24k->8k {down:6.2f} ms   "
            f"6 kHz alias {alias_db(quality):7.1f} dB"
        )


if __name__ == "__main__":
    main()
