"""How many slots a batched engine can run in real time: a search over measured step times.

A MOSHI step costs the same for every slot, live or masked (``set_exec_mask`` skips no
arithmetic), so a batch that fits memory may still not fit the 80 ms frame, and then every
call is late, even the only one. The engine therefore times full steps at warm-up and keeps
the largest batch whose step p99 stays within a budget. Step time grows about linearly with
the batch, so the search interpolates between the largest passing and the smallest failing
size (regula falsi) instead of trying every size: a handful of candidates, each timed with
enough steps for a real p99.

Pure arithmetic over a ``measure`` callable, so tests drive it with made-up times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

MAX_CANDIDATES = 6


@dataclass(frozen=True)
class StepTimes:
    """Step time percentiles of one batch size, measured over ``steps`` full steps."""

    slots: int
    p50_ms: float
    p99_ms: float
    steps: int

    def line(self, budget_ms: float) -> str:
        verdict = "within" if self.p99_ms <= budget_ms else "OVER"
        return (
            f"{self.slots:5d} slots: step p50 {self.p50_ms:7.2f} ms, p99 {self.p99_ms:7.2f} ms "
            f"({self.steps} steps) {verdict} {budget_ms:g} ms"
        )


@dataclass(frozen=True)
class Sizing:
    """The chosen batch (0: not even one slot fits the budget) and every measurement."""

    slots: int
    budget_ms: float
    table: tuple[StepTimes, ...]

    def chosen(self) -> StepTimes | None:
        return next((t for t in self.table if t.slots == self.slots), None)


def largest_within(
    most: int,
    budget_ms: float,
    measure: Callable[[int], StepTimes],
    least: int = 1,
    max_candidates: int = MAX_CANDIDATES,
) -> Sizing:
    """The largest batch in ``least..most`` whose measured step p99 is within ``budget_ms``.

    ``most`` first (the usual case: memory, not compute, is the limit, and one candidate
    settles it), then ``least``, then sizes interpolated between the two bounds.
    """
    table: list[StepTimes] = []

    def timed(slots: int) -> StepTimes:
        times = measure(slots)
        table.append(times)
        return times

    if most < least:
        return Sizing(0, budget_ms, ())
    top = timed(most)
    if top.p99_ms <= budget_ms:
        return Sizing(most, budget_ms, tuple(table))
    if most == least:
        return Sizing(0, budget_ms, tuple(table))
    bottom = timed(least)
    if bottom.p99_ms > budget_ms:
        return Sizing(0, budget_ms, tuple(table))
    good, bad = bottom, top
    while len(table) < max_candidates and bad.slots - good.slots > 1:
        slope = (bad.p99_ms - good.p99_ms) / (bad.slots - good.slots)
        guess = good.slots + int((budget_ms - good.p99_ms) / slope) if slope > 0 else bad.slots
        guess = min(max(guess, good.slots + 1), bad.slots - 1)
        probe = timed(guess)
        if probe.p99_ms <= budget_ms:
            good = probe
        else:
            bad = probe
    return Sizing(good.slots, budget_ms, tuple(table))
