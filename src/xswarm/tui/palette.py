"""The command palette (``?``): every action on every live call, named by call id."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol, runtime_checkable

from rich.text import Text
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.message import Message

from xswarm.tui.messages import (
    HangupRequested,
    HelpRequested,
    OpenCall,
    ReconnectRequested,
    WriteSuggestion,
)
from xswarm.tui.model import DashboardModel


@runtime_checkable
class ShowsCalls(Protocol):
    """What the palette reads from the app it is part of: the model of the live calls."""

    @property
    def model(self) -> DashboardModel: ...


class CallCommands(Provider):
    """Each hit posts a message to the app; hits are plain ``Text``, because call ids come from
    the network and must not parse as markup."""

    def _commands(self) -> list[tuple[str, Callable[[], object], str]]:
        post: Callable[[Message], bool] = self.app.post_message
        found: list[tuple[str, Callable[[], object], str]] = [
            ("Help: keys", partial(post, HelpRequested()), "show every key"),
            ("Reconnect to the supervisor", partial(post, ReconnectRequested()), "retry now"),
        ]
        calls = self.app.model.calls.values() if isinstance(self.app, ShowsCalls) else ()
        for call in sorted(calls, key=lambda c: c.call_id):
            if call.state != "active":
                continue
            who = f" ({call.caller})" if call.caller else ""
            found += [
                (
                    f"Open call {call.call_id}{who}",
                    partial(post, OpenCall(call.call_id)),
                    "sparklines, words, events",
                ),
                (
                    f"Suggest to call {call.call_id}{who}",
                    partial(post, WriteSuggestion(call.call_id)),
                    "inject a suggestion",
                ),
                (
                    f"Hang up call {call.call_id}{who}",
                    partial(post, HangupRequested(call.call_id)),
                    "asks for confirmation",
                ),
            ]
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
