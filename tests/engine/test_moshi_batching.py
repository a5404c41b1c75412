"""The batched step: each slot behaves as if it ran alone, whatever the other calls do.

Greedy decoding over the tiny model makes every run deterministic, so "unaffected" can be
checked bit for bit: tokens, text and PCM of the untouched slots must be exactly equal to a
reference run at the same batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pytest

from xswarm.engine.base import SlotOutput

pytestmark = pytest.mark.moshi

Run = list[dict[int, tuple[np.ndarray, SlotOutput]]]


def run(engine: Any, schedule: Iterable[dict[int, np.ndarray]], joins: dict[int, list[int]]) -> Run:
    """Step ``engine`` through ``schedule``; ``joins[t]``: slots that (re)join before tick t."""
    out: Run = []
    for tick, frames in enumerate(schedule):
        for slot in joins.get(tick, []):
            engine.join(slot)
        result = engine.step(frames)
        assert engine.last_tokens is not None
        out.append({s: (engine.last_tokens[s].copy(), result[s]) for s in frames})
    return out


def same(a: tuple[np.ndarray, SlotOutput], b: tuple[np.ndarray, SlotOutput]) -> bool:
    (tokens_a, out_a), (tokens_b, out_b) = a, b
    if not np.array_equal(tokens_a, tokens_b) or out_a.text != out_b.text:
        return False
    if out_a.pcm is None or out_b.pcm is None:
        return out_a.pcm is None and out_b.pcm is None
    return bool(np.array_equal(out_a.pcm, out_b.pcm))


def test_slot_output_equals_a_batch_of_one_run(
    moshi_engine: Callable[..., Any], caller_audio: np.ndarray
) -> None:
    alone = moshi_engine(1)
    crowd = moshi_engine(4)
    ticks = range(16)
    solo = run(alone, ({0: caller_audio[2, t]} for t in ticks), {0: [0]})
    batched = run(
        crowd, ({s: caller_audio[s, t] for s in range(4)} for t in ticks), {0: [0, 1, 2, 3]}
    )
    assert solo[0][0][1].pcm is None, "a fresh slot has no audio tokens on its first step"
    for mine, theirs in zip(solo, batched, strict=True):
        tokens_alone, out_alone = mine[0]
        tokens_batched, out_batched = theirs[2]
        np.testing.assert_array_equal(tokens_alone, tokens_batched)
        assert out_alone.text == out_batched.text
        if out_alone.pcm is None:
            assert out_batched.pcm is None
        else:
            assert out_batched.pcm is not None and out_batched.pcm.shape == (1920,)
            # Same tokens; the decoder's float sums may differ in the last bit with batch shape.
            np.testing.assert_allclose(out_alone.pcm, out_batched.pcm, atol=1e-5)
    assert any(
        np.abs(out.pcm).max() > 0
        for step in solo
        for (_, out) in step.values()
        if out.pcm is not None
    )


def test_join_leave_and_pause_leave_other_slots_bit_identical(
    moshi_engine: Callable[..., Any], caller_audio: np.ndarray
) -> None:
    ticks = 20
    steady = {0: caller_audio[0], 1: caller_audio[1]}

    def plain(t: int) -> dict[int, np.ndarray]:
        return {s: audio[t] for s, audio in steady.items()}

    reference = run(moshi_engine(4), (plain(t) for t in range(ticks)), {0: [0, 1]})

    def busy(t: int) -> dict[int, np.ndarray]:
        frames = plain(t)
        if 3 <= t < 12 and not 6 <= t < 9:  # slot 2: joins at 3, pauses 6..8, leaves after 11
            frames[2] = caller_audio[2, t]
        if t >= 5:  # slot 3: a call from 5, replaced by a new call joining the slot at 10
            frames[3] = caller_audio[3, t]
        return frames

    engine = moshi_engine(4)
    perturbed: Run = []
    for t in range(ticks):
        joins = [0, 1] if t == 0 else []
        joins += [2] if t == 3 else [3] if t in (5, 10) else []
        if t == 12:
            engine.leave(2)
        perturbed += run(engine, [busy(t)], {0: joins})
    for t in range(ticks):
        for slot in (0, 1):
            assert same(reference[t][slot], perturbed[t][slot]), f"slot {slot} changed at tick {t}"
    # The other calls did run: slot 2 produced audio before and after its pause.
    assert perturbed[5][2][1].pcm is not None and perturbed[9][2][1].pcm is not None


def test_a_paused_call_resumes_as_if_the_pause_never_happened(
    moshi_engine: Callable[..., Any], caller_audio: np.ndarray
) -> None:
    mine = caller_audio[1]
    reference = run(moshi_engine(3), ({1: mine[t]} for t in range(12)), {0: [1]})
    engine = moshi_engine(3)
    engine.join(0)
    engine.join(1)
    got: list[tuple[np.ndarray, SlotOutput]] = []
    frame = 0
    for tick in range(15):
        frames = {0: caller_audio[0, tick]}
        if not 4 <= tick < 7:  # three ticks without a frame from caller 1 (network stall)
            frames[1] = mine[frame]
            frame += 1
        result = engine.step(frames)
        if 1 in frames:
            assert engine.last_tokens is not None
            got.append((engine.last_tokens[1].copy(), result[1]))
    assert len(got) == len(reference)
    for t, (expected, actual) in enumerate(zip(reference, got, strict=True)):
        assert same(expected[1], actual), f"caller 1 diverged at its frame {t}"


def test_a_suggestion_shows_up_in_that_calls_text_only(
    moshi_engine: Callable[..., Any], caller_audio: np.ndarray
) -> None:
    ticks = 24
    every = [{s: caller_audio[s, t] for s in range(3)} for t in range(ticks)]
    reference = run(moshi_engine(3), every, {0: [0, 1, 2]})

    engine = moshi_engine(3)
    for slot in range(3):
        engine.join(slot)
    steered = run(engine, every[:2], {})
    result = engine.suggest(1, "hello world thank you")
    assert result.applied, result.reason
    steered += run(engine, every[2:], {})

    def words(r: Run, slot: int) -> str:
        return "".join(step[slot][1].text for step in r)

    assert "hello world thank you" in words(steered, 1)
    assert "hello world thank you" not in words(reference, 1)
    for t in range(ticks):
        for slot in (0, 2):
            assert same(reference[t][slot], steered[t][slot]), f"slot {slot} changed at tick {t}"


def test_suggestions_are_refused_with_a_reason(moshi_engine: Callable[..., Any]) -> None:
    engine = moshi_engine(2)
    engine.join(0)
    assert engine.suggest(1, "hello").reason == "call is not in the engine"
    assert not engine.suggest(0, "   ").applied
    assert "tokenizer knows" in engine.suggest(0, "\u2603\u2603").reason
    long = engine.suggest(0, "hello world " * 400)
    assert not long.applied and "at most" in long.reason
    for _ in range(5):  # 200 tokens each, 1024 may wait in a slot
        assert engine.suggest(0, "hello world " * 100).applied
    full = engine.suggest(0, "hello world " * 100)
    assert not full.applied and "still being spoken" in full.reason
    engine.join(0)  # a new call in the slot starts with nothing queued
    assert engine.suggest(0, "hello").applied


def test_bad_frames_are_refused_or_neutralised(
    moshi_engine: Callable[..., Any], caller_audio: np.ndarray
) -> None:
    engine = moshi_engine(2)
    engine.join(0)
    with pytest.raises(ValueError, match="expected 1920 samples"):
        engine.step({0: np.zeros(480, dtype=np.float32)})
    with pytest.raises(ValueError, match="join it"):
        engine.step({1: np.zeros(1920, dtype=np.float32)})
    with pytest.raises(ValueError, match="outside"):
        engine.join(2)
    hostile = np.full(1920, np.nan, dtype=np.float32)
    hostile[::2] = np.inf
    engine.join(1)
    for t in range(4):
        out = engine.step({0: caller_audio[0, t], 1: hostile})
    assert out[1].pcm is not None and np.isfinite(out[1].pcm).all()
    assert out[0].pcm is not None and np.isfinite(out[0].pcm).all()


def test_info_reports_slots_and_step_times(moshi_engine: Callable[..., Any]) -> None:
    engine = moshi_engine(3)
    info = engine.info()
    assert info.capacity == 3 and info.frame_ms == 80.0
    assert info.details["slots_in_use"] == 0 and info.details["step_ms_p50"] is None
    engine.join(0)
    engine.join(2)
    for _ in range(5):
        engine.step({0: np.zeros(1920, dtype=np.float32)})
    details = engine.info().details
    assert details["slots_in_use"] == 2 and details["steps"] == 5
    assert 0 < details["step_ms_p50"] <= details["step_ms_p99"]
    assert details["device"] == "cpu" and details["dtype"] == "fp32"
    assert engine.step({}) == {}


def test_info_can_be_read_while_the_engine_thread_steps(
    moshi_engine: Callable[..., Any], caller_audio: np.ndarray
) -> None:
    """The bridge reads info() on the event loop while its step thread runs step()."""
    import threading

    engine = moshi_engine(2)
    engine.join(0)
    done = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        # Read as often as a busy event loop might, but yield the GIL between reads: a
        # tight loop starves the step thread (14 min under CI load) and proves nothing more.
        while not done.wait(0.0005):
            try:
                engine.info()
            except BaseException as exc:  # any failure is the finding
                errors.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for t in range(24):
            engine.step({0: caller_audio[0, t]})
    finally:
        done.set()
        reader.join(10)
    assert errors == []
    assert engine.info().details["steps"] == 24


def test_sampling_and_bf16_run_and_still_take_suggestions(
    moshi_engine: Callable[..., Any], caller_audio: np.ndarray
) -> None:
    """Production settings: sampled tokens (top-k, temperature) and bf16 weights."""
    engine = moshi_engine(2, greedy=False, dtype="bf16")
    engine.join(0)
    engine.join(1)
    assert engine.suggest(0, "see you soon").applied
    said = ""
    for t in range(24):
        out = engine.step({0: caller_audio[0, t], 1: caller_audio[1, t]})
        said += out[0].text
        assert out[1].pcm is None or np.isfinite(out[1].pcm).all()
    assert "see you soon" in said, said
    assert engine.info().details["dtype"] == "bf16"


def test_sampling_keys_apply_live(
    moshi_engine: Callable[..., Any],
    moshi_config: Callable[..., Any],
    caller_audio: np.ndarray,
) -> None:
    engine = moshi_engine(1)

    def call() -> list[np.ndarray]:
        engine.join(0)
        tokens = []
        for t in range(6):
            engine.step({0: caller_audio[0, t]})
            tokens.append(engine.last_tokens[0].copy())
        return tokens

    first = call()
    assert engine.info().details["sampling"] == "greedy"
    engine.reconfigure(moshi_config(greedy=False, temperature=1.5, top_k=40))
    assert engine.info().details["sampling"] == "temperature 1.5 top_k 40"
    sampled = call()
    engine.reconfigure(moshi_config())
    again = call()
    assert engine.info().details["sampling"] == "greedy"
    # Greedy replays the same call exactly; 40 audio tokens drawn from 40 choices at T=1.5 do not.
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, sampled, strict=True))
