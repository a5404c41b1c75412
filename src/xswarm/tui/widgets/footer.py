"""The key bar: Textual's ``Footer``, rebuilt only when the keys it shows change.

``Footer`` removes and mounts all its key widgets (and restyles each) whenever the focus
moves, because the active bindings might differ. Opening the filter box moves the focus: at
fleet scale that rebuild was most of what a key cost. The keys shown rarely change with it.
"""

from __future__ import annotations

from typing import Any

from textual.screen import Screen
from textual.widgets import Footer


class KeysFooter(Footer):
    _shown_keys: tuple[Any, ...] | None = None

    def bindings_changed(self, screen: Screen[Any]) -> None:
        keys = tuple(
            (binding.key, binding.action, binding.description, enabled, tooltip, binding.group)
            for (_, binding, enabled, tooltip) in screen.active_bindings.values()
            if binding.show
        )
        if keys == self._shown_keys and self.children:
            return
        self._shown_keys = keys
        super().bindings_changed(screen)
