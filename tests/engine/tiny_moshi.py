"""A tiny, random-initialised MOSHI written to real files, for tests on a machine without a GPU.

It is built from moshi's own classes (Mimi, LMModel) with the real stream layout (8 user + 8
Moshi codebooks, the 7B's delays), so it runs the same streaming code as Kyutai's weights, only
small enough to step in milliseconds on one CPU core. The files are what an operator would
point ``[voice.moshi]`` at: safetensors for the LM and Mimi, the LM config JSON (moshi's own
``lm_config`` format, with ``mimi_config_name`` naming the Mimi config next to it) and a
sentencepiece model trained here on a generated corpus, whose vocabulary is the LM's text card.

Use ``build_tiny_moshi(directory)``; it returns the ``[voice.moshi]`` lines as a dict, and
``tiny_moshi_toml(directory)`` returns them as TOML text ready to paste into a test config.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

TEXT_PAD_ID = 3
MIMI_BINS = 64
SEED = 1234

# Words the tokenizer is trained on; tests steer calls with phrases made of them.
_WORDS = (
    "hello world thank you for calling the voice bridge how can i help today please hold "
    "while we check your order number the weather is sunny and warm goodbye see you soon "
    "yes no maybe later tomorrow morning afternoon evening night coffee tea water music"
).split()


def tiny_mimi_config() -> dict[str, Any]:
    """A Mimi with the real 24 kHz / 12.5 Hz framing (hop 1920) and tiny layers."""
    seanet = {
        "channels": 1,
        "dimension": 32,
        "causal": True,
        "n_filters": 4,
        "n_residual_layers": 1,
        "activation": "ELU",
        "compress": 2,
        "dilation_base": 2,
        "disable_norm_outer_blocks": 0,
        "kernel_size": 7,
        "residual_kernel_size": 3,
        "last_kernel_size": 3,
        "norm": "none",
        "pad_mode": "constant",
        "ratios": [8, 6, 5, 4],
        "true_skip": True,
    }
    return {
        "sample_rate": 24000,
        "channels": 1,
        "frame_rate": 12.5,
        "seanet": seanet,
        "quantizer": {
            "dimension": 16,
            "n_q": 8,
            "bins": MIMI_BINS,
            "input_dimension": 32,
            "output_dimension": 32,
        },
        "transformer": {
            "d_model": 32,
            "num_heads": 2,
            "num_layers": 1,
            "causal": True,
            "layer_scale": 0.01,
            "context": 16,
            "conv_layout": True,
            "max_period": 10000,
            "gating": "none",
            "norm": "layer_norm",
            "positional_embedding": "rope",
            "dim_feedforward": 64,
            "input_dimension": 32,
            "output_dimensions": [32],
        },
    }


def tiny_lm_kwargs(text_card: int) -> dict[str, Any]:
    """LM kwargs in moshi's ``lm_config`` format: the 7B's streams and delays, tiny widths."""
    return {
        "dim": 64,
        "text_card": text_card,
        "existing_text_padding_id": TEXT_PAD_ID,
        "n_q": 16,
        "dep_q": 8,
        "card": MIMI_BINS,
        "num_heads": 4,
        "num_layers": 2,
        "hidden_scale": 2,
        "causal": True,
        "layer_scale": None,
        "context": 64,
        "max_period": 10000,
        "gating": "silu",
        "norm": "rms_norm_f32",
        "positional_embedding": "rope",
        "depformer_dim": 32,
        "depformer_dim_feedforward": 64,
        "depformer_num_heads": 2,
        "depformer_num_layers": 2,
        "depformer_layer_scale": None,
        "depformer_multi_linear": True,
        "depformer_context": 8,
        "depformer_max_period": 10000,
        "depformer_gating": "silu",
        "depformer_pos_emb": "none",
        "depformer_weights_per_step": True,
        "delays": [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1],
    }


def train_tiny_tokenizer(directory: Path) -> Path:
    """Train a sentencepiece model on generated sentences; id 3 is the pad, as in Kyutai's."""
    import sentencepiece

    rng = random.Random(SEED)
    corpus = directory / "corpus.txt"
    lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 12))) for _ in range(2000)]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    prefix = directory / "tokenizer"
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        vocab_size=120,
        model_type="unigram",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=TEXT_PAD_ID,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    corpus.unlink()
    return prefix.with_suffix(".model")


def build_tiny_moshi(directory: str | Path) -> dict[str, Any]:
    """Write a tiny MOSHI into ``directory``; return the ``[voice.moshi]`` keys that load it.

    The returned dict holds moshi_weights, mimi_weights, tokenizer and config (absolute paths),
    plus device "cpu", dtype "fp32" and greedy decoding, so that outputs are deterministic.
    """
    import sentencepiece
    import torch
    from moshi.models import loaders
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer_path = train_tiny_tokenizer(directory)
    text_card = sentencepiece.SentencePieceProcessor(
        model_file=str(tokenizer_path)
    ).get_piece_size()

    torch.manual_seed(SEED)
    mimi_config = tiny_mimi_config()
    mimi = loaders.get_mimi(None, mimi_config, device="cpu", num_codebooks=8)
    # Untrained codebooks are all zero, so every frame would encode to code 0: give them values.
    for name, buffer in mimi.named_buffers():
        if name.endswith("embedding_sum"):
            buffer.copy_(torch.randn_like(buffer))
    mimi_state = {k: v.contiguous() for k, v in mimi.state_dict().items()}
    mimi_path = directory / "mimi.safetensors"
    save_file(mimi_state, str(mimi_path))

    lm_kwargs = tiny_lm_kwargs(text_card)
    lm = loaders.get_moshi_lm(None, lm_kwargs=lm_kwargs, device="cpu", dtype=torch.float32)
    lm_path = directory / "model.safetensors"
    save_file({k: v.contiguous() for k, v in lm.state_dict().items()}, str(lm_path))

    (directory / "mimi_config.json").write_text(json.dumps(mimi_config, indent=1))
    config_path = directory / "config.json"
    config_path.write_text(
        json.dumps({**lm_kwargs, "mimi_config_name": "mimi_config.json"}, indent=1)
    )
    return {
        "moshi_weights": str(lm_path),
        "mimi_weights": str(mimi_path),
        "tokenizer": str(tokenizer_path),
        "config": str(config_path),
        # benchmarks/gpu_check.sh runs these tests on a GPU (CUDA graphs on) through this.
        "device": os.environ.get("XSWARM_TEST_MOSHI_DEVICE", "cpu"),
        "dtype": "fp32",
        "greedy": True,
        # Few warm-up steps, and step times not enforced: on a shared CPU they say nothing
        # about the code, so a test must not pass or fail by them (sizing tests inject times).
        "warmup_steps": 4,
        "real_time_check": False,
        # The tiny model has 64 audio tokens: Kyutai's top_k = 250 would be refused at start.
        "top_k": 50,
    }


def tiny_moshi_toml(lines: dict[str, Any], **extra: Any) -> str:
    """The ``[voice.moshi]`` table for ``lines`` (from build_tiny_moshi) plus ``extra`` keys."""
    out = ["[voice.moshi]"]
    for key, value in {**lines, **extra}.items():
        if isinstance(value, bool):
            out.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            out.append(f"{key} = {value!r}")
        else:
            out.append(f"{key} = {json.dumps(str(value))}")
    return "\n".join(out) + "\n"
