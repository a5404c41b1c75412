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


# Queued after a subscriber's last event when the bridge stops: its sender closes the socket
# with 1001 once everything before it has been sent.
GOODBYE = ""


class Subscriber:
    def __init__(self, name: str, queue_size: int = 2000) -> None:
        self.name = name
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.dropped = 0
        self.closed = False

    def say_goodbye(self) -> None:
        """Close once what is queued has been sent; a full queue loses its oldest event
        (already counted as lost by then) to make room."""
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(GOODBYE)


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
        self._gone = asyncio.Event()

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
        if not self.subscribers:
            self._gone.set()

    async def close_all(self) -> None:
        """Send every subscriber what it has queued, then close it with a WebSocket close
        handshake (1001): a supervisor sees the bridge go at once, and a TLS socket is not
        left waiting for the peer's close_notify. Returns when all have gone."""
        if not self.subscribers:
            return
        self._gone.clear()
        for subscriber in self.subscribers:
            subscriber.say_goodbye()
        await self._gone.wait()
