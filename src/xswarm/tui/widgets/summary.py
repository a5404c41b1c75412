"""One line of text that changes often: redrawn in place, never a reason to lay out the screen.

``Static.update`` asks for a new layout on every change (its size might change), which costs a
full-screen render; a one-line summary updated at the repaint rate cannot change size.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget


class SummaryLine(Widget):
    DEFAULT_CSS = """
    SummaryLine {
        height: 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.text = Text("")

    def show(self, text: Text) -> None:
        if text.plain != self.text.plain or text.style != self.text.style:
            self.text = text
            self.refresh()

    def render(self) -> Text:
        return self.text
