"""Messages that travel up to the app (Textual's "attributes down, messages up").

Two sources post them: the supervisor link (what the supervisor said) and the screens, widgets
and command palette (what the operator asked for). Screens never reach into the app; they post
one of these and the app, which owns the model and the link, decides what happens. Every call
is named by its id, never by a table row, so a re-sort cannot redirect an action.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class ConnectionChanged(Message):
    """The link to the supervisor changed: ``up``, ``connecting``, ``down`` or ``refused``."""

    state: str
    detail: str


@dataclass
class SupervisorMessage(Message):
    """One decoded JSON object from the supervisor (a snapshot, an event or an answer)."""

    data: dict[str, Any]


@dataclass
class BadSupervisorMessage(Message):
    """The supervisor sent something that is not a JSON object; the link stays up."""

    reason: str


@dataclass
class OpenCall(Message):
    """Show one call up close."""

    call_id: str


@dataclass
class WriteSuggestion(Message):
    """The operator wants to type a suggestion for a call; the app opens the box for it."""

    call_id: str


@dataclass
class SuggestionRequested(Message):
    """A checked suggestion the operator typed, ready to send to the supervisor."""

    call_id: str
    text: str
    priority: str


@dataclass
class HangupRequested(Message):
    """The operator pressed hang-up on a call; it is only sent once they confirm."""

    call_id: str


@dataclass
class HangupConfirmed(Message):
    """The operator confirmed the hang-up of a call; the app sends it to the supervisor."""

    call_id: str


@dataclass
class ReconnectRequested(Message):
    """Retry the supervisor link now instead of waiting out the backoff."""


@dataclass
class HelpRequested(Message):
    """Show the keys."""


@dataclass
class FilterChanged(Message):
    """The text the calls table is filtered by changed (empty: no filter)."""

    text: str


@dataclass
class SortRequested(Message):
    """Change the order of the calls table.

    ``column`` sorts by that column (choosing the current one again flips the direction);
    without it, ``reverse`` flips the direction and otherwise the next column is taken.
    """

    column: str | None = None
    reverse: bool = False
