"""The MOSHI engine: every active call advanced in ONE batched step every 80 ms.

Kyutai's own Python server serves one conversation per process behind a lock. Here the model
streams a fixed batch of ``capacity`` slots for its whole life (``streaming(B)``); a
call owns a slot. One step is one batched ``mimi.encode`` -> ``LMGen.step`` -> ``mimi.decode``
over all slots, with exec masks so that slots without a frame this tick (idle, paused, free)
keep their state exactly as it was. Joining resets only that slot's caches (``reset_mask``).
This needs ``LMGen(support_out_of_sync=True)``: without it one reset makes the whole batch
return nothing for a step. A freshly reset slot yields ungenerated (-2) audio tokens for its
first step: they are clamped for the batched decode, and the slot's decoder is masked for that
step so that its output starts from real tokens.

Suggestions are forced into one slot's text stream through LMGen's text-logits hook (see
``_TextSteering``): the slot's logits become a one-hot on the token to force, so the sampled
token (and everything the depformer conditions on it) follows the suggestion while the other
rows of the batch are not touched. Words are paced like the model's own.

Start-up sizes the batch (``warmup``): a step costs the same for a masked slot as for a live
one, so the capacity is what both memory and the step budget allow, measured, not assumed.

torch is imported only by ``load`` (and ``probe`` checks for it without importing it), so the
bridge and the CLI start fast on machines that serve echo.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Mapping
from contextlib import AbstractContextManager, ExitStack, nullcontext
from typing import Any

import numpy as np

from xswarm.audio.levels import SpeechDetector
from xswarm.config import Config
from xswarm.engine import moshi_loader, random_model
from xswarm.engine.base import (
    CONTEXT_EXCEEDED,
    SUGGESTION_CANCELLED,
    SUGGESTION_FINISHED,
    SUGGESTION_STARTED,
    Engine,
    EngineInfo,
    SlotOutput,
    SuggestionResult,
)
from xswarm.engine.sizing import Sizing, StepTimes, largest_within
from xswarm.errors import EngineLoadError

log = logging.getLogger("xswarm.engine.moshi")

FRAME_SAMPLES = 1920
# Text ids moshi's server never shows: 0 (end of padding) and 3 (padding).
SILENT_TEXT_IDS = frozenset({0, 3})
EPAD_ID = 0
# Steps a suggested word waits for the model's own EPAD before one is forced.
MAX_PAD_STEPS = 2
MAX_SUGGESTION_TOKENS = 256
MAX_PENDING_TOKENS = 1024
# Steps timed at warm-up but not counted: the first capture CUDA graphs.
WARMUP_UNTIMED_STEPS = 3
# Steps a call past max_call_seconds may still run while waiting for a pause between words.
END_GRACE_STEPS = 25
# Steps (240 ms) a caller must talk over a suggestion being spoken to cancel it.
BARGE_IN_STEPS = 3
STEP_TIMES_KEPT = 1000
_TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def probe(config: Config) -> str | None:
    """None when MOSHI can run here, else why it cannot (``engine = "auto"`` then serves echo).

    Checks what can be checked without allocating the model: the packages, the files (local
    or in the Hugging Face cache) and the device. Only their absence is answered; a file or
    setting that is present but wrong raises EngineLoadError, for start-up to exit 78.
    """
    missing = moshi_loader.missing_modules()
    if missing:
        return missing
    try:
        moshi_loader.resolve_files(config)
        moshi_loader.check_device(config.moshi.device)
    except moshi_loader.ModelAbsent as exc:
        return str(exc)
    return None


class _TextSteering:
    """Per-slot queues of forced text tokens, kept on the device and applied in the step.

    Applied through LMGen's text-logits hook, with tensor operations only: nothing in the
    step waits for the host. A word is spoken the way the model's own words are: a few PADs
    (at least ``min_gap`` after the previous word), then the EPAD that announces a word (the
    model's own, or forced when it keeps padding or wants to say its own words), then the
    word's pieces back to back. The host reads each slot's queue head once per step, in the
    same copy as the step's tokens, to tell when a suggestion starts and finishes.
    """

    def __init__(self, torch: Any, capacity: int, device: Any, pad_id: int, epad_id: int) -> None:
        self.torch = torch
        self.pad_id, self.epad_id = pad_id, epad_id
        self.min_gap = 0
        self.tokens = torch.zeros((capacity, MAX_PENDING_TOKENS), dtype=torch.long, device=device)
        self.starts = torch.zeros((capacity, MAX_PENDING_TOKENS), dtype=torch.bool, device=device)
        self.head = torch.zeros(capacity, dtype=torch.long, device=device)
        self.tail = torch.zeros(capacity, dtype=torch.long, device=device)
        self.gap = torch.zeros(capacity, dtype=torch.long, device=device)
        self.armed = torch.zeros(capacity, dtype=torch.bool, device=device)
        self.waited = torch.zeros(capacity, dtype=torch.long, device=device)
        self.rows = torch.arange(capacity, device=device)
        self.active = torch.zeros(capacity, dtype=torch.bool, device=device)
        # Host mirrors, exact between steps: read back with the step's tokens.
        self.head_host = [0] * capacity
        self.tail_host = [0] * capacity
        # Per slot, the [start, end) queue positions of each suggestion not yet finished.
        self.spans: list[deque[list[int]]] = [deque() for _ in range(capacity)]
        self.started: list[set[int]] = [set() for _ in range(capacity)]

    def pending(self, slot: int) -> int:
        return self.tail_host[slot] - self.head_host[slot]

    def any_pending(self) -> bool:
        return any(t > h for t, h in zip(self.tail_host, self.head_host, strict=True))

    def clear(self, slot: int) -> int:
        """Forget the slot's queue; returns how many suggestions were not finished.

        Positions are absolute (the rows are rings), so the head jumps to the tail instead of
        going back to 0: a head read a step ago still means what it meant.
        """
        dropped = len(self.spans[slot])
        self.head[slot] = self.tail_host[slot]
        self.gap[slot] = 0
        self.armed[slot] = False
        self.waited[slot] = 0
        self.head_host[slot] = self.tail_host[slot]
        self.spans[slot].clear()
        self.started[slot].clear()
        return dropped

    def push(self, slot: int, ids: list[int], word_starts: list[bool]) -> None:
        """Append one suggestion at the tail of the slot's ring."""
        torch = self.torch
        tail = self.tail_host[slot]
        device = self.tokens.device
        at = torch.arange(tail, tail + len(ids), device=device) % MAX_PENDING_TOKENS
        self.tokens[slot, at] = torch.tensor(ids, dtype=torch.long, device=device)
        self.starts[slot, at] = torch.tensor(word_starts, device=device)
        self.spans[slot].append([tail, tail + len(ids)])
        self.tail[slot] = tail + len(ids)
        self.tail_host[slot] = tail + len(ids)

    def __call__(self, text_logits: Any) -> None:
        torch = self.torch
        logits = text_logits[:, 0, 0]
        has = self.active & (self.head < self.tail)
        at = self.head % MAX_PENDING_TOKENS
        upcoming = self.tokens[self.rows, at]
        is_start = self.starts[self.rows, at]
        wanted = logits.argmax(dim=-1)
        word = has & (~is_start | self.armed)
        waiting = has & is_start & ~self.armed
        in_gap = waiting & (self.gap > 0)
        asking = waiting & (self.gap <= 0)
        model_padding = wanted == self.pad_id
        self.waited = torch.where(asking & model_padding, self.waited + 1, self.waited)
        announce = asking & (~model_padding | (self.waited > MAX_PAD_STEPS))
        forced = torch.where(word, upcoming, torch.where(announce, self.epad_id, self.pad_id))
        force = word | announce | in_gap
        one_hot = torch.full_like(logits, float("-inf")).scatter_(1, forced[:, None], 0.0)
        logits.copy_(torch.where(force[:, None], one_hot, logits))
        self.gap = torch.where(in_gap, self.gap - 1, self.gap)
        self.armed = (self.armed & ~word) | announce
        self.waited = torch.where(announce | word, 0, self.waited)
        head = torch.where(word, self.head + 1, self.head)
        next_start = self.starts[self.rows, head % MAX_PENDING_TOKENS]
        word_done = word & ((head >= self.tail) | next_start)
        self.gap = torch.where(word_done, self.min_gap, self.gap)
        self.head = head

    def progress(self, slot: int, head: int) -> list[str]:
        """Events of the slot's suggestions, now that its queue head is ``head``."""
        self.head_host[slot] = head
        events = []
        for span in list(self.spans[slot]):
            start, end = span
            if head > start and start not in self.started[slot]:
                self.started[slot].add(start)
                events.append(SUGGESTION_STARTED)
            if head >= end:
                self.spans[slot].popleft()
                self.started[slot].discard(start)
                events.append(SUGGESTION_FINISHED)
        return events


class MoshiEngine(Engine):
    name = "moshi"
    frame_samples = FRAME_SAMPLES
    runs_in_thread = True

    def __init__(self, config: Config) -> None:
        self.config = config
        # The settings the model was built with; reconfigure() replaces only the live ones.
        self.settings = config.moshi
        # slots = 0: load() sets the memory fit and warmup() the measured batch.
        self.requested_slots = self.settings.slots
        self.capacity = self.settings.slots or config.bridge.max_concurrent_calls
        self.dtype_name = self.settings.dtype
        self.device_name = self.settings.device
        self._in_use: set[int] = set()
        self._step_ms: deque[float] = deque(maxlen=STEP_TIMES_KEPT)
        self._steps = 0
        self._failed_in_a_row = 0
        self._loaded = False
        self._torch: Any = None
        self._device: Any = None
        self._gpu: str | None = None
        self._lm: Any = None
        self._mimi: Any = None
        self._lm_gen: Any = None
        self._tokenizer: Any = None
        self._steering: _TextSteering | None = None
        self._text_card = 0
        self._graphs = False
        self._streams = ExitStack()
        self._slot_steps: list[int] = []
        self._ending: dict[int, int] = {}
        self._voices: list[SpeechDetector] = []
        self._speech_since: dict[int, int] = {}
        self._heads: list[deque[int]] = []
        self._suggestion_since: dict[int, int] = {}
        self.sizing: Sizing | None = None
        self.sized_by = "configured" if self.requested_slots else "memory"
        self.memory_fit = 0
        # Untrained weights (``random_weights``): said in info() so that no one mistakes them.
        self.random_weights = False
        # The last step's tokens, [capacity, 1 + dep_q] (text, then audio; -2: not generated),
        # kept for diagnostics and tests that compare token streams exactly.
        self.last_tokens: np.ndarray | None = None

    # ---------------------------------------------------------------- start-up

    def load(self) -> None:
        """Check files, device and memory fit first; only then allocate and load the model."""
        ready = moshi_loader.preflight(self.config, self.requested_slots or 1)
        self.memory_fit = ready.plan.slots_that_fit(ready.free_bytes)
        if not self.requested_slots:
            self.capacity = min(self.config.bridge.max_concurrent_calls, self.memory_fit)
        if self.dtype_name != "fp32" and ready.device.type == "cpu":
            log.warning("dtype %s on CPU is slow; fp32 is the usual choice there", self.dtype_name)
        self._build(ready.files, ready.device)

    def _build(self, files: moshi_loader.ModelFiles, device: Any) -> None:
        """Load the files, or with ``random_weights`` build untrained modules on the device."""
        import torch
        from moshi.models import loaders

        if files.random:
            log.warning("%s", random_model.WARNING)
        dtype = getattr(torch, _TORCH_DTYPES[self.dtype_name])
        lm_kwargs = dict(files.lm_config or loaders._lm_kwargs)
        lm_kwargs["context"] = self.settings.context
        try:
            lm = loaders.get_moshi_lm(
                files.moshi_weights, lm_kwargs=lm_kwargs, device=device, dtype=dtype
            )
        except Exception as exc:  # a wrong checkpoint surfaces as many different errors
            raise EngineLoadError(
                f"MOSHI weights {files.moshi_weights} do not fit the model config "
                f"({_first_line(exc)}); check [voice.moshi] config and moshi_weights"
            ) from None
        num_codebooks = max(lm.dep_q, lm.n_q - lm.dep_q)
        try:
            mimi = loaders.get_mimi(
                files.mimi_weights, files.mimi_config, device=device, num_codebooks=num_codebooks
            )
        except Exception as exc:
            raise EngineLoadError(
                f"Mimi weights {files.mimi_weights} do not fit the Mimi config "
                f"({_first_line(exc)}); check [voice.moshi] mimi_weights and config"
            ) from None
        if mimi.sample_rate != self.sample_rate or mimi.frame_size != FRAME_SAMPLES:
            raise EngineLoadError(
                f"Mimi at {files.mimi_weights} runs {mimi.sample_rate} Hz frames of "
                f"{mimi.frame_size} samples; this engine needs 24000 Hz and {FRAME_SAMPLES}"
            )
        if files.random:
            random_model.fill_codebooks(mimi)
        if files.tokenizer is None:
            tokenizer: Any = random_model.HashedTokenizer(lm.text_card)
        else:
            tokenizer = _sentencepiece(files.tokenizer, lm.text_card)
        self.attach(lm, mimi, tokenizer, device)
        self.random_weights = files.random
        log.info(
            "MOSHI loaded on %s (%s): up to %d slots (memory fits %d), context %d, weights %s",
            device,
            self.dtype_name,
            self.capacity,
            self.memory_fit,
            self.settings.context,
            "RANDOM (untrained)" if files.random else files.moshi_weights,
        )

    def attach(self, lm: Any, mimi: Any, tokenizer: Any, device: Any) -> None:
        """Serve already-built modules: ``load`` ends here, and the benchmark's random 7B too.

        Settings the model cannot honour fail here, at start, naming the key: never per step.
        """
        import torch
        from moshi.models import LMGen

        self._torch = torch
        self._device = device
        if device.type == "cuda":
            # What names no device (a library's scratch, the graph pool) lands on this GPU,
            # not on cuda:0, which another instance may own.
            torch.cuda.set_device(device)
            self._gpu = gpu_identity(torch, device)
        if self.settings.cfg_coef != 1.0 and lm.fuser is None:
            raise EngineLoadError(moshi_loader.NO_CFG.format(self.settings.cfg_coef))
        problem = _sampling_problem(self.settings, lm)
        if problem:
            raise EngineLoadError(problem)
        lm_gen = LMGen(
            lm,
            use_sampling=not self.settings.greedy,
            temp=self.settings.temperature,
            temp_text=self.settings.temperature_text,
            top_k=self.settings.top_k,
            top_k_text=self.settings.top_k_text,
            cfg_coef=self.settings.cfg_coef,
            support_out_of_sync=True,
        )
        self._lm, self._mimi, self._lm_gen, self._tokenizer = lm, mimi, lm_gen, tokenizer
        self._text_card = lm.text_card
        self._graphs = device.type == "cuda" and bool(self.settings.cuda_graphs)
        self._stream(self.capacity)
        self._loaded = True

    def _stream(self, slots: int) -> None:
        """(Re)start streaming over ``slots`` slots, all free.

        Streaming state lives in an ExitStack (not ``streaming_forever``) so that warm-up can
        try several batch sizes and ``close`` frees the KV caches.
        """
        torch = self._torch
        self._streams.close()
        self.capacity = slots
        steering = _TextSteering(
            torch,
            slots,
            self._device,
            self._lm.existing_text_padding_id,
            getattr(self._lm, "existing_text_end_padding_id", EPAD_ID),
        )
        steering.min_gap = self.settings.min_word_gap_steps
        self._lm_gen.on_text_logits_hook = steering
        self._streams = ExitStack()
        self._streams.enter_context(self._mimi.streaming(slots))
        self._streams.enter_context(self._lm_gen.streaming(slots))
        idle = torch.zeros(slots, dtype=torch.bool, device=self._device)
        self._mimi.set_exec_mask(idle)
        self._lm_gen.set_exec_mask(idle)
        self._steering = steering
        self._in_use.clear()
        self._slot_steps = [0] * slots
        self._ending.clear()
        self._voices = [SpeechDetector(self.sample_rate) for _ in range(slots)]
        self._heads = [deque(maxlen=self._lm_gen.max_delay + 1) for _ in range(slots)]

    def warmup(self) -> None:
        """Time full steps over every slot (capturing CUDA graphs on a GPU), then free them.

        With ``slots = 0`` several batch sizes are timed and the largest whose step p99 stays
        within ``step_budget_ms`` becomes the capacity. A configured ``slots`` whose p99
        exceeds the frame stops start-up, naming the largest batch that would keep up.
        """
        self._require_loaded()
        frame_ms = self.frame_seconds * 1000
        if not self.settings.real_time_check:
            times = self._time_steps(self.capacity)
            log.warning(
                "warm-up: %s; [voice.moshi] real_time_check = false: not enforced",
                times.line(frame_ms),
            )
            self.sizing = Sizing(self.capacity, frame_ms, (times,))
            self.sized_by = "memory"
        elif self.requested_slots:
            times = self._time_steps(self.capacity)
            log.info("warm-up: %s", times.line(frame_ms))
            self.sizing = Sizing(self.capacity, frame_ms, (times,))
            if times.p99_ms > frame_ms:
                below = largest_within(self.capacity - 1, frame_ms, self._time_steps)
                self._log_table(below)
                raise EngineLoadError(
                    f"[voice.moshi] slots = {self.capacity}: a step takes p99 "
                    f"{times.p99_ms:.1f} ms, over the {frame_ms:g} ms frame, so every call would "
                    f"be late; {below.slots} slots keep up here: set slots = {below.slots} "
                    "(or 0 to size automatically)"
                )
        else:
            budget = self.settings.step_budget_ms
            sizing = largest_within(self.capacity, budget, self._time_steps)
            self._log_table(sizing)
            if sizing.slots == 0:
                first = sizing.table[-1] if sizing.table else None
                measured = f"{first.p99_ms:.1f} ms" if first else "unmeasured"
                raise EngineLoadError(
                    f"one MOSHI slot already takes p99 {measured} a step, over "
                    f"[voice.moshi] step_budget_ms = {budget:g}; use a faster device, or raise "
                    "step_budget_ms (at most 80)"
                )
            self.sizing = sizing
            self.sized_by = "memory" if sizing.slots == self.capacity else "step budget"
            if sizing.slots != self.capacity or sizing.table[-1].slots != sizing.slots:
                self._stream(sizing.slots)
                self._time_steps(sizing.slots, steps=2)
        self._step_ms.clear()
        self._steps = 0
        chosen = self.sizing.chosen() if self.sizing else None
        log.info(
            "MOSHI ready: %d slots (%s), step p99 %.1f ms",
            self.capacity,
            self.sized_by,
            chosen.p99_ms if chosen else 0.0,
        )

    def _log_table(self, sizing: Sizing) -> None:
        for times in sizing.table:
            log.info("warm-up: %s", times.line(sizing.budget_ms))
        log.info("warm-up: %d slots keep step p99 within %g ms", sizing.slots, sizing.budget_ms)

    def _time_steps(self, slots: int, steps: int | None = None) -> StepTimes:
        """Stream ``slots`` slots, step them all ``steps`` times with quiet noise, free them."""
        if slots != self.capacity:
            self._stream(slots)
        count = self.settings.warmup_steps if steps is None else steps
        rng = np.random.default_rng(0)
        voice = rng.standard_normal(FRAME_SAMPLES).astype(np.float32) * 0.01
        everyone = range(slots)
        for slot in everyone:
            self.join(slot)
        times: list[float] = []
        # The first steps capture CUDA graphs and fill allocator pools: not counted.
        for index in range(WARMUP_UNTIMED_STEPS + count):
            started = time.perf_counter()
            self.step(dict.fromkeys(everyone, voice))
            if self._device.type == "cuda":
                self._torch.cuda.synchronize(self._device)
            if index >= WARMUP_UNTIMED_STEPS:
                times.append((time.perf_counter() - started) * 1000)
        for slot in everyone:
            self.leave(slot)
        values = np.asarray(times)
        return StepTimes(
            slots,
            float(np.percentile(values, 50)),
            float(np.percentile(values, 99)),
            len(times),
        )

    # ---------------------------------------------------------------- per call

    def join(self, slot: int) -> None:
        self._require_loaded()
        self._check_slot(slot)
        torch = self._torch
        mask = torch.zeros(self.capacity, dtype=torch.bool, device=self._device)
        mask[slot] = True
        self._lm_gen.reset_streaming(reset_mask=mask)
        self._mimi.reset_streaming(reset_mask=mask)
        assert self._steering is not None
        self._steering.clear(slot)
        self._slot_steps[slot] = 0
        self._ending.pop(slot, None)
        self._voices[slot] = SpeechDetector(self.sample_rate)
        self._speech_since.pop(slot, None)
        self._suggestion_since.pop(slot, None)
        self._heads[slot].clear()
        self._in_use.add(slot)

    def leave(self, slot: int) -> None:
        self._check_slot(slot)
        self._in_use.discard(slot)
        if self._steering is not None:
            self._steering.clear(slot)

    def suggest(self, slot: int, text: str) -> SuggestionResult:
        if not self._loaded or self._steering is None:
            return SuggestionResult(False, "the MOSHI engine is not loaded")
        if slot not in self._in_use:
            return SuggestionResult(False, "call is not in the engine")
        ids = [
            i
            for i in self._tokenizer.encode(text.strip(), out_type=int)
            if 0 <= i < self._text_card
        ]
        ids = [i for i in ids if i not in SILENT_TEXT_IDS and not self._tokenizer.is_unknown(i)]
        if not any(self._piece(i).strip() for i in ids):
            return SuggestionResult(False, "suggestion has no words the model's tokenizer knows")
        if len(ids) > MAX_SUGGESTION_TOKENS:
            return SuggestionResult(
                False, f"suggestion is {len(ids)} tokens; at most {MAX_SUGGESTION_TOKENS}"
            )
        pending = self._steering.pending(slot)
        if pending + len(ids) > MAX_PENDING_TOKENS:
            return SuggestionResult(False, f"{pending} suggested tokens are still being spoken")
        starts = [self._piece(i).startswith(" ") for i in ids]
        starts[0] = True
        self._steering.push(slot, ids, starts)
        return SuggestionResult(True)

    def cancel(self, slot: int) -> int:
        """Drop what the call in ``slot`` has not yet said of its suggestions."""
        if self._steering is None or not 0 <= slot < self.capacity:
            return 0
        self._suggestion_since.pop(slot, None)
        return self._steering.clear(slot)

    # ---------------------------------------------------------------- the step

    def step(self, frames: Mapping[int, np.ndarray]) -> dict[int, SlotOutput]:
        """One batched step; ``max_failed_steps`` failures in a row mark the engine broken."""
        self._require_loaded()
        if not frames:
            return {}
        slots = sorted(frames)
        batch = self._batch(frames, slots)
        try:
            out = self._step(batch, slots)
        except Exception as exc:
            self._failed_in_a_row += 1
            if self._failed_in_a_row >= self.settings.max_failed_steps:
                self.broken = (
                    f"{self._failed_in_a_row} MOSHI steps failed in a row, the last with "
                    f"{type(exc).__name__}: {_first_line(exc)}"
                )
            raise
        self._failed_in_a_row = 0
        return out

    def _batch(self, frames: Mapping[int, np.ndarray], slots: list[int]) -> np.ndarray:
        for slot in slots:
            if slot not in self._in_use:
                raise ValueError(f"slot {slot} has no call: join it before stepping it")
        batch = np.zeros((self.capacity, 1, FRAME_SAMPLES), dtype=np.float32)
        for slot in slots:
            pcm = np.asarray(frames[slot], dtype=np.float32)
            if pcm.shape != (FRAME_SAMPLES,):
                raise ValueError(
                    f"slot {slot}: expected {FRAME_SAMPLES} samples, got shape {pcm.shape}"
                )
            # A NaN or a wild sample must not poison the slot's caches for the rest of the call.
            batch[slot, 0] = np.clip(
                np.nan_to_num(pcm, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0
            )
        return batch

    def _step(self, batch: np.ndarray, slots: list[int]) -> dict[int, SlotOutput]:
        torch = self._torch
        steering = self._steering
        assert steering is not None
        barged = self._barge_ins(batch, slots)
        active_cpu = torch.zeros(self.capacity, dtype=torch.bool)
        active_cpu[slots] = True
        started = time.perf_counter()
        with torch.no_grad(), self._graph_mode():
            active = active_cpu.to(self._device)
            steering.active = active
            self._lm_gen.on_text_logits_hook = steering if steering.any_pending() else None
            self._mimi.set_exec_mask(active)
            self._lm_gen.set_exec_mask(active)
            codes = self._mimi.encode(torch.from_numpy(batch).to(self._device))
            tokens = self._lm_gen.step(codes)
            audio_tokens = tokens[:, 1:]
            ready = active & (audio_tokens >= 0).all(dim=2).all(dim=1)
            self._mimi.set_exec_mask(ready)
            pcm_out = self._mimi.decode(audio_tokens.clamp(min=0))
            # One copy to the host per step: tokens, readiness and each queue's head.
            summary = torch.cat(
                [tokens[:, :, 0], ready[:, None].long(), steering.head[:, None]], dim=1
            ).cpu()
            pcm_cpu = pcm_out[:, 0].float().cpu().numpy()
        self._step_ms.append((time.perf_counter() - started) * 1000)
        self._steps += 1
        table = summary.numpy()
        self.last_tokens = table[:, :-2]
        out: dict[int, SlotOutput] = {}
        for slot in slots:
            text_id = int(table[slot, 0])
            events = list(barged.get(slot, ()))
            # LMGen returns the text token sampled max_delay steps ago: so are the events.
            heads = self._heads[slot]
            heads.append(int(table[slot, -1]))
            if len(heads) == heads.maxlen:
                events += steering.progress(slot, heads[0])
            if SUGGESTION_STARTED in events:
                self._suggestion_since.setdefault(slot, self._slot_steps[slot])
            if not steering.spans[slot]:
                self._suggestion_since.pop(slot, None)
            self._slot_steps[slot] += 1
            if self._slot_steps[slot] == self.settings.context + 1:
                events.append(CONTEXT_EXCEEDED)
            reply = pcm_cpu[slot].copy() if table[slot, -2] else None
            out[slot] = SlotOutput(
                reply, self._piece(text_id), tuple(events), self._end_reason(slot, text_id)
            )
        return out

    def _barge_ins(self, batch: np.ndarray, slots: list[int]) -> dict[int, tuple[str, ...]]:
        """Clear the suggestions of callers who talk over one being spoken, if configured.

        A barge-in is speech that began after the suggestion started to be spoken and has
        lasted ``BARGE_IN_STEPS``: a caller already talking, or a click, cancels nothing.
        """
        steering = self._steering
        assert steering is not None
        barged: dict[int, tuple[str, ...]] = {}
        for slot in slots:
            voice = self._voices[slot]
            voice.feed(batch[slot, 0])
            step = self._slot_steps[slot]
            if not voice.speaking:
                self._speech_since.pop(slot, None)
                continue
            began = self._speech_since.setdefault(slot, step)
            spoken_since = self._suggestion_since.get(slot)
            if (
                self.settings.barge_in_cancels_suggestion
                and spoken_since is not None
                and began > spoken_since
                and step - began + 1 >= BARGE_IN_STEPS
            ):
                barged[slot] = (SUGGESTION_CANCELLED,) * steering.clear(slot)
                self._suggestion_since.pop(slot, None)
        return barged

    def _end_reason(self, slot: int, text_id: int) -> str | None:
        """``max_duration`` once the call passed ``max_call_seconds``, between words.

        The call ends at the first step the model is silent with nothing left to say, or
        after ``END_GRACE_STEPS`` more steps if it never pauses.
        """
        limit = self.settings.max_call_seconds
        if not limit or self._slot_steps[slot] * self.frame_seconds < limit:
            return None
        waited = self._ending.get(slot, 0)
        assert self._steering is not None
        between_words = text_id in SILENT_TEXT_IDS and not self._steering.pending(slot)
        if between_words or waited >= END_GRACE_STEPS:
            self._ending.pop(slot, None)
            self._slot_steps[slot] = 0
            return "max_duration"
        self._ending[slot] = waited + 1
        return None

    def _piece(self, token: int) -> str:
        if token < 0 or token in SILENT_TEXT_IDS or token >= self._tokenizer.get_piece_size():
            return ""
        if self._tokenizer.is_control(token) or self._tokenizer.is_unknown(token):
            return ""
        piece: str = self._tokenizer.id_to_piece(token)
        return piece.replace("\u2581", " ")

    def _graph_mode(self) -> AbstractContextManager[Any]:
        if self._device.type == "cuda" and not self._graphs:
            from moshi.utils.compile import no_cuda_graph

            return no_cuda_graph()
        return nullcontext()

    def reconfigure(self, config: Config) -> None:
        """Live reload of the sampling and steering keys, between steps (``EngineLoop``).

        LMGen reads the sampling values as plain attributes at each step, but with CUDA graphs
        the depformer (which samples the audio tokens) was captured with the values of its
        capture: its graph is reset, so the next step captures it again with the new ones.
        A top_k beyond the model's cards is refused (logged) and the old value kept.
        """
        new = config.moshi
        candidate = dataclasses.replace(
            self.settings,
            temperature=new.temperature,
            temperature_text=new.temperature_text,
            top_k=new.top_k,
            top_k_text=new.top_k_text,
            greedy=new.greedy,
            max_call_seconds=new.max_call_seconds,
            min_word_gap_steps=new.min_word_gap_steps,
            barge_in_cancels_suggestion=new.barge_in_cancels_suggestion,
        )
        problem = _sampling_problem(candidate, self._lm) if self._lm is not None else None
        if problem:
            log.error("reload: %s; keeping the sampling settings in use", problem)
            candidate = dataclasses.replace(
                candidate,
                temperature=self.settings.temperature,
                temperature_text=self.settings.temperature_text,
                top_k=self.settings.top_k,
                top_k_text=self.settings.top_k_text,
                greedy=self.settings.greedy,
            )
        self.settings = settings = candidate
        if self._steering is not None:
            self._steering.min_gap = settings.min_word_gap_steps
        lm_gen = self._lm_gen
        if lm_gen is None:
            return
        lm_gen.temp = settings.temperature
        lm_gen.temp_text = settings.temperature_text
        lm_gen.top_k = settings.top_k
        lm_gen.top_k_text = settings.top_k_text
        lm_gen.use_sampling = not settings.greedy
        graphed = getattr(getattr(lm_gen, "_streaming_state", None), "graphed_depth", None)
        if graphed is not None:
            graphed.reset()

    # ---------------------------------------------------------------- reporting

    def info(self) -> EngineInfo:
        """Safe to call from the event loop while a step runs in the engine thread."""
        # tuple() copies the deque in one C call under the GIL; iterating it could race append.
        times = np.asarray(tuple(self._step_ms), dtype=np.float64)
        chosen = self.sizing.chosen() if self.sizing is not None else None
        details: dict[str, Any] = {
            "slots": self.capacity,
            "slots_in_use": len(tuple(self._in_use)),
            "sized_by": self.sized_by,
            "memory_fit": self.memory_fit,
            "warmup_step_ms_p50": round(chosen.p50_ms, 2) if chosen else None,
            "warmup_step_ms_p99": round(chosen.p99_ms, 2) if chosen else None,
            "step_ms_p50": round(float(np.percentile(times, 50)), 2) if times.size else None,
            "step_ms_p99": round(float(np.percentile(times, 99)), 2) if times.size else None,
            "steps": self._steps,
            "device": str(self._device) if self._device is not None else self.device_name,
            "gpu": self._gpu,
            "dtype": self.dtype_name,
            "weights": "random" if self.random_weights else "trained",
            "context": self.settings.context,
            "cuda_graphs": self._graphs,
            "sampling": "greedy"
            if self.settings.greedy
            else f"temperature {self.settings.temperature} top_k {self.settings.top_k}",
        }
        if self.broken:
            details["broken"] = self.broken
        return EngineInfo(self.name, self.frame_seconds * 1000, self.capacity, details)

    def close(self) -> None:
        self._streams.close()
        self._lm = self._mimi = self._lm_gen = self._tokenizer = self._steering = None
        self._in_use.clear()
        self._loaded = False
        if self._device is not None and self._device.type == "cuda":
            self._torch.cuda.empty_cache()

    # ---------------------------------------------------------------- helpers

    def _require_loaded(self) -> None:
        if not self._loaded:
            raise RuntimeError("MoshiEngine.load() must run before the engine is used")

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.capacity:
            raise ValueError(f"slot {slot} is outside 0..{self.capacity - 1}")


def gpu_identity(torch: Any, device: Any) -> str:
    """The card behind ``device``: its model and PCI bus id. ``cuda:N`` counts only what
    CUDA_VISIBLE_DEVICES leaves visible; the bus id names the same card nvidia-smi does."""
    props = torch.cuda.get_device_properties(device)
    bus = [getattr(props, f"pci_{part}_id", None) for part in ("domain", "bus", "device")]
    if any(not isinstance(part, int) for part in bus):
        return str(props.name)
    return f"{props.name} at {bus[0]:04x}:{bus[1]:02x}:{bus[2]:02x}.0"


def _sampling_problem(settings: Any, lm: Any) -> str | None:
    """Why the sampling keys do not fit ``lm``: moshi quietly clamps a top-k past a card,
    which turns top-k sampling off altogether, so the operator hears about it instead."""
    if settings.top_k > lm.card:
        return (
            f"[voice.moshi] top_k = {settings.top_k} is more than the model's {lm.card} audio "
            f"tokens; set top_k to at most {lm.card}"
        )
    if settings.top_k_text > lm.text_card:
        return (
            f"[voice.moshi] top_k_text = {settings.top_k_text} is more than the model's "
            f"{lm.text_card} text tokens; set top_k_text to at most {lm.text_card}"
        )
    return None


def _sentencepiece(path: Any, text_card: int) -> Any:
    """The text tokenizer at ``path``, refused unless it names every text token of the LM."""
    import sentencepiece

    try:
        tokenizer = sentencepiece.SentencePieceProcessor(model_file=str(path))
    except Exception as exc:
        raise EngineLoadError(
            f"text tokenizer {path} is not a sentencepiece model "
            f"({_first_line(exc)}); fix [voice.moshi] tokenizer"
        ) from None
    if tokenizer.get_piece_size() < text_card:
        raise EngineLoadError(
            f"text tokenizer {path} has {tokenizer.get_piece_size()} pieces but the "
            f"model's text card is {text_card}; they are not a pair"
        )
    return tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
