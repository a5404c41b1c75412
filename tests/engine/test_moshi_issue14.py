"""Issue 14, engine side: self-sizing, no silent echo, bad settings at start, broken steps,
long calls, steering events and cancel, live reload of sampling, and moshi's own loop as the
reference. Timing is never asserted: sizing is driven with made-up step times."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from xswarm.config import Config
from xswarm.engine import base
from xswarm.engine.moshi import MoshiEngine
from xswarm.engine.select import choice
from xswarm.engine.sizing import StepTimes, largest_within
from xswarm.errors import EngineLoadError

pytestmark = pytest.mark.moshi


def linear(cost_ms: float, base_ms: float = 5.0) -> Callable[[int], StepTimes]:
    return lambda n: StepTimes(n, base_ms + cost_ms * n * 0.9, base_ms + cost_ms * n, 200)


def test_sizing_finds_the_largest_batch_within_the_budget_in_few_candidates() -> None:
    sized = largest_within(300, 60.0, linear(0.5))  # p99 = 5 + 0.5 n: 110 slots fit 60 ms
    assert sized.slots == 110 and len(sized.table) <= 6
    assert largest_within(40, 60.0, linear(0.5)).slots == 40  # memory is the limit
    assert len(largest_within(40, 60.0, linear(0.5)).table) == 1
    assert largest_within(8, 60.0, linear(100.0)).slots == 0  # not even one slot


def test_slots_zero_sizes_to_memory_and_budget(
    moshi_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    timed: list[int] = []

    def fake(self: MoshiEngine, slots: int, steps: int | None = None) -> StepTimes:
        if slots != self.capacity:
            self._stream(slots)
        timed.append(slots)
        return linear(20.0)(slots)  # 5 + 20 n: 2 slots within 60 ms

    monkeypatch.setattr(MoshiEngine, "_time_steps", fake)
    engine = MoshiEngine(moshi_config(real_time_check=True).with_bridge(max_concurrent_calls=6))
    engine.load()
    assert engine.capacity == 6  # the memory fit, capped by max_concurrent_calls
    engine.warmup()
    assert engine.capacity == 2 and timed[0] == 6
    details = engine.info().details
    assert details["slots"] == 2 and details["sized_by"] == "step budget"
    assert details["warmup_step_ms_p99"] == 45.0
    engine.join(1)
    assert engine.step({1: np.zeros(1920, dtype=np.float32)})[1].pcm is None
    engine.close()


def test_configured_slots_too_slow_for_the_frame_exit_78_with_the_figure(
    moshi_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake(self: MoshiEngine, slots: int, steps: int | None = None) -> StepTimes:
        return linear(20.0)(slots)

    monkeypatch.setattr(MoshiEngine, "_time_steps", fake)
    engine = MoshiEngine(moshi_config(slots=5, real_time_check=True))
    engine.load()
    with pytest.raises(EngineLoadError) as caught:
        engine.warmup()
    message = str(caught.value)
    assert "slots = 5: a step takes p99 105.0 ms" in message and "set slots = 3" in message
    engine.close()


def test_real_warmup_measures_and_reports(moshi_config: Callable[..., Config]) -> None:
    engine = MoshiEngine(
        moshi_config(step_budget_ms=80, real_time_check=True).with_bridge(max_concurrent_calls=2)
    )
    engine.load()
    try:
        engine.warmup()
    except EngineLoadError as exc:  # a machine too loaded for even one tiny slot: say so
        assert "step_budget_ms" in str(exc)
        return
    assert engine.sizing is not None and engine.sizing.table
    assert all(t.steps == 4 for t in engine.sizing.table)  # tiny_moshi's warmup_steps
    assert engine.info().details["slots"] == engine.capacity >= 1
    engine.close()


@pytest.mark.parametrize(
    ("key", "value", "named"), [("top_k", 65, "top_k = 65"), ("top_k_text", 500, "top_k_text")]
)
def test_sampling_beyond_the_cards_exits_78_naming_the_key(
    moshi_config: Callable[..., Config], key: str, value: int, named: str
) -> None:
    with pytest.raises(EngineLoadError, match=named):
        MoshiEngine(moshi_config(slots=1, **{key: value})).load()


def test_auto_serves_echo_only_when_moshi_is_absent(
    moshi_config: Callable[..., Config], tmp_path: Any
) -> None:
    assert choice(moshi_config()).engine == "moshi"
    absent = choice(moshi_config(moshi_weights=str(tmp_path / "none.safetensors")))
    assert absent.engine == "echo" and "no MOSHI weights" in absent.reason
    damaged = tmp_path / "bad.safetensors"
    damaged.write_bytes(b"not a checkpoint")
    bad = moshi_config(moshi_weights=str(damaged))
    assert choice(bad).engine == "moshi"  # present: a start loads it and exits 78 on failure
    with pytest.raises(EngineLoadError, match="not a readable safetensors"):
        MoshiEngine(bad).load()
    assert choice(moshi_config(device="tpu")).engine is None


def test_steps_failing_in_a_row_mark_the_engine_broken(
    moshi_engine: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = moshi_engine(1, max_failed_steps=3)
    engine.join(0)
    silence = {0: np.zeros(1920, dtype=np.float32)}

    def sticky(*_: Any) -> Any:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(engine._mimi, "encode", sticky)
    for _ in range(3):
        assert engine.broken is None
        with pytest.raises(RuntimeError):
            engine.step(silence)
    assert engine.broken and "3 MOSHI steps failed in a row" in engine.broken
    assert "illegal memory access" in engine.info().details["broken"]


def run_call(engine: Any, slot: int, audio: np.ndarray, steps: int, other: Any = None) -> Any:
    tokens, pcm, events = [], [], []
    for t in range(steps):
        frames = {slot: audio[t % len(audio)]}
        if other is not None:
            frames[other[0]] = other[1][t % len(other[1])]
        out = engine.step(frames)[slot]
        tokens.append(engine.last_tokens[slot].copy())
        pcm.append(out.pcm)
        events.append(out)
    return tokens, pcm, events


def test_a_call_twice_as_long_as_the_context(
    moshi_engine: Callable[..., Any], caller_audio: np.ndarray
) -> None:
    steps = 40  # context 16: the KV ring wraps twice and a half
    alone = moshi_engine(1, context=16)
    alone.join(0)
    solo_tokens, solo_pcm, solo_out = run_call(alone, 0, caller_audio[0], steps)
    pair = moshi_engine(2, context=16)
    pair.join(0)
    pair.join(1)
    tokens, pcm, _ = run_call(pair, 0, caller_audio[0], steps, (1, caller_audio[1]))
    for t in range(steps):
        np.testing.assert_array_equal(solo_tokens[t], tokens[t])
        if solo_pcm[t] is not None:
            assert np.isfinite(solo_pcm[t]).all()
            np.testing.assert_allclose(solo_pcm[t], pcm[t], atol=1e-5)
    exceeded = [t for t, out in enumerate(solo_out) if base.CONTEXT_EXCEEDED in out.events]
    assert exceeded == [16]
    # The other call is bit-identical to the same call next to a silent neighbour.
    quiet = moshi_engine(2, context=16)
    quiet.join(0)
    quiet.join(1)
    silent = np.zeros((1, 1920), dtype=np.float32)
    ref_tokens, ref_pcm, _ = run_call(quiet, 1, caller_audio[1], steps, (0, silent))
    pair2 = moshi_engine(2, context=16)
    pair2.join(0)
    pair2.join(1)
    got_tokens, got_pcm, _ = run_call(pair2, 1, caller_audio[1], steps, (0, caller_audio[0]))
    for t in range(steps):
        np.testing.assert_array_equal(ref_tokens[t], got_tokens[t])
        if ref_pcm[t] is None:
            assert got_pcm[t] is None
        else:
            np.testing.assert_array_equal(ref_pcm[t], got_pcm[t])


def test_max_call_seconds_ends_the_call_between_words(
    moshi_engine: Callable[..., Any], caller_audio: np.ndarray
) -> None:
    engine = moshi_engine(1, max_call_seconds=0.8)
    engine.join(0)
    _, _, outs = run_call(engine, 0, caller_audio[0], 40)
    ends = [t for t, out in enumerate(outs) if out.end_reason]
    assert ends and outs[ends[0]].end_reason == "max_duration"
    assert 9 <= ends[0] <= 9 + 25


def test_suggestion_events_cancel_and_word_pacing(
    moshi_engine: Callable[..., Any], caller_audio: np.ndarray
) -> None:
    engine = moshi_engine(1, min_word_gap_steps=2)
    engine.join(0)
    quiet = np.zeros((24, 1920), dtype=np.float32)
    assert engine.suggest(0, "see you soon").applied
    _, _, outs = run_call(engine, 0, quiet, 14)
    texts = [o.text for o in outs]
    events = [e for o in outs for e in o.events]
    assert events == [base.SUGGESTION_STARTED, base.SUGGESTION_FINISHED]
    first = next(t for t, o in enumerate(outs) if base.SUGGESTION_STARTED in o.events)
    assert engine.last_tokens is not None
    # EPAD (0) just before each word, and at least the gap of pads between words.
    assert texts[first] == " see"
    assert "".join(texts).count(" see you soon") == 1
    assert engine.suggest(0, "hello world thank you").applied
    assert engine.cancel(0) == 1
    _, _, outs = run_call(engine, 0, quiet, 8)
    assert not any(o.events for o in outs)


def test_a_caller_talking_over_a_suggestion_cancels_it(moshi_engine: Callable[..., Any]) -> None:
    engine = moshi_engine(1)
    engine.join(0)
    rng = np.random.default_rng(3)
    loud = rng.standard_normal((30, 1920)).astype(np.float32) * 0.2
    quiet = np.zeros((30, 1920), dtype=np.float32)
    assert engine.suggest(0, "hello world thank you for calling the voice bridge").applied
    _, _, outs = run_call(engine, 0, quiet, 4)
    _, _, outs2 = run_call(engine, 0, loud, 6)
    events = [e for o in outs + outs2 for e in o.events]
    assert base.SUGGESTION_STARTED in events and base.SUGGESTION_CANCELLED in events
    assert base.SUGGESTION_FINISHED not in events


def test_reconfigure_reaches_text_and_audio_sampling(
    moshi_engine: Callable[..., Any], moshi_config: Callable[..., Config], caller_audio: np.ndarray
) -> None:
    engine = moshi_engine(1, greedy=False, temperature=1.5, top_k=40)
    resets: list[int] = []

    def call() -> list[np.ndarray]:
        engine.join(0)
        state = engine._lm_gen._streaming_state
        original = state.graphed_depth.reset
        state.graphed_depth.reset = lambda *a: (resets.append(1), original(*a))
        tokens, _, _ = run_call(engine, 0, caller_audio[0], 8)
        return tokens

    call()
    engine.reconfigure(moshi_config(greedy=True))
    assert resets  # a captured depformer would sample with the new settings
    first, again = call(), call()
    # Greedy: the audio tokens (rows 1..8) are as deterministic as the text token.
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a[1:], b[1:])


def moshi_reference(config: Config, audio: np.ndarray) -> tuple[list[Any], list[np.ndarray]]:
    """moshi's own single-stream loop, as its server drives LMGen: streaming(1), None skipped."""
    import torch
    from moshi.models import LMGen, loaders

    from xswarm.engine import moshi_loader

    files = moshi_loader.resolve_files(config)
    kwargs = dict(files.lm_config or {})
    kwargs["context"] = config.moshi.context
    lm = loaders.get_moshi_lm(files.moshi_weights, lm_kwargs=kwargs, device="cpu")
    mimi = loaders.get_mimi(files.mimi_weights, files.mimi_config, device="cpu", num_codebooks=8)
    lm_gen = LMGen(lm, use_sampling=False)
    tokens, pcm = [], []
    with torch.no_grad(), lm_gen.streaming(1), mimi.streaming(1):
        for frame in audio:
            codes = mimi.encode(torch.from_numpy(frame)[None, None])
            out = lm_gen.step(codes)
            if out is None:
                continue
            tokens.append(out[0, :, 0].numpy().copy())
            pcm.append(mimi.decode(out[:, 1:])[0, 0].numpy().copy())
    return tokens, pcm


