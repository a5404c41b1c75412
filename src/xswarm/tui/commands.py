"""The command palette (``?``): every action on every live call, named by call id."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from rich.text import Text
from textual.command import DiscoveryHit, Hit, Hits, Provider

from xswarm.tui.screens.base import dashboard_of


class DashboardCommands(Provider):
    """Hits are plain ``Text``: call ids come from the network and must not parse as markup."""

    def _commands(self) -> list[tuple[str, Callable[[], object], str]]:
        app = dashboard_of(self.screen)
        found: list[tuple[str, Callable[[], object], str]] = [
            ("Help: keys", app.action_help, "show every key"),
            ("Reconnect to the supervisor", app.action_reconnect, "retry now"),
        ]
        for call in sorted(app.model.calls.values(), key=lambda c: c.call_id):
            if call.state != "active":
                continue
            who = f" ({call.caller})" if call.caller else ""
            found.append(
                (
                    f"Open call {call.call_id}{who}",
                    partial(app.open_call, call.call_id),
                    "sparklines, words, events",
                )
            )
            found.append(
                (
                    f"Suggest to call {call.call_id}{who}",
                    partial(app.ask_suggestion, call.call_id),
                    "inject a suggestion",
                )
            )
            found.append(
                (
                    f"Hang up call {call.call_id}{who}",
                    partial(app.ask_hangup, call.call_id),
                    "asks for confirmation",
                )
            )
        return found

    async def discover(self) -> Hits:
        for name, action, help_text in self._commands():
            yield DiscoveryHit(Text(name), action, text=name, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, action, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, Text(name), action, text=name, help=help_text)
