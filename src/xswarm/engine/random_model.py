"""MOSHI with random, untrained weights at its real size: for speed measurement only.

No weights can be downloaded on a rented GPU box, yet the question ``make gpu-check`` answers
(how many real-time calls one card serves) depends only on the architecture: a step of
Kyutai's 7B costs the same arithmetic whatever its weights hold. ``[voice.moshi]
random_weights = true`` therefore builds the LM and Mimi from moshi's own config and classes,
initialised at random directly on the device (no files), and serves them like real weights.
Callers would hear noise, so the engine logs ``WARNING`` at load, reports ``weights: random``
in its info, and ``xswarm doctor`` fails on the key.

Kyutai's sentencepiece model is a downloaded file too; without one, ``HashedTokenizer`` stands
in: each word of a suggestion becomes one text id, so steering still runs its real path.
"""

from __future__ import annotations

import zlib
from typing import Any

WARNING = (
    "[voice.moshi] random_weights = true: MOSHI runs UNTRAINED RANDOM weights and callers "
    "hear noise; this is for speed measurement only (make gpu-check), never for calls: "
    "remove the key to serve the real model"
)
WORD_START = "\u2581"
# Kyutai's tokenizer: 0 is <unk> (the LM's EPAD), 1 and 2 begin and end, 3 pads.
_UNKNOWN_ID = 0
_FIRST_WORD_ID = 4


def parameter_counts(
    lm_kwargs: dict[str, Any], mimi_config: dict[str, Any] | None
) -> tuple[int, int]:
    """Values the LM and Mimi each hold (parameters and buffers), counted without allocating.

    The memory plan needs the weights' size before anything is built; a checkpoint's header
    gives it for real weights, a build on torch's meta device gives it here.
    """
    import torch
    from moshi.models import loaders

    meta = torch.device("meta")
    with meta:
        lm = loaders.get_moshi_lm(None, lm_kwargs=lm_kwargs, device=meta, dtype=torch.bfloat16)
        num_codebooks = max(lm.dep_q, lm.n_q - lm.dep_q)
        mimi = loaders.get_mimi(None, mimi_config, device=meta, num_codebooks=num_codebooks)
    lm_numel = sum(int(v.numel()) for v in lm.state_dict().values())
    return lm_numel, sum(int(v.numel()) for v in mimi.state_dict().values())


def fill_codebooks(mimi: Any) -> None:
    """Give Mimi's untrained codebooks values: all zero, every frame would encode to code 0."""
    import torch

    with torch.no_grad():
        for name, buffer in mimi.named_buffers():
            if name.endswith("embedding_sum"):
                buffer.copy_(torch.randn_like(buffer))


class HashedTokenizer:
    """The part of sentencepiece's interface the engine uses, over ``size`` made-up pieces.

    A word maps to one id chosen by its CRC, so a suggestion is forced word by word as with
    a real tokenizer; a generated id reads back as ``w<id>``.
    """

    def __init__(self, size: int) -> None:
        if size <= _FIRST_WORD_ID:
            raise ValueError(f"a text card of {size} leaves no ids for words")
        self.size = size

    def get_piece_size(self) -> int:
        return self.size

    def encode(self, text: str, out_type: type = int) -> list[int]:
        span = self.size - _FIRST_WORD_ID
        return [_FIRST_WORD_ID + zlib.crc32(word.lower().encode()) % span for word in text.split()]

    def is_unknown(self, token: int) -> bool:
        return token == _UNKNOWN_ID

    def is_control(self, token: int) -> bool:
        return 0 < token < _FIRST_WORD_ID

    def id_to_piece(self, token: int) -> str:
        return f"{WORD_START}w{token}"
