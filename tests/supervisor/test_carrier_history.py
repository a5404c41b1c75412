"""Issue 10 item 1: the carrier's view of each call (``carrier_status``) in the history."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from xswarm.protocol import control
from xswarm.supervisor.hub import OperatorHub
from xswarm.supervisor.store import CARRIER_EVENTS_PER_CALL, Store

SID = "CA" + "1" * 32


def message(status: str, call_sid: str = SID, **fields: object) -> dict[str, object]:
    event = control.CarrierStatus(call_sid=call_sid, carrier="twilio", status=status)
    return control.stamp(event, "2027-01-15T08:00:00.000Z", "bridge") | fields


def test_a_bridges_carrier_status_is_stored_through_the_hub(tmp_path: Path) -> None:
    store = Store(tmp_path / "xswarm.db", history_limit=100)
    hub = OperatorHub(store, stale_after=2.0, token=None)
    hub.fleet.add_instance("voice-1", "ws://127.0.0.1:1/control")
    hub._upstream_message("voice-1", message("ringing", caller="+14155550100", answer="stream"))
    hub._upstream_message("voice-1", message("completed", duration_s=42))
    rows = store.carrier_events(SID)
    assert [(r["instance"], r["status"]) for r in rows] == [
        ("voice-1", "ringing"),
        ("voice-1", "completed"),
    ]
    assert rows[0]["caller"] == "+14155550100" and rows[0]["answer"] == "stream"
    assert rows[1]["duration_s"] == 42 and rows[1]["at"] == "2027-01-15T08:00:00.000Z"
    store.close()


def test_unusable_reports_are_skipped_and_old_ones_trimmed(tmp_path: Path) -> None:
    store = Store(tmp_path / "xswarm.db", history_limit=2)
    store.carrier_status("a", {"type": "carrier_status", "call_sid": 7, "status": "ringing"})
    store.carrier_status("a", {"type": 3})
    assert store.carrier_events("7") == []
    keep = 2 * CARRIER_EVENTS_PER_CALL
    for n in range(keep + 5):
        store.carrier_status("a", message("ringing", call_sid=f"CA{n}"))
    store.close()
    db = sqlite3.connect(tmp_path / "xswarm.db")
    sids = [row[0] for row in db.execute("SELECT call_sid FROM carrier_events ORDER BY id")]
    assert sids == [f"CA{n}" for n in range(5, keep + 5)]
