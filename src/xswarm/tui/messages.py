"""Messages the supervisor connection posts up to the app (attributes down, messages up)."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class ConnectionChanged(Message):
    """The link to the supervisor changed: ``up``, ``connecting``, ``down`` or ``refused``."""

    def __init__(self, state: str, detail: str) -> None:
        super().__init__()
        self.state = state
        self.detail = detail


class SupervisorMessage(Message):
    """One decoded JSON object from the supervisor (a snapshot, an event or an answer)."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__()
        self.data = data


class BadSupervisorMessage(Message):
    """The supervisor sent something that is not a JSON object; the link stays up."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason
