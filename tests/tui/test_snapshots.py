"""Pictures of the main screens with fixed data, at 80x24 and 160x48 (pytest-textual-snapshot).

Sync tests on purpose: snap_compare runs its own event loop. The model is built from
``tests.tui.data`` with a frozen wall clock, so every run draws the same pixels. After an
intended change: ``pytest tests/tui/test_snapshots.py --snapshot-update``, then look.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.tui.data import sample_model
from xswarm.tui.app import XswarmDashboard

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


def app(connected: bool = True) -> XswarmDashboard:
    return XswarmDashboard(url=None, model=sample_model(connected=connected))


@pytest.mark.parametrize("size", SIZES)
def test_main_screen(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(app(), terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_main_screen_stale(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(app(connected=False), terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_call_detail(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(app(), terminal_size=size, press=["enter"])


@pytest.mark.parametrize("size", SIZES)
def test_hangup_modal(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(app(), terminal_size=size, press=["down", "h"])


@pytest.mark.parametrize("size", SIZES)
def test_filter_typed_on_the_summary_line(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(app(), terminal_size=size, press=["slash", "t", "w"])
