"""The echo engine: every caller hears themselves, like a telephone echo test.

It is the embedded default when no model is configured, and it measures the bridge alone:
its 20 ms frame matches a Twilio frame, so no model frame hides the bridge's own latency.
A suggestion is echoed too, as the call's words, so operators can test the whole path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import numpy as np

from xswarm.config import Config
from xswarm.engine.base import Engine, SlotOutput, SuggestionResult


class EchoEngine(Engine):
    name = "echo"
    frame_samples = 480
    catch_up_steps = 2

    def __init__(self, capacity: int, delay_ms: int = 0) -> None:
        self.capacity = capacity
        self.delay_frames = round(delay_ms / 20)
        self._lines: dict[int, deque[np.ndarray]] = {}
        self._words: dict[int, str] = {}

    def join(self, slot: int) -> None:
        silence = np.zeros(self.frame_samples, dtype=np.float32)
        self._lines[slot] = deque([silence] * self.delay_frames)
        self._words.pop(slot, None)

    def leave(self, slot: int) -> None:
        self._lines.pop(slot, None)
        self._words.pop(slot, None)

    def step(self, frames: Mapping[int, np.ndarray]) -> dict[int, SlotOutput]:
        out = {}
        for slot, pcm in frames.items():
            line = self._lines[slot]
            line.append(pcm)
            out[slot] = SlotOutput(line.popleft(), self._words.pop(slot, ""))
        return out

    def suggest(self, slot: int, text: str) -> SuggestionResult:
        if slot not in self._lines:
            return SuggestionResult(False, "call is not in the engine")
        self._words[slot] = self._words.get(slot, "") + text
        return SuggestionResult(True)

    def reconfigure(self, config: Config) -> None:
        """``[voice.echo] delay_ms`` applies live, to calls that join afterwards."""
        self.delay_frames = round(config.echo.delay_ms / 20)
