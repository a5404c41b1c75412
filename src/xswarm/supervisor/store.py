"""Call history in SQLite: one file in the state directory, WAL, versioned migrations.

Durability rule: a call's end is in a committed transaction before operators are told about
it, with ``synchronous=FULL``, so neither a ``kill -9`` of the supervisor nor a power cut loses
a finished call that anyone has seen. Calls are also written when they start (with ``ended_at``
NULL), so a supervisor that restarts knows which calls it never saw end. A fleet starts and
ends calls many times a second, and each commit waits for the disk: ``record_calls`` writes a
group of them in one transaction (the hub holds their events until it returns).

The schema version lives in ``PRAGMA user_version``; ``MIGRATIONS`` is an ordered list and each
step runs in one transaction with the version bump, so a crash mid-migration leaves the old
version intact. A database newer than this code refuses to open rather than guess.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from xswarm.errors import StartupError
from xswarm.protocol import control
from xswarm.protocol.values import BadMessage, text
from xswarm.supervisor.fleet import CallRecord, LiveCall

log = logging.getLogger("xswarm.supervisor.store")

DB_NAME = "xswarm.db"

HISTORY_COLUMNS = (
    "call_id",
    "instance",
    "transport",
    "remote",
    "caller",
    "started_at",
    "ended_at",
    "duration_s",
    "reason",
    "frames_in",
    "frames_out",
    "late_frames",
    "suggestions",
)


def _v1(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE calls (
            id INTEGER PRIMARY KEY,
            call_id TEXT NOT NULL,
            instance TEXT NOT NULL,
            transport TEXT,
            remote TEXT,
            caller TEXT,
            started_at TEXT,
            ended_at TEXT,
            duration_s REAL,
            reason TEXT,
            frames_in INTEGER,
            frames_out INTEGER,
            late_frames INTEGER
        )"""
    )


def _v2(db: sqlite3.Connection) -> None:
    """Suggestion counts and Twilio ids per call; at most one *open* row per call.

    Only open rows are unique: a bridge's call ids are unique within one process, so after a
    restart an id can come back, and the earlier finished record must stay.
    """
    db.execute("ALTER TABLE calls ADD COLUMN suggestions INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE calls ADD COLUMN stream_sid TEXT")
    db.execute("ALTER TABLE calls ADD COLUMN call_sid TEXT")
    db.execute(
        """DELETE FROM calls WHERE ended_at IS NULL AND id NOT IN
           (SELECT MAX(id) FROM calls WHERE ended_at IS NULL GROUP BY instance, call_id)"""
    )
    db.execute("CREATE UNIQUE INDEX calls_open ON calls (instance, call_id) WHERE ended_at IS NULL")
    db.execute("CREATE INDEX calls_by_end ON calls (ended_at)")


def _v3(db: sqlite3.Connection) -> None:
    """The carrier's view of each call (``carrier_status`` events), by the carrier's call id:
    the phone rings, and may be refused busy, before the bridge's call exists."""
    db.execute(
        """CREATE TABLE carrier_events (
            id INTEGER PRIMARY KEY,
            instance TEXT NOT NULL,
            call_sid TEXT NOT NULL,
            carrier TEXT,
            status TEXT,
            caller TEXT,
            callee TEXT,
            direction TEXT,
            duration_s INTEGER,
            answer TEXT,
            at TEXT
        )"""
    )
    db.execute("CREATE INDEX carrier_events_by_call ON carrier_events (call_sid)")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2, _v3]
