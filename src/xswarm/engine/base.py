"""The engine interface: one batched step per frame over every active call.

An engine owns ``capacity`` slots. The bridge's ``EngineLoop`` gives each admitted call a
slot, calls ``join(slot)`` before the call's first frame and ``leave(slot)`` after its last,
and once per frame period calls ``step`` with the frames that are ready. All three calls are
made from one thread (the loop's step thread when ``runs_in_thread`` is true), never
concurrently, so an engine needs no locks of its own.

Audio is float32 mono PCM at ``sample_rate`` (24 kHz), exactly ``frame_samples`` per frame:
80 ms (1920 samples) for MOSHI, 20 ms (480) for echo, so that echo measures the bridge and
not a model's frame.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xswarm.config import Config

SAMPLE_RATE = 24_000


# What a slot's step can report beside audio and words (``SlotOutput.events``).
SUGGESTION_STARTED = "suggestion_started"
SUGGESTION_FINISHED = "suggestion_finished"
SUGGESTION_CANCELLED = "suggestion_cancelled"
CONTEXT_EXCEEDED = "context_exceeded"


@dataclass(slots=True)
class SlotOutput:
    """What one slot produced in one step: audio (or None when it has none yet) and words.

    ``events`` name what happened to the call in this step (the constants above); a set
    ``end_reason`` asks the bridge to end the call now, with that reason.
    """

    pcm: np.ndarray | None
    text: str = ""
    events: tuple[str, ...] = ()
    end_reason: str | None = None


@dataclass(slots=True)
class SuggestionResult:
    """Whether a suggestion was taken by the engine (``applied``) and, if not, why."""

    applied: bool
    reason: str = ""


@dataclass
class EngineInfo:
    """What the status line, ``/metrics`` and ``instance_status`` say about an engine."""

    name: str
    frame_ms: float
    capacity: int
    details: dict[str, Any] = field(default_factory=dict)


class Engine(ABC):
    """Base class of every engine. Subclasses set ``name``, ``frame_samples``, ``capacity``."""

    name: str = "engine"
    sample_rate: int = SAMPLE_RATE
    frame_samples: int = 480
    capacity: int = 1
    # True when step() blocks for long (a GPU step): the loop then runs it off the event loop.
    runs_in_thread: bool = False
    # Extra steps a tick may run for a call whose input has piled up (network jitter), so its
    # latency returns to one frame. Only for engines whose steps are cheap.
    catch_up_steps: int = 0
    # Set (to why) once the engine can no longer step (a sticky device error): the bridge
    # then stops being ready and exits non-zero, so that systemd restarts it.
    broken: str | None = None

    @property
    def frame_seconds(self) -> float:
        return self.frame_samples / self.sample_rate

    def load(self) -> None:  # noqa: B027 - optional hook, default is nothing to load
        """Load weights and allocate slots; raise EngineLoadError with a one-line fix."""

    def warmup(self) -> None:  # noqa: B027 - optional hook
        """Run throw-away steps (and capture CUDA graphs) before the service reports READY."""

    @abstractmethod
    def join(self, slot: int) -> None:
        """A call takes ``slot``: reset that slot's state without touching the others."""

    @abstractmethod
    def leave(self, slot: int) -> None:
        """The call in ``slot`` is gone: mask the slot out."""

    @abstractmethod
    def step(self, frames: Mapping[int, np.ndarray]) -> dict[int, SlotOutput]:
        """Advance every slot in ``frames`` by one frame; slots not in it are paused."""

    def suggest(self, slot: int, text: str) -> SuggestionResult:
        """Steer the call in ``slot`` with ``text``; engines without a text stream refuse."""
        return SuggestionResult(False, f"engine {self.name} cannot take suggestions")

    def cancel(self, slot: int) -> int:
        """Drop the suggestions the call in ``slot`` has not yet spoken; returns how many."""
        return 0

    def reconfigure(self, config: Config) -> None:  # noqa: B027 - optional hook
        """Apply the live-reloadable keys of a new config (SIGHUP); the rest need a restart.

        Called between steps, on the thread that steps (``EngineLoop.reconfigure``)."""

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, self.frame_seconds * 1000, self.capacity)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release devices and threads."""
