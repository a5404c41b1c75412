"""The key bar: the screen's shown keys drawn as one line of text by one widget.

Textual's ``Footer`` is a container of one widget per key: whenever the focus moves it removes
and mounts them all, which restyles each and lays the screen out again. Opening the filter box
moves the focus and changes the keys shown (letters type into the box), so at fleet scale
that rebuild was a good part of what a key cost. Here a change of keys redraws one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget


@dataclass(frozen=True)
class ShownKey:
    key: str
    display: str
    description: str
    enabled: bool


class KeysFooter(Widget):
    COMPONENT_CLASSES: ClassVar[set[str]] = {"keys-footer--key", "keys-footer--description"}
    DEFAULT_CSS = """
    KeysFooter {
        dock: bottom;
        height: 1;
        color: $footer-foreground;
        background: $footer-background;
        .keys-footer--key {
            color: $footer-key-foreground;
            background: $footer-key-background;
            text-style: bold;
        }
        .keys-footer--description {
            color: $footer-description-foreground;
            background: $footer-description-background;
        }
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self.keys: tuple[ShownKey, ...] = ()
        # Where each key is drawn (first and last column + 1), for a click on it.
        self.spans: list[tuple[int, int, str]] = []

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self.bindings_changed)
        self.bindings_changed(self.screen)

    def bindings_changed(self, screen: Screen[Any]) -> None:
        if screen is not self.screen:
            return
        active = screen.active_bindings
        seen: set[str] = set()
        keys = []
        for _, binding, enabled, _tooltip in active.values():
            if binding.show and binding.action not in seen:
                seen.add(binding.action)
                keys.append(self._shown(binding, enabled))
        palette = active.get(self.app.COMMAND_PALETTE_BINDING)
        if self.app.ENABLE_COMMAND_PALETTE and palette is not None:
            keys.append(self._shown(palette[1], palette[2]))
        if tuple(keys) != self.keys:
            self.keys = tuple(keys)
            self.refresh()

    def _shown(self, binding: Binding, enabled: bool) -> ShownKey:
        return ShownKey(
            binding.key, self.app.get_key_display(binding), binding.description, enabled
        )

    def render(self) -> Text:
        key_style = self.get_component_rich_style("keys-footer--key")
        description_style = self.get_component_rich_style("keys-footer--description")
        line = Text(no_wrap=True, overflow="crop")
        self.spans = []
        for shown in self.keys:
            start = line.cell_len
            muted = Style() if shown.enabled else Style(dim=True)
            line.append(f" {shown.display} ", key_style + muted)
            line.append(f"{shown.description} ", description_style + muted)
            self.spans.append((start, line.cell_len, shown.key))
        return line

    def on_click(self, event: events.Click) -> None:
        for start, end, key in self.spans:
            if start <= event.x < end:
                self.app.simulate_key(key)
                return
