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

Suggestions are forced into one slot's text stream through LMGen's text-logits hook: the
slot's logits are replaced by a one-hot on the next suggested token, so the sampled token (and
everything the depformer conditions on it) follows the suggestion while the other rows of the
batch are not touched. Tokens are paced like the model's own words: one is forced when the
model itself wants to speak, or after ``MAX_PAD_STEPS`` steps of silence.

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

from xswarm.config import Config
from xswarm.engine import moshi_loader
from xswarm.engine.base import Engine, EngineInfo, SlotOutput, SuggestionResult
from xswarm.errors import EngineLoadError

log = logging.getLogger("xswarm.engine.moshi")

FRAME_SAMPLES = 1920
# Text ids moshi's server never shows: 0 (end of padding) and 3 (padding).
SILENT_TEXT_IDS = frozenset({0, 3})
MAX_PAD_STEPS = 3
MAX_SUGGESTION_TOKENS = 256
MAX_PENDING_TOKENS = 1024
WARMUP_STEPS = 4
STEP_TIMES_KEPT = 1000
_TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def probe(config: Config) -> str | None:
    """None when ``engine = "auto"`` can use MOSHI here, else the short reason it cannot.

    Checks what can be checked without allocating the model: the packages, the files (local
    or in the Hugging Face cache) and the device.
    """
    missing = moshi_loader.missing_modules()
    if missing:
        return missing
    try:
        moshi_loader.resolve_files(config)
        moshi_loader.check_device(config.moshi.device)
    except EngineLoadError as exc:
        return str(exc)
    return None


class _TextSteering:
    """Per-slot queues of forced text tokens, applied through LMGen's text-logits hook."""

    def __init__(self, capacity: int, pad_id: int) -> None:
        self.pad_id = pad_id
        self.pending: list[deque[int]] = [deque() for _ in range(capacity)]
        self.waited = [0] * capacity
        self.stepping: list[int] = []

    def clear(self, slot: int) -> None:
        self.pending[slot].clear()
        self.waited[slot] = 0

    def __call__(self, text_logits: Any) -> None:
        slots = [s for s in self.stepping if self.pending[s]]
        if not slots:
            return
        wanted = text_logits[slots, 0, 0].argmax(dim=-1).tolist()
        for slot, token in zip(slots, wanted, strict=True):
            if token == self.pad_id and self.waited[slot] < MAX_PAD_STEPS:
                self.waited[slot] += 1
                continue
            forced = self.pending[slot].popleft()
            self.waited[slot] = 0
            row = text_logits[slot, 0, 0]
            row.fill_(float("-inf"))
            row[forced] = 0.0


