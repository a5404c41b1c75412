"""This dashboard's own requests to the supervisor, numbered so that their answers find them.

The supervisor tells every operator about every suggestion's outcome; only the answers to the
requests this dashboard sent earn a notification here. Bookkeeping only: the app sends.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from textual.notifications import SeverityLevel

from xswarm.tui.model import clip_text


class OwnRequests:
    """Request ids of the form ``<prefix>-<n>``, and which of them still await an answer."""

    def __init__(self, prefix: str) -> None:
        self._ids = (f"{prefix}-{n}" for n in itertools.count(1))
        self._open: set[str] = set()

    def next_id(self) -> str:
        return next(self._ids)

    def sent(self, request_id: str) -> None:
        self._open.add(request_id)

    def answered(self, data: Mapping[str, Any]) -> bool:
        """True, once, when ``data`` answers a request of ours."""
        request_id = data.get("request_id")
        if isinstance(request_id, str) and request_id in self._open:
            self._open.discard(request_id)
            return True
        return False


def acknowledgement(data: Mapping[str, Any]) -> tuple[str, SeverityLevel] | None:
    """What to tell the operator about the supervisor's answer to their suggestion."""
    call_id = clip_text(data.get("call_id"))
    if data["type"] == "suggestion_applied":
        return f"Suggestion applied to call {call_id}", "information"
    if data["type"] == "suggestion_rejected":
        reason = clip_text(data.get("reason"), 200)
        return f"Suggestion for call {call_id} rejected: {reason}", "warning"
    return None
