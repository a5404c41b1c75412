"""Fixtures for the MOSHI engine tests: one tiny model on disk per session, engines over it."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.engine.tiny_moshi import build_tiny_moshi, tiny_moshi_toml
from xswarm import config as xconfig
from xswarm.config import Config

torch = pytest.importorskip("torch")
pytest.importorskip("moshi")


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    # Two OpenMP threads on a shared 2-core machine are several times slower than one.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_moshi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The ``[voice.moshi]`` lines of a tiny model written once for the whole session."""
    return build_tiny_moshi(tmp_path_factory.mktemp("tiny-moshi"))


@pytest.fixture
def moshi_config(tiny_moshi: dict[str, Any], tmp_path: Path) -> Callable[..., Config]:
    """A validated Config for the tiny model, with ``[voice.moshi]`` overrides as keywords."""

    def make(**overrides: Any) -> Config:
        text = tiny_moshi_toml(tiny_moshi, **overrides)
        text += f'[paths]\nstate_dir = "{tmp_path / "state"}"\n'
        return xconfig.from_mapping(tomllib.loads(text), source="test.toml")

    return make


@pytest.fixture
def moshi_engine(moshi_config: Callable[..., Config]) -> Iterator[Callable[..., Any]]:
    """Loaded and warmed-up engines over the tiny model; closed after the test."""
    from xswarm.engine.moshi import MoshiEngine

    made: list[MoshiEngine] = []

    def make(slots: int, **overrides: Any) -> MoshiEngine:
        engine = MoshiEngine(moshi_config(slots=slots, **overrides))
        engine.load()
        engine.warmup()
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


@pytest.fixture(scope="session")
def caller_audio() -> np.ndarray:
    """Distinct 80 ms frames for four callers over 24 steps: noise shaped like speech bursts."""
    rng = np.random.default_rng(7)
    frames = rng.standard_normal((4, 24, 1920)).astype(np.float32) * 0.1
    envelope = np.abs(np.sin(np.linspace(0, 9, 24)))[None, :, None].astype(np.float32)
    return frames * envelope
