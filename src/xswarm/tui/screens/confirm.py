"""Hanging up is destructive: the operator confirms, seeing exactly which call it hits."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from xswarm.tui.messages import HangupConfirmed


class ConfirmHangupScreen(ModalScreen[None]):
    """Posts ``HangupConfirmed`` when the operator says yes; closes either way."""

    BINDINGS = [
        Binding("y", "answer(True)", "Hang up"),
        Binding("n", "answer(False)", "Cancel"),
        Binding("escape", "answer(False)", "Cancel"),
    ]

    def __init__(self, call_id: str, caller: str) -> None:
        super().__init__()
        self.call_id = call_id
        self.caller = caller

    def compose(self) -> ComposeResult:
        question = Text("Hang up call ")
        question.append(self.call_id, style="bold")
        if self.caller:
            question.append(" from ")
            question.append(self.caller, style="bold")
        question.append("?\nThe caller is disconnected at once.")
        with Vertical(id="dialog"):
            yield Static(question, id="question")
            with Horizontal(id="buttons"):
                yield Button("Hang up (y)", variant="error", id="yes")
                yield Button("Cancel (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, hang_up: bool) -> None:
        if hang_up:
            self.post_message(HangupConfirmed(self.call_id))
        self.dismiss()

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.action_answer(event.button.id == "yes")
