"""The call history on real SQLite files: migrations, durability rules, limits."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from xswarm.errors import StartupError
from xswarm.supervisor.fleet import CallRecord, LiveCall
from xswarm.supervisor.store import MIGRATIONS, SCHEMA_VERSION, Store, migrate


def record(call_id: str, ended_at: str = "2027-01-15T08:00:10.000Z", **kw: object) -> CallRecord:
    fields: dict = dict(
        call_id=call_id,
        instance="a",
        transport="twilio",
        remote="1.2.3.4",
        caller="+1555",
        started_at="2027-01-15T08:00:00.000Z",
        ended_at=ended_at,
        duration_s=10.0,
        reason="caller_hangup",
        frames_in=500,
        frames_out=498,
        late_frames=1,
        suggestions=2,
    )
    fields.update(kw)
    return CallRecord(**fields)


def test_a_new_database_is_at_the_latest_version_in_wal_mode(tmp_path: Path) -> None:
    store = Store(tmp_path / "state" / "xswarm.db", history_limit=100)
    store.close()
    db = sqlite3.connect(tmp_path / "state" / "xswarm.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert oct((tmp_path / "state").stat().st_mode & 0o777) == oct(0o700)
    db.close()


def test_migrating_from_version_1_keeps_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "xswarm.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, target=1)
    db.execute(
        "INSERT INTO calls (call_id, instance, ended_at, reason) "
        "VALUES ('c1', 'a', '2026-01-01T00:00:00.000Z', 'caller_hangup')"
    )
    db.execute(
        "INSERT INTO calls (call_id, instance, ended_at, reason) "
        "VALUES ('c1', 'a', '2026-01-01T00:00:05.000Z', 'shutdown')"
    )
    db.execute("INSERT INTO calls (call_id, instance) VALUES ('c2', 'a')")
    db.execute("INSERT INTO calls (call_id, instance, caller) VALUES ('c2', 'a', '+1')")
    db.close()
    store = Store(path, history_limit=100)
    history = store.history(10)
    assert [(h["call_id"], h["reason"], h["suggestions"]) for h in history] == [
        ("c1", "shutdown", 0),
        ("c1", "caller_hangup", 0),
    ]
    assert [(c.call_id, c.caller) for c in store.open_calls()] == [("c2", "+1")]
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "xswarm.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    db.close()
    with pytest.raises(StartupError, match="newer than this xswarm understands"):
        Store(path, history_limit=100)


def test_a_corrupt_file_is_a_startup_error(tmp_path: Path) -> None:
    path = tmp_path / "xswarm.db"
    path.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(StartupError, match="cannot open the call history"):
        Store(path, history_limit=100)


def test_start_then_end_updates_one_row(tmp_path: Path) -> None:
    store = Store(tmp_path / "xswarm.db", history_limit=100)
    store.call_started(
        LiveCall(
            call_id="c1",
            instance="a",
            transport="twilio",
            caller="+1555",
            started_at="2027-01-15T08:00:00.000Z",
            stream_sid="MZ1",
        )
    )
    store.call_started(LiveCall(call_id="c1", instance="a"))
    assert [c.caller for c in store.open_calls()] == ["+1555"]
    store.call_ended(record("c1", caller=None, transport=None))
    assert store.open_calls() == []
    (row,) = store.history(10)
    assert row["caller"] == "+1555" and row["transport"] == "twilio"
    assert row["reason"] == "caller_hangup" and row["suggestions"] == 2
    store.close()


def test_an_end_without_a_start_still_gets_recorded(tmp_path: Path) -> None:
    store = Store(tmp_path / "xswarm.db", history_limit=100)
    store.call_ended(record("c7"))
    assert [(h["call_id"], h["reason"]) for h in store.history(10)] == [("c7", "caller_hangup")]
    store.close()


def test_a_call_id_reused_by_a_restarted_bridge_keeps_both_records(tmp_path: Path) -> None:
    store = Store(tmp_path / "xswarm.db", history_limit=100)
    store.call_started(LiveCall(call_id="c1", instance="a", caller="first"))
    store.call_ended(record("c1", caller=None, ended_at="2027-01-15T08:00:10.000Z"))
    store.call_started(LiveCall(call_id="c1", instance="a", caller="second"))
    assert [c.caller for c in store.open_calls()] == ["second"]
    store.call_ended(
        record("c1", caller=None, ended_at="2027-01-15T09:00:10.000Z", reason="operator_hangup")
    )
    assert [(h["caller"], h["reason"]) for h in store.history(10)] == [
        ("second", "operator_hangup"),
        ("first", "caller_hangup"),
    ]
    store.close()


def test_history_is_newest_first_and_trimmed_to_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "xswarm.db"
    store = Store(path, history_limit=10)
    store.call_started(LiveCall(call_id="live", instance="a"))
    for n in range(15):
        store.call_ended(record(f"c{n:02}", ended_at=f"2027-01-15T08:{n:02}:00.000Z"))
    history = store.history(1000)
    assert [h["call_id"] for h in history] == [f"c{n:02}" for n in range(14, 4, -1)]
    assert store.finished_count() == 10
    assert [c.call_id for c in store.open_calls()] == ["live"]
    store.close()
    smaller = Store(path, history_limit=10)
    smaller.history_limit = 3
    smaller.prune()
    assert [h["call_id"] for h in smaller.history(1000)] == ["c14", "c13", "c12"]
    smaller.close()


def test_a_finished_call_is_on_disk_before_call_ended_returns(tmp_path: Path) -> None:
    path = tmp_path / "xswarm.db"
    store = Store(path, history_limit=100)
    store.call_ended(record("c1"))
    other = sqlite3.connect(path)
    assert other.execute("SELECT reason FROM calls WHERE call_id = 'c1'").fetchone() == (
        "caller_hangup",
    )
    assert other.execute("PRAGMA synchronous").fetchone() is not None
    other.close()
    store.close()
    store.close()


def test_hostile_text_is_stored_verbatim(tmp_path: Path) -> None:
    store = Store(tmp_path / "xswarm.db", history_limit=100)
    evil = "'); DROP TABLE calls; -- [/] \x00 \u202e"
    store.call_ended(record(evil, caller=evil))
    (row,) = store.history(1)
    assert row["call_id"] == evil and row["caller"] == evil
    store.close()
