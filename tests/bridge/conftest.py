from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.bridge import BridgeProcess, running_bridge


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[BridgeProcess]:
    """A real echo bridge on a free port, with a small admission limit."""
    with running_bridge(
        tmp_path, '[voice.bridge]\nengine = "echo"\nmax_concurrent_calls = 20\n'
    ) as b:
        yield b


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
