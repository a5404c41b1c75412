"""A call's arrival jitter, measured from arrival times handed over as plain numbers."""

from __future__ import annotations

import random

import pytest

from xswarm.bridge.jitter import ArrivalJitter

RATE = 24_000
CHUNK = 480  # a Twilio 20 ms frame at 24 kHz
CHUNK_S = 0.020


def feed(jitter: ArrivalJitter, lateness: list[float], delay: float = 0.150) -> None:
    """Chunk n sent at n * 20 ms arrives ``delay`` later plus its lateness."""
    start = jitter.received // CHUNK
    for n, late in enumerate(lateness, start=start):
        jitter.observe(CHUNK, (n + 1) * CHUNK_S + delay + late)


def in_order_jitter(count: int, spread: float, seed: int = 3) -> list[float]:
    """What ``xswarm bench --jitter-ms`` does: each chunk leaves 0 to ``spread`` after its
    slot, never before the one ahead of it."""
    rng = random.Random(seed)
    lateness, late = [], 0.0
    for _ in range(count):
        late = max(late - CHUNK_S, rng.uniform(0.0, spread))
        lateness.append(late)
    return lateness


def test_a_path_without_jitter_has_no_spread_and_its_delay_as_base() -> None:
    jitter = ArrivalJitter(RATE)
    feed(jitter, [0.0] * 100)
    assert jitter.ready
    assert jitter.spread == pytest.approx(0.0, abs=1e-9)
    assert jitter.base == pytest.approx(0.150)
    assert jitter.due(10 * CHUNK) == pytest.approx(0.150 + 10 * CHUNK_S)


def test_the_figures_are_not_trusted_before_a_second_of_arrivals() -> None:
    jitter = ArrivalJitter(RATE)
    assert not jitter.ready and jitter.spread == 0.0
    feed(jitter, [0.0] * 50)  # 0.98 s from the first arrival to the last
    assert not jitter.ready
    feed(jitter, [0.0])
    assert jitter.ready


def test_the_spread_is_how_much_later_than_the_earliest_chunks_arrive() -> None:
    lateness = in_order_jitter(200, 0.060)
    jitter = ArrivalJitter(RATE)
    feed(jitter, lateness)
    assert jitter.spread == pytest.approx(max(lateness) - min(lateness))
    assert 0.050 < jitter.spread <= 0.060
    assert jitter.base == pytest.approx(0.150 + min(lateness))


def test_a_spike_is_forgotten_once_it_leaves_the_window() -> None:
    jitter = ArrivalJitter(RATE)
    feed(jitter, [0.0] * 60 + [0.070] + [0.0] * 60)
    assert jitter.spread == pytest.approx(0.070)
    window_chunks = round(ArrivalJitter.WINDOW_S / CHUNK_S)
    feed(jitter, [0.0] * (window_chunks + round(ArrivalJitter.SLICE_S / CHUNK_S)))
    assert jitter.spread == pytest.approx(0.0, abs=1e-9)


def test_a_sender_whose_clock_runs_slow_moves_the_base_not_the_spread() -> None:
    """1 ms later every second (a clock 0.1% slow): the window follows it, so the drift adds
    at most a window's worth (4 ms) to the spread, however long the call."""
    jitter = ArrivalJitter(RATE)
    feed(jitter, [0.001 * n * CHUNK_S for n in range(3000)])  # a minute
    assert jitter.spread <= 0.001 * ArrivalJitter.WINDOW_S + 1e-9
    assert jitter.base > 0.150 + 0.050


def test_a_sample_rate_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="sample_rate must be positive"):
        ArrivalJitter(0)
