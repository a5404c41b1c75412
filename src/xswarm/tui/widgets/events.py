"""Lines of the events panes (the dashboard's and one call's)."""

from __future__ import annotations

from rich.text import Text

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
