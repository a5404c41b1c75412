"""Per-call updates held for operators that asked for batches, merged until the next flush.

At fleet scale almost every event is a per-call update (``call_stats`` once a second per call,
``text`` words, ``user_speech``); sent one WebSocket message each, receiving them is most of a
dashboard's work. Held here, they go out once per interval as a few ``batch`` messages, at
most one entry of each kind per call. Pure: the hub decides when to flush and what to send.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

from xswarm.protocol.operator import BATCHED_EVENTS

CallKey = tuple[str, str]


def call_key(event: Mapping[str, Any]) -> CallKey | None:
    """(instance, call_id) of an event about one call; None for any other event."""
    instance = event.get("instance")
    call_id = event.get("call_id")
    if isinstance(instance, str) and isinstance(call_id, str):
        return instance, call_id
    return None


def merged(held: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """One event standing for ``held`` then ``event`` of the same kind and call."""
    if event["type"] == "text":
        before, after = held.get("text"), event.get("text")
        if isinstance(before, str) and isinstance(after, str):
            return event | {"text": before + after}
        return event
    if event["type"] == "call_stats":
        return held | event
    return event


class Coalescer:
    """The per-call updates not yet flushed, in the order their calls first had one."""

    def __init__(self) -> None:
        self._held: dict[CallKey, dict[str, dict[str, Any]]] = {}

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, event: dict[str, Any]) -> bool:
        """Keep ``event`` for the next flush; False when it is not a per-call update.

        ``event`` is not changed (other subscribers may be sent it as it is).
        """
        if event.get("type") not in BATCHED_EVENTS:
            return False
        key = call_key(event)
        if key is None:
            return False
        kinds = self._held.get(key)
        if kinds is None:
            self._held[key] = {event["type"]: event}
            return True
        held = kinds.get(event["type"])
        kinds[event["type"]] = event if held is None else merged(held, event)
        return True

    def take_call(self, key: CallKey) -> list[dict[str, Any]]:
        """The updates held for one call, now due (an event about it cannot wait)."""
        kinds = self._held.pop(key, None)
        return [] if kinds is None else list(kinds.values())

    def take_share(self, call_ids: frozenset[str], share: int, shares: int) -> list[dict[str, Any]]:
        """The updates held for the calls with these ids, and for every call in ``share`` of
        ``shares`` (by a stable hash of its id), oldest first.

        Calls nobody watches then go every ``shares`` flushes each, a ``shares``-th of them
        at every flush: a fleet of thousands costs the dashboard the same every second
        rather than one stall every few seconds, which a key pressed then waited behind.
        """
        due = [
            key
            for key in self._held
            if key[1] in call_ids or zlib.crc32(key[1].encode()) % shares == share
        ]
        return [event for key in due for event in self._held.pop(key).values()]

    def take_all(self) -> list[dict[str, Any]]:
        held, self._held = self._held, {}
        return [event for kinds in held.values() for event in kinds.values()]
