"""Fan-out of bridge events to control subscribers, never blocking the calls.

Each subscriber has a bounded queue. ``publish`` only does ``put_nowait``: a subscriber that
stops reading loses events (counted) and is closed once it has lost too many, so a stuck
supervisor can neither grow our memory nor slow a single audio frame.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime

from xswarm.protocol import control


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Subscriber:
    def __init__(self, name: str, queue_size: int = 2000) -> None:
        self.name = name
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.dropped = 0
        self.closed = False


class EventHub:
    # A subscriber this far behind is cut off: whatever it shows is no longer live.
    MAX_DROPPED = 5000

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.subscribers: set[Subscriber] = set()
        self.dropped_total = 0
        # Refused /control upgrades by reason: "source" (control_allow), "token", "host"
        # (a foreign Host or Origin), "throttled".
        self.refused: Counter[str] = Counter()

    def message(self, event: control.Event) -> str:
        """The event as the bridge sends it: stamped with the time and this instance."""
        return json.dumps(control.stamp(event, utc_now(), self.instance))

    def publish(self, event: control.Event) -> None:
        """Serialised once for every subscriber, and not at all when nobody listens."""
        if not self.subscribers:
            return
        text = self.message(event)
        for subscriber in self.subscribers:
            if subscriber.closed:
                continue
            try:
                subscriber.queue.put_nowait(text)
            except asyncio.QueueFull:
                subscriber.dropped += 1
                self.dropped_total += 1
                if subscriber.dropped > self.MAX_DROPPED:
                    subscriber.closed = True

    def add(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)

    def remove(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
