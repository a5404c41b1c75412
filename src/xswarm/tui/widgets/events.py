"""Lines of the events panes (the dashboard's and one call's)."""

from __future__ import annotations

from collections import deque

from rich.segment import Segment
from rich.text import Text
from textual import events
from textual.strip import Strip
from textual.widget import Widget

from xswarm.tui.model import EventLine


def event_text(line: EventLine) -> Text:
    """An events-pane line; the remote parts are plain text, never markup."""
    text = Text(f"{line.ts} ", style="dim")
    style = "red" if line.kind in ("error", "suggestion_rejected") else "bold"
    text.append(line.kind, style=style)
    if line.instance:
        text.append(f" [{line.instance}]", style="cyan")
    if line.text:
        text.append(" " + line.text)
    return text


EVERY_LINE = 1 << 62


class EventsPane(Widget):
    """The newest events, bottom-aligned; the wheel scrolls back through the last ``kept``.

    Not a ``RichLog``: a log that scrolls to its end on every write makes Textual lay the
    screen out again at every repaint, which at fleet event rates was a large share of the
    dashboard's CPU. This pane never scrolls; it draws the lines that fit, and a repaint that
    adds lines redraws only this pane. An event is wrapped to the pane's width (a Rich render)
    only when it is drawn: of a flood of events, only the newest few ever are.
    """

    DEFAULT_CSS = """
    EventsPane {
        height: 1fr;
    }
    """

    def __init__(self, kept: int = 500, *, id: str | None = None) -> None:
        super().__init__(id=id)
        # Each event with its lines at ``_width``, or None until it is first drawn.
        self.entries: deque[tuple[Text, list[Strip] | None]] = deque(maxlen=kept)
        self._width = 0
        self._tail: list[Strip] | None = None
        self._tail_is_all = False
        self.back = 0
        self.wrapped = 0

    def write(self, text: Text) -> None:
        self.entries.append((text, None))
        self._tail = None
        self.refresh()

    def _wrap(self, text: Text) -> list[Strip]:
        self.wrapped += 1
        console = self.app.console
        options = console.options.update(width=self._width, no_wrap=True)
        strips = []
        for line in text.wrap(console, self._width):
            segments = list(Segment.split_lines(console.render(line, options)))
            strips.append(Strip(segments[0] if segments else []).crop(0, self._width))
        return strips

    def _newest(self, count: int) -> list[Strip]:
        """The last ``count`` lines (fewer when there are not so many), oldest first."""
        width = max(1, self.scrollable_content_region.width)
        if width != self._width:
            self._width = width
            self.entries = deque(((text, None) for text, _ in self.entries), self.entries.maxlen)
            self._tail = None
        if self._tail is not None and (self._tail_is_all or len(self._tail) >= count):
            return self._tail[-count:] if count else []
        chunks: list[list[Strip]] = []
        found = 0
        self._tail_is_all = True
        for n in range(len(self.entries) - 1, -1, -1):
            text, strips = self.entries[n]
            if strips is None:
                strips = self._wrap(text)
                self.entries[n] = (text, strips)
            chunks.append(strips)
            found += len(strips)
            if found >= count:
                self._tail_is_all = n == 0
                break
        self._tail = [strip for strips in reversed(chunks) for strip in strips]
        return self._tail[-count:] if count else []

    @property
    def lines(self) -> list[Strip]:
        """Every kept event as lines wrapped to the pane's width, oldest first."""
        return self._newest(EVERY_LINE)

    def render_line(self, y: int) -> Strip:
        height = self.scrollable_content_region.height
        lines = self._newest(height + self.back)
        top = max(0, len(lines) - height - self.back)
        index = top + y
        base = self.rich_style
        width = self.scrollable_content_region.width
        if index >= len(lines):
            return Strip.blank(width, base)
        return lines[index].apply_style(base).extend_cell_length(width, base)

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        event.stop()
        most = max(0, len(self.lines) - self.scrollable_content_region.height)
        self.back = min(most, self.back + 3)
        self.refresh()

    def _on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        event.stop()
        self.back = max(0, self.back - 3)
        self.refresh()
