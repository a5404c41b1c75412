"""The connection banner: hidden while the supervisor link is up, loud while it is not."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from xswarm.tui.model import DashboardModel

TITLES = {
    "connecting": "Connecting",
    "down": "STALE: supervisor connection lost, reconnecting",
    "refused": "NOT CONNECTED: the supervisor refused the token",
    "offline": "OFFLINE: not connected to a supervisor",
}


class ConnectionBanner(Static):
    def show(self, model: DashboardModel) -> None:
        state = model.connection
        self.display = state != "up"
        self.set_class(state in ("down", "refused"), "-alarm")
        title = TITLES.get(state, state)
        self.update(Text(f"{title} | {model.connection_message}"))
