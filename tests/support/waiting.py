"""Wait for a condition instead of sleeping and then checking it.

A fixed sleep before an assertion is slow when it is long and flaky when the machine is
loaded. These poll the condition itself: a passing test goes on the moment it holds, and
``within`` only bounds a failure, so it can be generous. Never assert on how long it took.

A probe that raises ends the wait at once with its error (a service that exited, say); a probe
that must tolerate errors while something starts up catches them and returns a falsy value.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

T = TypeVar("T")


async def eventually(
    probe: Callable[[], T | Awaitable[T]],
    done: Callable[[T], object] = bool,
    *,
    within: float = 20.0,
    interval: float = 0.05,
    detail: Callable[[], str] | None = None,
) -> T:
    """Poll ``probe()`` until ``done(value)`` holds; returns that value.

    ``probe`` may be a coroutine function. Blocking I/O belongs in a thread
    (``lambda: asyncio.to_thread(...)``), so that the test's other tasks keep running. On
    timeout the AssertionError shows the last value and ``detail()`` (a service's log, say).
    """
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if done(cast(T, value)):
            return cast(T, value)
        if time.monotonic() > deadline:
            raise AssertionError(gave_up(within, value, detail))
        await asyncio.sleep(interval)


def eventually_sync(
    probe: Callable[[], T],
    done: Callable[[T], object] = bool,
    *,
    within: float = 20.0,
    interval: float = 0.05,
    detail: Callable[[], str] | None = None,
) -> T:
    """``eventually`` for tests and fixtures that have no event loop running."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(gave_up(within, value, detail))
        time.sleep(interval)


def gave_up(within: float, last: object, detail: Callable[[], str] | None) -> str:
    text = f"gave up waiting after {within} s; the last value was {last!r}"
    return text if detail is None else f"{text}\n{detail()}"
