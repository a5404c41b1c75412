"""``random_weights = true``: untrained modules built from the config, served like real ones.

``make gpu-check`` serves Kyutai's 7B this way (no weights can be downloaded there); here the
same path runs over the tiny architecture, so that what the GPU script relies on runs in
``make test``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xswarm.config import Config
from xswarm.engine import moshi_loader
from xswarm.engine.moshi import MoshiEngine
from xswarm.engine.random_model import WARNING, HashedTokenizer
from xswarm.engine.select import choice
from xswarm.errors import EngineLoadError

pytestmark = pytest.mark.moshi

NO_FILES = {"moshi_weights": "", "mimi_weights": "", "random_weights": True}


def test_random_weights_need_no_weight_files_and_plan_the_same_memory(
    moshi_config: Callable[..., Config], tiny_moshi: dict[str, Any]
) -> None:
    trained = moshi_loader.preflight(moshi_config(slots=2), 2)
    untrained = moshi_loader.preflight(moshi_config(slots=2, **NO_FILES), 2)
    assert untrained.files.random and untrained.files.moshi_weights is None
    assert untrained.files.tokenizer == Path(tiny_moshi["tokenizer"])
    # Counted on the meta device, the sizes equal the checkpoint headers' of the same model.
    assert untrained.plan.weights_bytes == trained.plan.weights_bytes
    assert untrained.plan.per_slot_bytes == trained.plan.per_slot_bytes


def test_random_weights_serve_steps_warn_loudly_and_say_so(
    moshi_engine: Callable[..., MoshiEngine],
    caller_audio: np.ndarray,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="xswarm.engine.moshi"):
        engine = moshi_engine(2, **NO_FILES)
    assert WARNING in caplog.text
    assert engine.info().details["weights"] == "random"
    for slot in range(2):
        engine.join(slot)
    assert engine.suggest(0, "hello world").applied
    replies = 0
    for index in range(8):
        out = engine.step({0: caller_audio[0, index], 1: caller_audio[1, index]})
        for reply in out.values():
            if reply.pcm is not None:
                assert np.isfinite(reply.pcm).all()
                replies += 1
    assert replies > 0


def test_random_weights_without_a_tokenizer_steer_with_made_up_word_ids(
    moshi_engine: Callable[..., MoshiEngine], caller_audio: np.ndarray
) -> None:
    engine = moshi_engine(1, tokenizer="", **NO_FILES)
    engine.join(0)
    assert engine.suggest(0, "any words at all").applied
    events: list[str] = []
    for index in range(24):
        events += engine.step({0: caller_audio[0, index]})[0].events
    assert "suggestion_started" in events


def test_made_up_tokenizer_maps_each_word_to_one_ordinary_id() -> None:
    tokenizer = HashedTokenizer(32000)
    ids = tokenizer.encode("Hello hello world", out_type=int)
    assert ids[0] == ids[1] != ids[2]
    assert all(4 <= i < 32000 and not tokenizer.is_control(i) for i in ids)
    assert tokenizer.id_to_piece(ids[2]).startswith("\u2581")
    assert tokenizer.is_unknown(0) and tokenizer.is_control(3)


def test_random_weights_with_weight_files_too_is_refused_and_choice_says_untrained(
    moshi_config: Callable[..., Config],
) -> None:
    both = moshi_config(slots=1, random_weights=True)
    with pytest.raises(EngineLoadError, match="random_weights = true and moshi_weights"):
        MoshiEngine(both).load()
    picked = choice(moshi_config(slots=1, **NO_FILES))
    assert picked.engine == "moshi" and "UNTRAINED random weights" in picked.reason
