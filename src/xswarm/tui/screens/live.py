"""The screens that draw the live model: the app hands each repaint's changes down to them."""

from __future__ import annotations

from textual.screen import Screen

from xswarm.tui.model import Changes, DashboardModel


class LiveScreen(Screen[None]):
    """Reads the model it is given and never changes it; what the operator asks for goes up
    to the app as a message from ``xswarm.tui.messages``."""

    def __init__(self, model: DashboardModel) -> None:
        super().__init__()
        self.model = model

    def show(self, changes: Changes) -> None:
        """Bring the screen in line with the model after ``changes`` (it must be composed)."""
        raise NotImplementedError

    def watched(self) -> list[str]:
        """The call ids whose figures this screen shows now (the supervisor sends the others'
        less often)."""
        return []
