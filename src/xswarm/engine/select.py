"""Which engine a bridge runs: ``engine = "echo" | "moshi" | "auto"``.

``auto`` answers echo only when MOSHI cannot run here at all: its packages, its model files or
a usable device are missing (``moshi_loader.ModelAbsent``). Any other MOSHI failure (a damaged
file, settings the model cannot honour, too little memory, a batch too slow for the frame)
stops start-up with its one line (exit 78), as with an explicit ``moshi``: an operator who
installed a model must never be served an echo without knowing. ``choice`` says the same
without loading anything, for ``xswarm doctor`` and ``xswarm models check``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from xswarm.config import Config
from xswarm.engine.base import Engine
from xswarm.engine.echo import EchoEngine
from xswarm.errors import EngineLoadError

log = logging.getLogger("xswarm.engine")


@dataclass(frozen=True)
class Choice:
    """The engine a start would run (``None``: the start would exit 78) and why."""

    engine: str | None
    reason: str


def choice(config: Config) -> Choice:
    """What ``build_engine`` would pick, from the checks that need no model in memory."""
    wanted = config.bridge.engine
    if wanted == "echo":
        return Choice("echo", 'configured: [voice.bridge] engine = "echo"')
    try:
        absent = _moshi_absent(config)
    except EngineLoadError as exc:
        return Choice(None, f"MOSHI is installed but would not start: {exc}")
    if absent is None:
        how = "configured" if wanted == "moshi" else "auto"
        if config.moshi.random_weights:
            return Choice(
                "moshi",
                f"{how}, with UNTRAINED random weights (random_weights = true: speed "
                f"measurement only) on device {config.moshi.device}",
            )
        return Choice("moshi", f"{how}: the model files and device {config.moshi.device} are here")
    if wanted == "moshi":
        return Choice(None, f'[voice.bridge] engine = "moshi" but {absent}')
    return Choice("echo", f"auto: MOSHI cannot run here: {absent}")


def build_engine(config: Config) -> Engine:
    """Construct, load and warm up the configured engine."""
    wanted = config.bridge.engine
    if wanted == "echo":
        engine = _echo(config)
    elif wanted == "moshi":
        engine = _moshi(config)
    else:
        absent = _moshi_absent(config)
        if absent is None:
            engine = _moshi(config)
            log.info("engine auto: chose moshi")
        else:
            log.info("engine auto: chose echo, because MOSHI cannot run here: %s", absent)
            engine = _echo(config)
    engine.load()
    engine.warmup()
    log.info(
        "engine %s ready: %d slots, %g ms frames",
        engine.name,
        engine.capacity,
        engine.frame_seconds * 1000,
    )
    return engine


def _echo(config: Config) -> Engine:
    return EchoEngine(
        capacity=config.bridge.max_concurrent_calls,
        delay_ms=config.echo.delay_ms,
    )


def _moshi(config: Config) -> Engine:
    try:
        from xswarm.engine.moshi import MoshiEngine
    except ImportError as exc:
        raise EngineLoadError(
            f"engine moshi needs the MOSHI extra ({exc.name} is missing): "
            "pip install '.[moshi]' && pip install --no-deps moshi==0.2.13"
        ) from None
    return MoshiEngine(config)


def _moshi_absent(config: Config) -> str | None:
    """Why MOSHI cannot run here at all, or None; raises for a MOSHI that is here but broken."""
    try:
        from xswarm.engine.moshi import probe
    except ImportError as exc:
        return f"the MOSHI extra is not installed ({exc.name} is missing)"
    return probe(config)