# Carrier events kept per finished call the history keeps (a call reports about five).
CARRIER_EVENTS_PER_CALL = 8
CARRIER_COLUMNS = (
    "instance",
    "call_sid",
    "carrier",
    "status",
    "caller",
    "callee",
    "direction",
    "duration_s",
    "answer",
    "at",
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema up to ``target``; returns the version found before migrating."""
    found = int(db.execute("PRAGMA user_version").fetchone()[0])
    if found > len(MIGRATIONS):
        raise StartupError(
            f"call history schema version {found} is newer than this xswarm understands "
            f"({len(MIGRATIONS)}); run the newer release or restore a backup of the database"
        )
    for version in range(found + 1, target + 1):
        with db:
            db.execute("BEGIN IMMEDIATE")
            MIGRATIONS[version - 1](db)
            db.execute(f"PRAGMA user_version = {version}")
        log.info("call history schema migrated to version %d", version)
    return found


class Store:
    """The history database. All methods run on the caller's thread and commit before returning.

    ``commits`` counts the transactions that wrote calls: what grouping saves is countable.
    """

    def __init__(self, path: Path, history_limit: int) -> None:
        self.path = path
        self.history_limit = history_limit
        self._db = self._open(path)
        self.commits = 0
        self._finished = int(
            self._db.execute("SELECT COUNT(*) FROM calls WHERE ended_at IS NOT NULL").fetchone()[0]
        )
        self.prune()

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StartupError(
                f"cannot create the state directory {path.parent}: {exc.strerror}; "
                "set [paths] state_dir or $XSWARM_STATE_DIR to a writable folder"
            ) from None
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            migrate(db)
        except sqlite3.DatabaseError as exc:
            raise StartupError(
                f"cannot open the call history {path}: {exc}; move the file aside "
                "(a new one is created) or restore it from a backup"
            ) from None
        if os.name == "posix":
            try:
                os.chmod(path, 0o600)
            except OSError:
                pass
        return db

    def call_started(self, call: LiveCall) -> None:
        """Remember a live call so a restarted supervisor knows to look for its end."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._insert_start(call)
        self.commits += 1

    def call_ended(self, record: CallRecord) -> None:
        """Write one finished call in its own committed transaction, then trim the history."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._write_end(record)
        self.commits += 1

    def record_calls(
        self, changes: Sequence[LiveCall | CallRecord]
    ) -> list[tuple[LiveCall | CallRecord, Exception]]:
        """Write starts (``LiveCall``) and ends (``CallRecord``) in order, in one transaction.

        Returns the ones that could not be written, with why. One bad record must not cost the
        others: when the group fails it is rolled back and each is written on its own.
        """
        if not changes:
            return []
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                for change in changes:
                    self._write(change)
            self.commits += 1
            return []
        except sqlite3.Error:
            self._finished = int(
                self._db.execute(
                    "SELECT COUNT(*) FROM calls WHERE ended_at IS NOT NULL"
                ).fetchone()[0]
            )
        failed: list[tuple[LiveCall | CallRecord, Exception]] = []
        for change in changes:
            try:
                if isinstance(change, LiveCall):
                    self.call_started(change)
                else:
                    self.call_ended(change)
            except sqlite3.Error as exc:
                failed.append((change, exc))
        return failed

    def _write(self, change: LiveCall | CallRecord) -> None:
        if isinstance(change, LiveCall):
            self._insert_start(change)
        else:
            self._write_end(change)

    def _insert_start(self, call: LiveCall) -> None:
        self._db.execute(
            """INSERT INTO calls (call_id, instance, transport, remote, caller, started_at,
                   stream_sid, call_sid)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (instance, call_id) WHERE ended_at IS NULL DO NOTHING""",
            (
                call.call_id,
                call.instance,
                call.transport,
                call.remote,
                call.caller,
                call.started_at,
                call.stream_sid,
                call.call_sid,
            ),
        )

    def _write_end(self, record: CallRecord) -> None:
        """The call's row gets its end (or a row of its own); the history is trimmed."""
        values = (
            record.transport,
            record.remote,
            record.caller,
            record.started_at,
            record.ended_at,
            record.duration_s,
            record.reason,
            record.frames_in,
            record.frames_out,
            record.late_frames,
            record.suggestions,
            record.stream_sid,
            record.call_sid,
        )
        cur = self._db.execute(
            """UPDATE calls SET transport = COALESCE(?, transport),
                   remote = COALESCE(?, remote), caller = COALESCE(?, caller),
                   started_at = COALESCE(?, started_at), ended_at = ?, duration_s = ?,
                   reason = ?, frames_in = ?, frames_out = ?, late_frames = ?,
                   suggestions = ?, stream_sid = COALESCE(?, stream_sid),
                   call_sid = COALESCE(?, call_sid)
               WHERE instance = ? AND call_id = ? AND ended_at IS NULL""",
            (*values, record.instance, record.call_id),
        )
        if cur.rowcount == 0:
            # Its start was never seen (it began while nobody watched): a row of its own.
            self._db.execute(
                """INSERT INTO calls (transport, remote, caller, started_at, ended_at,
                       duration_s, reason, frames_in, frames_out, late_frames, suggestions,
                       stream_sid, call_sid, instance, call_id)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (*values, record.instance, record.call_id),
            )
        self._finished += 1
        self._trim()

    def carrier_status(self, instance: str, message: Mapping[str, Any]) -> None:
        """Record one ``carrier_status`` message from ``instance``; trims the oldest beyond
        the history's share. A carrier's report is advisory: one that cannot be decoded or
        stored is logged, never raised into the relay of the calls' own events."""
        try:
            event = control.decode_event(message).event
        except BadMessage as exc:
            log.warning("instance %s sent an unusable carrier_status: %s", instance, exc)
            return
        if not isinstance(event, control.CarrierStatus) or not event.call_sid:
            return
        values = (
            instance,
            event.call_sid[:64],
            event.carrier,
            event.status,
            event.caller,
            event.callee,
            event.direction,
            event.duration_s,
            event.answer,
            text(message.get("ts")),
        )
        keep = self.history_limit * CARRIER_EVENTS_PER_CALL
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    f"INSERT INTO carrier_events ({', '.join(CARRIER_COLUMNS)}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                )
                self._db.execute(
                    "DELETE FROM carrier_events "
                    "WHERE id <= (SELECT MAX(id) FROM carrier_events) - ?",
                    (keep,),
                )
        except sqlite3.Error:
            log.exception("could not record the carrier's status of call %s", event.call_sid)

    def carrier_events(self, call_sid: str) -> list[dict[str, Any]]:
        """What the carrier reported about one call, oldest first."""
        rows = self._db.execute(
            f"SELECT {', '.join(CARRIER_COLUMNS)} FROM carrier_events WHERE call_sid = ? "
            "ORDER BY id",
            (call_sid,),
        ).fetchall()
        return [dict(zip(CARRIER_COLUMNS, r, strict=True)) for r in rows]

    def _trim(self) -> None:
        excess = self._finished - self.history_limit
        if excess > 0:
            self._db.execute(
                """DELETE FROM calls WHERE id IN (SELECT id FROM calls
                   WHERE ended_at IS NOT NULL ORDER BY id LIMIT ?)""",
                (excess,),
            )
            self._finished -= excess

    def prune(self) -> None:
        """Apply the history limit now (at start-up and after a reload lowers it)."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._trim()

    def open_calls(self) -> list[LiveCall]:
        """Calls that started but whose end was never recorded."""
        rows = self._db.execute(
            """SELECT call_id, instance, transport, remote, caller, started_at, stream_sid,
                   call_sid FROM calls WHERE ended_at IS NULL ORDER BY id"""
        ).fetchall()
        return [
            LiveCall(
                call_id=r[0],
                instance=r[1],
                transport=r[2],
                remote=r[3],
                caller=r[4],
                started_at=r[5],
                stream_sid=r[6],
                call_sid=r[7],
            )
            for r in rows
        ]

    def history(self, limit: int) -> list[dict[str, Any]]:
        """Finished calls, newest first."""
        rows = self._db.execute(
            f"SELECT {', '.join(HISTORY_COLUMNS)} FROM calls WHERE ended_at IS NOT NULL "
            "ORDER BY ended_at DESC, id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [dict(zip(HISTORY_COLUMNS, r, strict=True)) for r in rows]

    def finished_count(self) -> int:
        return self._finished

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close; idempotent."""
        if self._db is None:
            return
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.DatabaseError as exc:
            log.warning("could not checkpoint %s on close: %s", self.path, exc)
        self._db.close()
        self._db = None  # type: ignore[assignment]
