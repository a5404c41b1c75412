"""Call starts and ends are committed in groups, and grouping loses nothing an operator saw.

The hub is driven with a bridge's messages as plain calls (no upstream socket); what counts
is the real SQLite file, read back by a second ``Store`` as a restarted supervisor would.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from xswarm.protocol import control
from xswarm.supervisor.fleet import CallRecord, LiveCall
from xswarm.supervisor.hub import COMMIT_GROUP_S, Operator, OperatorHub
from xswarm.supervisor.store import Store

TS = "2027-01-15T08:00:00.000Z"


class FakeSocket:
    closed = False

    async def close(self, **_: Any) -> None:
        self.closed = True


def started(call_id: str) -> dict[str, Any]:
    return control.stamp(control.CallStarted(call_id, transport="twilio"), TS, "bridge")


def ended(call_id: str) -> dict[str, Any]:
    event = control.CallEnded(call_id, duration_s=3.0, reason="caller_hangup")
    return control.stamp(event, TS, "bridge")


def record(call_id: str, reason: Any) -> CallRecord:
    return CallRecord(call_id, "a", None, None, None, None, TS, 1.0, reason, 0, 0, 0, 0)


def hub_on(path: Path) -> tuple[OperatorHub, Operator]:
    hub = OperatorHub(Store(path, history_limit=1000), stale_after=2.0, token=None)
    hub.fleet.add_instance("a", "ws://127.0.0.1:1/control")
    op = Operator(FakeSocket(), "op", subscribed=True)  # type: ignore[arg-type]
    hub.operators.add(op)
    return hub, op


def sent_types(op: Operator) -> list[tuple[str, str | None]]:
    out = []
    while not op.queue.empty():
        event = json.loads(op.queue.get_nowait())
        out.append((event["type"], event.get("call_id")))
    return out


def on_disk(path: Path) -> tuple[set[str], set[str]]:
    """(ended call ids, open call ids) as a supervisor restarted on ``path`` finds them."""
    store = Store(path, history_limit=1000)
    try:
        ended_ids = {row["call_id"] for row in store.history(10_000)}
        open_ids = {call.call_id for call in store.open_calls()}
    finally:
        store.close()
    return ended_ids, open_ids


async def test_a_burst_of_starts_and_ends_is_one_commit_and_events_follow_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "xswarm.db"
    hub, op = hub_on(path)
    commits = hub.store.commits
    for n in range(50):
        hub._upstream_message("a", started(f"c{n}"))
    for n in range(25):
        hub._upstream_message("a", ended(f"c{n}"))
    assert sent_types(op) == [], "nothing is shown before it is committed"
    assert hub.store.commits == commits
    await asyncio.sleep(COMMIT_GROUP_S * 3)
    assert hub.store.commits == commits + 1, "75 starts and ends, one transaction"
    shown = sent_types(op)
    assert shown == [("call_started", f"c{n}") for n in range(50)] + [
        ("call_ended", f"c{n}") for n in range(25)
    ], "every event, in the order the bridge sent them"
    assert hub.counters.calls_recorded == 25
    assert on_disk(path) == ({f"c{n}" for n in range(25)}, {f"c{n}" for n in range(25, 50)})
    await hub.close()
    hub.store.close()


async def test_what_is_held_at_shutdown_is_committed_by_close(tmp_path: Path) -> None:
    path = tmp_path / "xswarm.db"
    hub, op = hub_on(path)
    for n in range(10):
        hub._upstream_message("a", started(f"c{n}"))
    for n in range(4):
        hub._upstream_message("a", ended(f"c{n}"))
    await hub.close()  # well before COMMIT_GROUP_S: the group is still held
    hub.store.close()
    assert on_disk(path) == ({"c0", "c1", "c2", "c3"}, {f"c{n}" for n in range(4, 10)})
    assert [kind for kind, _ in sent_types(op)] == ["call_started"] * 10 + ["call_ended"] * 4


async def test_a_record_that_cannot_be_written_costs_only_itself(tmp_path: Path) -> None:
    path = tmp_path / "xswarm.db"
    store = Store(path, history_limit=1000)
    good = record("good", "done")
    # A value sqlite3 cannot bind fails the group; the others are written one by one.
    bad = record("bad", object())
    failed = store.record_calls([LiveCall(call_id="live", instance="a"), good, bad])
    assert [(change.call_id, type(exc)) for change, exc in failed] == [
        ("bad", sqlite3.ProgrammingError)
    ]
    assert store.finished_count() == 1
    store.close()
    assert on_disk(path) == ({"good"}, {"live"})
