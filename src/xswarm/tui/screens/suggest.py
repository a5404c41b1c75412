"""Typing a suggestion for one call: the text the model should take into account."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Select, Static

from xswarm.protocol.control import MAX_SUGGESTION_CHARS, PRIORITIES
from xswarm.tui.client import inject_message
from xswarm.tui.messages import SuggestionRequested


class SuggestionScreen(ModalScreen[None]):
    """Posts ``SuggestionRequested`` once the text passes the checks the supervisor makes."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, call_id: str) -> None:
        super().__init__()
        self.call_id = call_id

    def compose(self) -> ComposeResult:
        title = Text("Suggestion for call ")
        title.append(self.call_id, style="bold")
        with Vertical(id="dialog"):
            yield Static(title)
            yield Input(
                placeholder="what the model should say or do; enter sends, escape cancels",
                max_length=MAX_SUGGESTION_CHARS,
                id="suggestion",
            )
            yield Select(
                [(p, p) for p in PRIORITIES], value="normal", allow_blank=False, id="priority"
            )
            yield Label("", id="problem")

    def on_mount(self) -> None:
        self.query_one("#suggestion", Input).focus()

    @on(Input.Submitted, "#suggestion")
    def submit(self, event: Input.Submitted) -> None:
        priority = str(self.query_one("#priority", Select).value)
        try:
            inject_message(self.call_id, event.value, "check", priority)
        except ValueError as exc:
            self.query_one("#problem", Label).update(Text(str(exc), style="bold red"))
            return
        self.post_message(SuggestionRequested(self.call_id, event.value.strip(), priority))
        self.dismiss()

    def action_cancel(self) -> None:
        self.dismiss()
