"""Typed access from a screen to the dashboard app it belongs to."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.dom import DOMNode

if TYPE_CHECKING:
    from xswarm.tui.app import XswarmDashboard


def dashboard_of(node: DOMNode) -> XswarmDashboard:
    return cast("XswarmDashboard", node.app)
