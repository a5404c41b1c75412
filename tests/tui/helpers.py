"""Waiting inside a Pilot test without a wall-clock assertion."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from textual.pilot import Pilot

T = TypeVar("T")


async def until(pilot: Pilot[Any], probe: Callable[[], T], within: float = 30.0) -> T:
    """Let the app run until ``probe()`` is truthy; returns it."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting after {within} s for {probe.__doc__ or probe}")
        await pilot.pause(0.1)
