"""Per-call updates reach batching operators coalesced; events that cannot wait keep order.

The hub is driven with plain calls (no upstream, no sockets): operators are fakes whose
queues the test reads, and flushes happen when the test says, not on a timer.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from xswarm.protocol.operator import Watch
from xswarm.supervisor.batching import Coalescer
from xswarm.supervisor.hub import BACKGROUND_FLUSHES, MAX_BATCH_EVENTS, Operator, OperatorHub
from xswarm.supervisor.store import Store


class FakeSocket:
    closed = False

    async def close(self, **_: Any) -> None:
        self.closed = True


def stats(call_id: str, n: int, instance: str = "a") -> dict[str, Any]:
    return {
        "type": "call_stats",
        "ts": f"2027-01-15T08:00:{n:02d}.000Z",
        "instance": instance,
        "call_id": call_id,
        "latency_p99_ms": 10.0 + n,
        "frames_in": 50 * n,
    }


def ended(call_id: str) -> dict[str, Any]:
    return {"type": "call_ended", "instance": "a", "call_id": call_id, "reason": "caller_hangup"}


def sent(op: Operator) -> list[dict[str, Any]]:
    out = []
    while not op.queue.empty():
        out.append(json.loads(op.queue.get_nowait()))
    return out


async def hub_with(tmp_path: Path, *batched: bool) -> tuple[OperatorHub, list[Operator]]:
    hub = OperatorHub(Store(tmp_path / "x.db", 100), stale_after=2.0, token=None)
    ops = [
        Operator(FakeSocket(), f"op{n}", subscribed=True, batched=b) for n, b in enumerate(batched)
    ]  # type: ignore[arg-type]
    hub.operators.update(ops)
    return hub, ops


async def test_stats_for_one_call_within_an_interval_go_out_once_with_the_last_values(
    tmp_path: Path,
) -> None:
    hub, (op,) = await hub_with(tmp_path, True)
    for n in range(10):
        hub.broadcast(stats("c1", n))
    hub.broadcast(stats("c2", 3))
    assert sent(op) == [], "held until the flush"
    hub.flush_batches()
    (batch,) = sent(op)
    assert batch["type"] == "batch"
    assert batch["events"] == [stats("c1", 9), stats("c2", 3)]
    hub.flush_batches()
    assert sent(op) == [], "nothing held, nothing sent"


async def test_call_ended_brings_its_calls_held_stats_first_and_leaves_the_others(
    tmp_path: Path,
) -> None:
    hub, (op,) = await hub_with(tmp_path, True)
    hub.broadcast(stats("c1", 1))
    hub.broadcast(stats("c1", 2))
    hub.broadcast(stats("c2", 1))
    hub.broadcast(ended("c1"))
    (batch,) = sent(op)
    assert batch["type"] == "batch"
    assert batch["events"] == [stats("c1", 2), ended("c1")]
    hub.broadcast(ended("c3"))
    assert sent(op) == [ended("c3")], "nothing held for it: sent alone, at once"
    hub.flush_batches()
    (rest,) = sent(op)
    assert rest["events"] == [stats("c2", 1)]


async def test_plain_subscribers_still_get_every_event_as_it_happens(tmp_path: Path) -> None:
    hub, (plain, batching) = await hub_with(tmp_path, False, True)
    for n in range(3):
        hub.broadcast(stats("c1", n))
    hub.broadcast(ended("c1"))
    assert sent(plain) == [stats("c1", 0), stats("c1", 1), stats("c1", 2), ended("c1")]
    (batch,) = sent(batching)
    assert batch["events"] == [stats("c1", 2), ended("c1")]


async def test_calls_nobody_watches_come_every_few_flushes_merged(tmp_path: Path) -> None:
    hub, (op,) = await hub_with(tmp_path, True)
    hub.watch(op, Watch(("c1",)))
    others = [f"other-{n}" for n in range(100)]
    flushes = []
    for n in range(2 * BACKGROUND_FLUSHES):
        for call_id in ("c1", *others):
            hub.broadcast(stats(call_id, n))
        hub.flush_batches()
        flushes.append([e for b in sent(op) for e in b["events"]])
    assert [[e for e in f if e["call_id"] == "c1"] for f in flushes] == [
        [stats("c1", n)] for n in range(2 * BACKGROUND_FLUSHES)
    ], "watched: every flush"
    for call_id in others:
        went = [n for n, f in enumerate(flushes) for e in f if e["call_id"] == call_id]
        assert len(went) == 2 and went[1] - went[0] == BACKGROUND_FLUSHES, call_id
        first = next(e for e in flushes[went[0]] if e["call_id"] == call_id)
        assert first == stats(call_id, went[0]), "merged: the last values when it went"
    sizes = [len(f) - 1 for f in flushes]
    assert sum(sizes) == 2 * len(others)
    assert max(sizes) < len(others) / 2, f"spread over the flushes, not all at once: {sizes}"


async def test_a_call_nobody_watches_waits_at_most_the_background_interval(
    tmp_path: Path,
) -> None:
    hub, (op,) = await hub_with(tmp_path, True)
    hub.watch(op, Watch(()))
    hub.broadcast(stats("c2", 0))
    went = []
    for flush in range(1, 2 * BACKGROUND_FLUSHES + 1):
        hub.flush_batches()
        went += [flush for _ in sent(op)]
    assert len(went) == 1 and went[0] <= BACKGROUND_FLUSHES, went


async def test_one_operator_watching_everything_gets_every_call_every_flush(
    tmp_path: Path,
) -> None:
    hub, (narrow, everything) = await hub_with(tmp_path, True, True)
    hub.watch(narrow, Watch(("c1",)))
    hub.broadcast(stats("c1", 1))
    hub.broadcast(stats("c2", 1))
    hub.flush_batches()
    for op in (narrow, everything):
        (batch,) = sent(op)
        assert batch["events"] == [stats("c1", 1), stats("c2", 1)]
        assert batch["background_s"] == hub.background_s


async def test_a_large_flush_is_split_into_bounded_batches(tmp_path: Path) -> None:
    hub, (op,) = await hub_with(tmp_path, True)
    calls = MAX_BATCH_EVENTS * 2 + 1
    for n in range(calls):
        hub.broadcast(stats(f"c{n}", 1))
    hub.flush_batches()
    batches = sent(op)
    assert [len(b["events"]) for b in batches] == [MAX_BATCH_EVENTS, MAX_BATCH_EVENTS, 1]
    assert [e["call_id"] for b in batches for e in b["events"]] == [f"c{n}" for n in range(calls)]


async def test_the_hub_flushes_on_its_own_every_interval(tmp_path: Path) -> None:
    hub = OperatorHub(
        Store(tmp_path / "x.db", 100), stale_after=2.0, token=None, batch_interval=0.05
    )
    op = Operator(FakeSocket(), "op", subscribed=True, batched=True)  # type: ignore[arg-type]
    hub.operators.add(op)
    await hub.start([])
    try:
        hub.broadcast(stats("c1", 1))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if not op.queue.empty():
                break
        assert [b["events"] for b in sent(op)] == [[stats("c1", 1)]]
    finally:
        await hub.close()


def test_coalescer_merges_stats_joins_text_and_keeps_the_last_speech() -> None:
    held = Coalescer()
    first = {"type": "call_stats", "instance": "a", "call_id": "c1", "frames_in": 5, "cpu": 1}
    assert held.hold(first)
    assert held.hold({"type": "call_stats", "instance": "a", "call_id": "c1", "frames_in": 9})
    assert held.hold({"type": "text", "instance": "a", "call_id": "c1", "text": "hel"})
    assert held.hold({"type": "text", "instance": "a", "call_id": "c1", "text": "lo"})
    assert held.hold({"type": "user_speech", "instance": "a", "call_id": "c1", "duration_ms": 1})
    assert held.hold({"type": "user_speech", "instance": "a", "call_id": "c1", "duration_ms": 2})
    assert not held.hold({"type": "call_ended", "instance": "a", "call_id": "c1"})
    assert not held.hold({"type": "call_stats", "call_id": "c1"}), "no instance: not a call's"
    assert first["frames_in"] == 5, "what was held is not changed in place"
    assert held.take_all() == [
        {"type": "call_stats", "instance": "a", "call_id": "c1", "frames_in": 9, "cpu": 1},
        {"type": "text", "instance": "a", "call_id": "c1", "text": "hello"},
        {"type": "user_speech", "instance": "a", "call_id": "c1", "duration_ms": 2},
    ]
    assert len(held) == 0


def test_coalescer_keeps_calls_of_different_instances_apart() -> None:
    held = Coalescer()
    held.hold(stats("c1", 1, instance="a"))
    held.hold(stats("c1", 2, instance="b"))
    assert held.take_call(("b", "c1")) == [stats("c1", 2, instance="b")]
    assert held.take_call(("b", "c1")) == []
    assert held.take_all() == [stats("c1", 1, instance="a")]
