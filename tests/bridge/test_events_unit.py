"""The event hub with plain calls: fan-out, bounded queues, slow subscribers cut off."""

from __future__ import annotations

import json

import pytest

from xswarm.bridge.events import EventHub, Subscriber
from xswarm.protocol import control
from xswarm.protocol.control import (
    CallEnded,
    CallStarted,
    CallStats,
    Counters,
    InstanceStatus,
    Text,
)


def stats(n: int) -> CallStats:
    """A numbered event: its ``frames_in`` tells the order it was published in."""
    return CallStats("c-1", counters=Counters(frames_in=n))


def drain(subscriber: Subscriber) -> list[dict[str, object]]:
    events = []
    while not subscriber.queue.empty():
        events.append(json.loads(subscriber.queue.get_nowait()))
    return events


def test_every_subscriber_gets_each_event_in_order_with_type_time_and_instance() -> None:
    hub = EventHub("voice@2")
    first, second = Subscriber("a"), Subscriber("b")
    hub.add(first)
    hub.add(second)
    hub.publish(CallStarted("c-1"))
    hub.publish(CallEnded("c-1", reason="caller_hangup"))
    for subscriber in (first, second):
        started, ended = drain(subscriber)
        assert started["type"] == "call_started" and started["call_id"] == "c-1"
        assert started["instance"] == "voice@2"
        assert isinstance(started["ts"], str) and started["ts"].endswith("Z")
        assert ended["type"] == "call_ended" and ended["reason"] == "caller_hangup"
    assert hub.dropped_total == 0


def test_a_removed_subscriber_gets_nothing_more() -> None:
    hub = EventHub("voice")
    subscriber = Subscriber("a")
    hub.add(subscriber)
    hub.remove(subscriber)
    hub.publish(Text("c-1", "hi"))
    assert subscriber.queue.empty()
    hub.remove(subscriber)  # removing twice is harmless


def test_a_full_queue_drops_new_events_and_counts_them_without_blocking() -> None:
    hub = EventHub("voice")
    slow, fast = Subscriber("slow", queue_size=3), Subscriber("fast")
    hub.add(slow)
    hub.add(fast)
    for n in range(5):
        hub.publish(stats(n))
    assert [event["frames_in"] for event in drain(slow)] == [0, 1, 2]
    assert [event["frames_in"] for event in drain(fast)] == [0, 1, 2, 3, 4]
    assert slow.dropped == 2 and fast.dropped == 0
    assert hub.dropped_total == 2
    assert not slow.closed


def test_a_subscriber_that_lost_too_many_events_is_closed_and_then_skipped() -> None:
    hub = EventHub("voice")
    hub.MAX_DROPPED = 2
    stuck, healthy = Subscriber("stuck", queue_size=1), Subscriber("healthy")
    hub.add(stuck)
    hub.add(healthy)
    for n in range(4):  # 1 queued, 3 dropped: one past the limit
        hub.publish(stats(n))
    assert stuck.closed and stuck.dropped == 3
    stuck.queue.get_nowait()
    hub.publish(stats(4))
    assert stuck.queue.empty() and stuck.dropped == 3  # closed: no longer fed or counted
    assert hub.dropped_total == 3
    assert [event["frames_in"] for event in drain(healthy)] == [0, 1, 2, 3, 4]


def test_nothing_is_queued_or_counted_without_subscribers() -> None:
    hub = EventHub("voice")
    hub.publish(InstanceStatus(active_calls=0))
    assert hub.dropped_total == 0 and not hub.subscribers


def test_an_event_is_serialised_once_for_all_subscribers_and_not_at_all_for_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stamped: list[str] = []
    real_stamp = control.stamp

    def counting_stamp(event: control.Event, ts: str, instance: str) -> dict[str, object]:
        stamped.append(event.TYPE)
        return real_stamp(event, ts, instance)

    monkeypatch.setattr(control, "stamp", counting_stamp)
    hub = EventHub("voice")
    hub.publish(Text("c-1", "nobody listens"))
    assert stamped == []
    subscribers = [Subscriber(str(n)) for n in range(3)]
    for subscriber in subscribers:
        hub.add(subscriber)
    hub.publish(Text("c-1", "hi"))
    assert stamped == ["text"]
    assert all(subscriber.queue.qsize() == 1 for subscriber in subscribers)