def test_same_tokens_and_pcm_as_moshis_own_loop_and_a_reused_slot_equals_a_fresh_one(
    moshi_engine: Callable[..., Any], moshi_config: Callable[..., Config], caller_audio: np.ndarray
) -> None:
    audio = caller_audio[3]
    ref_tokens, ref_pcm = moshi_reference(moshi_config(slots=1), audio)
    fresh = moshi_engine(1)
    fresh.join(0)
    tokens, pcm, _ = run_call(fresh, 0, audio, len(audio))
    assert pcm[0] is None  # moshi's loop skips this step (None)
    assert len(ref_tokens) == len(audio) - 1
    for t, (expected, got) in enumerate(zip(ref_tokens, tokens[1:], strict=True)):
        np.testing.assert_array_equal(expected, got, err_msg=f"step {t}")
        np.testing.assert_array_equal(ref_pcm[t], pcm[t + 1], err_msg=f"pcm step {t}")
    reused = moshi_engine(2)
    reused.join(0)
    reused.join(1)
    run_call(reused, 1, caller_audio[1], 9, (0, caller_audio[0]))  # an earlier call, a neighbour
    reused.join(1)
    again_tokens, again_pcm, _ = run_call(reused, 1, audio, len(audio))
    for t in range(len(audio)):
        np.testing.assert_array_equal(tokens[t], again_tokens[t])
        if pcm[t] is None:
            assert again_pcm[t] is None
        else:
            np.testing.assert_allclose(pcm[t], again_pcm[t], atol=1e-5)