class MoshiEngine(Engine):
    name = "moshi"
    frame_samples = FRAME_SAMPLES
    runs_in_thread = True

    def __init__(self, config: Config) -> None:
        self.config = config
        # The settings the model was built with; reconfigure() replaces only the live ones.
        self.settings = config.moshi
        self.capacity = self.settings.slots or config.bridge.max_concurrent_calls
        self.dtype_name = self.settings.dtype
        self.device_name = self.settings.device
        self._in_use: set[int] = set()
        self._step_ms: deque[float] = deque(maxlen=STEP_TIMES_KEPT)
        self._steps = 0
        self._loaded = False
        self._torch: Any = None
        self._device: Any = None
        self._mimi: Any = None
        self._lm_gen: Any = None
        self._tokenizer: Any = None
        self._steering: _TextSteering | None = None
        self._text_card = 0
        self._graphs = False
        self._streams = ExitStack()
        # The last step's tokens, [capacity, 1 + dep_q] (text, then audio; -2: not generated),
        # kept for diagnostics and tests that compare token streams exactly.
        self.last_tokens: np.ndarray | None = None

    # ---------------------------------------------------------------- start-up

    def load(self) -> None:
        """Check files, device and memory fit first; only then allocate and load the model."""
        ready = moshi_loader.preflight(self.config, self.capacity)
        if self.dtype_name != "fp32" and ready.device.type == "cpu":
            log.warning("dtype %s on CPU is slow; fp32 is the usual choice there", self.dtype_name)
        self._build(ready.files, ready.device)

    def _build(self, files: moshi_loader.ModelFiles, device: Any) -> None:
        import sentencepiece
        import torch
        from moshi.models import loaders

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
        try:
            tokenizer = sentencepiece.SentencePieceProcessor(model_file=str(files.tokenizer))
        except Exception as exc:
            raise EngineLoadError(
                f"text tokenizer {files.tokenizer} is not a sentencepiece model "
                f"({_first_line(exc)}); fix [voice.moshi] tokenizer"
            ) from None
        if tokenizer.get_piece_size() < lm.text_card:
            raise EngineLoadError(
                f"text tokenizer {files.tokenizer} has {tokenizer.get_piece_size()} pieces but the "
                f"model's text card is {lm.text_card}; they are not a pair"
            )
        self.attach(lm, mimi, tokenizer, device)
        log.info(
            "MOSHI loaded on %s (%s): %d slots, context %d, weights %s",
            device,
            self.dtype_name,
            self.capacity,
            self.settings.context,
            files.moshi_weights,
        )

    def attach(self, lm: Any, mimi: Any, tokenizer: Any, device: Any) -> None:
        """Serve already-built modules: ``load`` ends here, and the benchmark's random 7B too.

        Streaming state lives in an ExitStack (not ``streaming_forever``) so that ``close``
        frees the KV caches and the model can back a new engine of another batch size.
        """
        import torch
        from moshi.models import LMGen

        self._torch = torch
        self._device = device
        if self.settings.cfg_coef != 1.0 and lm.fuser is None:
            raise EngineLoadError(moshi_loader.NO_CFG.format(self.settings.cfg_coef))
        steering = _TextSteering(self.capacity, lm.existing_text_padding_id)
        lm_gen = LMGen(
            lm,
            use_sampling=not self.settings.greedy,
            temp=self.settings.temperature,
            temp_text=self.settings.temperature_text,
            top_k=self.settings.top_k,
            top_k_text=self.settings.top_k_text,
            cfg_coef=self.settings.cfg_coef,
            on_text_logits_hook=steering,
            support_out_of_sync=True,
        )
        self._streams = ExitStack()
        self._streams.enter_context(mimi.streaming(self.capacity))
        self._streams.enter_context(lm_gen.streaming(self.capacity))
        idle = torch.zeros(self.capacity, dtype=torch.bool, device=device)
        mimi.set_exec_mask(idle)
        lm_gen.set_exec_mask(idle)
        self._mimi, self._lm_gen, self._tokenizer = mimi, lm_gen, tokenizer
        self._steering = steering
        self._text_card = lm.text_card
        self._graphs = device.type == "cuda" and bool(self.settings.cuda_graphs)
        self._loaded = True

    def warmup(self) -> None:
        """Run full steps over every slot (capturing CUDA graphs on a GPU), then free them all."""
        self._require_loaded()
        silence = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        everyone = range(self.capacity)
        for slot in everyone:
            self.join(slot)
        for _ in range(WARMUP_STEPS):
            self.step(dict.fromkeys(everyone, silence))
        for slot in everyone:
            self.leave(slot)
        if self._device.type == "cuda":
            self._torch.cuda.synchronize(self._device)
        self._step_ms.clear()
        self._steps = 0

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
        pending = self._steering.pending[slot]
        if len(pending) + len(ids) > MAX_PENDING_TOKENS:
            return SuggestionResult(
                False, f"{len(pending)} suggested tokens are still being spoken"
            )
        pending.extend(ids)
        return SuggestionResult(True)

    # ---------------------------------------------------------------- the step

    def step(self, frames: Mapping[int, np.ndarray]) -> dict[int, SlotOutput]:
        self._require_loaded()
        if not frames:
            return {}
        torch = self._torch
        slots = sorted(frames)
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
        active_cpu = torch.zeros(self.capacity, dtype=torch.bool)
        active_cpu[slots] = True
        assert self._steering is not None
        self._steering.stepping = slots
        started = time.perf_counter()
        with torch.no_grad(), self._graph_mode():
            active = active_cpu.to(self._device)
            self._mimi.set_exec_mask(active)
            self._lm_gen.set_exec_mask(active)
            codes = self._mimi.encode(torch.from_numpy(batch).to(self._device))
            tokens = self._lm_gen.step(codes)
            audio_tokens = tokens[:, 1:]
            ready = active & (audio_tokens >= 0).all(dim=2).all(dim=1)
            self._mimi.set_exec_mask(ready)
            pcm_out = self._mimi.decode(audio_tokens.clamp(min=0))
            all_tokens = tokens[:, :, 0].cpu()
            ready_cpu = ready.cpu()
            pcm_cpu = pcm_out[:, 0].float().cpu().numpy()
        self._steering.stepping = []
        self.last_tokens = all_tokens.numpy()
        self._step_ms.append((time.perf_counter() - started) * 1000)
        self._steps += 1
        out: dict[int, SlotOutput] = {}
        for slot in slots:
            reply = pcm_cpu[slot].copy() if bool(ready_cpu[slot]) else None
            out[slot] = SlotOutput(reply, self._piece(int(all_tokens[slot, 0])))
        return out

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
        """Live reload of the sampling keys ([voice.moshi] temperature*, top_k*, greedy).

        LMGen reads them as plain attributes at each step, so assigning them is safe from the
        event loop while a step runs: at worst that one step samples with the old values.
        """
        new = config.moshi
        self.settings = settings = dataclasses.replace(
            self.settings,
            temperature=new.temperature,
            temperature_text=new.temperature_text,
            top_k=new.top_k,
            top_k_text=new.top_k_text,
            greedy=new.greedy,
        )
        lm_gen = self._lm_gen
        if lm_gen is None:
            return
        lm_gen.temp = settings.temperature
        lm_gen.temp_text = settings.temperature_text
        lm_gen.top_k = settings.top_k
        lm_gen.top_k_text = settings.top_k_text
        lm_gen.use_sampling = not settings.greedy

    # ---------------------------------------------------------------- reporting

    def info(self) -> EngineInfo:
        """Safe to call from the event loop while a step runs in the engine thread."""
        # tuple() copies the deque in one C call under the GIL; iterating it could race append.
        times = np.asarray(tuple(self._step_ms), dtype=np.float64)
        details: dict[str, Any] = {
            "slots_in_use": len(tuple(self._in_use)),
            "step_ms_p50": round(float(np.percentile(times, 50)), 2) if times.size else None,
            "step_ms_p99": round(float(np.percentile(times, 99)), 2) if times.size else None,
            "steps": self._steps,
            "device": str(self._device) if self._device is not None else self.device_name,
            "dtype": self.dtype_name,
            "context": self.settings.context,
            "cuda_graphs": self._graphs,
            "sampling": "greedy"
            if self.settings.greedy
            else f"temperature {self.settings.temperature} top_k {self.settings.top_k}",
        }
        return EngineInfo(self.name, self.frame_seconds * 1000, self.capacity, details)

    def close(self) -> None:
        self._streams.close()
        self._mimi = self._lm_gen = self._tokenizer = self._steering = None
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
