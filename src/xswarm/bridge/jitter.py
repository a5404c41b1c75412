"""How unevenly a call's audio arrives, measured against the call's own cadence.

MOSHI steps every call on one 80 ms tick grid, and a caller's frame is four 20 ms chunks: a
frame whose last chunk arrives after its tick waits a whole frame for the next one (the
caller hears a gap), while every millisecond of audio held back to absorb late chunks is
latency on every frame. How much to hold depends on the path: this module measures it from
the arrivals alone, with plain arithmetic, so the bridge can keep each call's slack at its
own jitter instead of at one figure for every network.
"""

from __future__ import annotations

import math
from collections import deque


class ArrivalJitter:
    """The spread of one call's arrival times, from the chunks it has received.

    A caller sends in real time, so its sample ``r`` leaves ``r / rate`` after the first one;
    a chunk's *lateness* is its arrival minus that (its end sample's) place on the caller's
    timeline. The smallest lateness is the path's own delay, what a chunk that met no jitter
    sees (``base``); how far above it chunks arrive is the jitter to absorb (``spread``).
    Both are kept per ``SLICE_S`` of arrivals and read over the last ``WINDOW_S``, so the
    estimate follows a sender's clock that drifts against ours, or a path that changes, within
    seconds, for a constant cost per chunk.
    """

    SLICE_S = 0.5
    WINDOW_S = 4.0
    # Arrivals needed before the figures are trusted: about 50 Twilio chunks.
    READY_S = 1.0

    __slots__ = ("_first", "_last", "_received", "_slices", "rate")

    def __init__(self, sample_rate: int) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.rate = sample_rate
        self._received = 0
        self._first: float | None = None
        self._last = 0.0
        # (slice number, smallest lateness, largest lateness), oldest first.
        self._slices: deque[tuple[int, float, float]] = deque()

    def observe(self, samples: int, arrived: float) -> None:
        """A chunk of ``samples`` caller samples that arrived at ``arrived`` (seconds)."""
        self._received += samples
        lateness = arrived - self._received / self.rate
        if self._first is None:
            self._first = arrived
        self._last = arrived
        number = math.floor((arrived - self._first) / self.SLICE_S)
        slices = self._slices
        if slices and slices[-1][0] == number:
            _, low, high = slices[-1]
            slices[-1] = (number, min(low, lateness), max(high, lateness))
            return
        slices.append((number, lateness, lateness))
        oldest = number - round(self.WINDOW_S / self.SLICE_S)
        while slices[0][0] <= oldest:
            slices.popleft()

    @property
    def received(self) -> int:
        return self._received

    @property
    def ready(self) -> bool:
        """Whether a second or so of arrivals backs the figures."""
        return self._first is not None and self._last - self._first >= self.READY_S

    @property
    def base(self) -> float:
        """The smallest lateness in the window: the path's delay without jitter (seconds)."""
        return min(low for _, low, _ in self._slices) if self._slices else 0.0

    @property
    def spread(self) -> float:
        """How much later than ``base`` the latest chunk in the window arrived (seconds)."""
        if not self._slices:
            return 0.0
        return max(high for _, _, high in self._slices) - self.base

    def due(self, position: int) -> float:
        """When a chunk that met no jitter and ends at the caller's sample ``position``
        arrives (or arrived)."""
        return self.base + position / self.rate
