"""Which engine a bridge runs: ``engine = "echo" | "moshi" | "auto"``.

``auto`` takes MOSHI when it is configured and loads, and echo otherwise, and says which and
why in the log; the status and ``/metrics`` show the engine too. An explicit ``moshi`` that
cannot load stops start-up with the loader's one-line reason (exit 78): an operator who asked
for the model must not be silently given an echo.
"""

from __future__ import annotations

import logging

from xswarm.config import Config
from xswarm.engine.base import Engine
from xswarm.engine.echo import EchoEngine
from xswarm.errors import EngineLoadError

log = logging.getLogger("xswarm.engine")


def build_engine(config: Config) -> Engine:
    """Construct, load and warm up the configured engine."""
    choice = config.bridge.engine
    if choice == "echo":
        engine = _echo(config)
    elif choice == "moshi":
        engine = _moshi(config)
    else:
        reason = _moshi_unavailable(config)
        if reason is None:
            try:
                engine = _moshi(config)
                engine.load()
                engine.warmup()
                log.info("engine auto: chose moshi")
                return engine
            except EngineLoadError as exc:
                reason = str(exc)
        log.info("engine auto: chose echo, because MOSHI is not usable here: %s", reason)
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


def _moshi_unavailable(config: Config) -> str | None:
    try:
        from xswarm.engine.moshi import probe
    except ImportError as exc:
        return f"the MOSHI extra is not installed ({exc.name} is missing)"
    return probe(config)
