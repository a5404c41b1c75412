"""The dashboard's pure state: plain calls, no Textual, no sockets."""

from __future__ import annotations

import math

import pytest

from tests.tui.data import FakeClock, call, instance, sample_model, sample_snapshot, stats
from xswarm.tui import model as model_module
from xswarm.tui.model import HISTORY_POINTS, DashboardModel, format_bytes, format_duration


def fresh(clock: FakeClock | None = None) -> DashboardModel:
    model = DashboardModel(clock=clock or FakeClock(), wall=lambda: 0.0)
    model.set_connection("up", "ok")
    return model


def test_snapshot_replaces_state_instead_of_merging() -> None:
    model = fresh()
    model.apply_snapshot(sample_snapshot())
    model.apply({"type": "call_started", "call_id": "c-late", "instance": "voice"})
    assert "c-late" in model.calls
    model.apply_snapshot(
        {
            "type": "snapshot",
            "instances": [instance("other")],
            "calls": [call("c-9", instance="other")],
        }
    )
    assert list(model.calls) == ["c-9"]
    assert list(model.instances) == ["other"]
    assert model.take_changes().reset


def test_a_call_keeps_the_last_history_points_of_each_figure() -> None:
    model = fresh(FakeClock())
    model.apply_snapshot({"type": "snapshot", "instances": [instance()], "calls": [call("c-1")]})
    for step in range(1, HISTORY_POINTS + 11):
        model.apply(stats("c-1", step) | {"latency_p99_ms": float(step)})
    history = model.calls["c-1"].latency_p99_history
    assert list(history) == [float(step) for step in range(11, HISTORY_POINTS + 11)]


def test_call_lifecycle_stats_history_and_linger() -> None:
    clock = FakeClock()
    model = fresh(clock)
    model.take_changes()
    model.apply(
        {
            "type": "call_started",
            "ts": "2026-11-26T05:00:00.000Z",
            "instance": "voice",
            "call_id": "c-1",
            "transport": "twilio",
            "remote": "10.0.0.1:5",
            "caller": "+1",
        }
    )
    for step in (1, 2, 3):
        model.apply(stats("c-1", step))
    live = model.calls["c-1"]
    assert live.state == "active"
    assert live.duration_s == 3.0
    assert list(live.latency_p50_history) == [47.0, 54.0, 61.0]
    assert model.take_changes().calls == {"c-1"}
    model.apply(
        {
            "type": "call_ended",
            "call_id": "c-1",
            "instance": "voice",
            "duration_s": 3.2,
            "reason": "operator_hangup",
            "frames_in": 160,
            "frames_out": 160,
            "late_frames": 0,
        }
    )
    assert live.shown_state == "ended: operator_hangup"
    model.prune()
    assert "c-1" in model.calls, "an ended call stays visible for a moment"
    clock.advance(model_module.ENDED_LINGER_S)
    model.prune()
    assert "c-1" not in model.calls
    assert "c-1" in model.take_changes().removed
    kinds = [e.kind for e in model.events]
    assert kinds == ["call_started", "call_ended"], "1 Hz stats stay out of the events pane"
    assert [e.kind for e in live.events] == ["call_started", "call_ended"]


@pytest.mark.parametrize(
    "message",
    [
        {"type": 5},
        {"no": "type"},
        {"type": "call_stats", "call_id": ["a list"]},
        {
            "type": "call_stats",
            "call_id": "c-1",
            "latency_p50_ms": "fast",
            "level_in_dbfs": float("nan"),
            "late_frames": True,
            "duration_s": math.inf,
        },
        {"type": "call_started", "call_id": "c-2", "caller": 12345, "transport": None},
        {
            "type": "instance_status",
            "instance": "voice",
            "cpu": "lots",
            "limits": "none",
            "rss": -1e400,
        },
        {"type": "instance_state", "instance": "voice", "state": "exploded"},
        {"type": "text", "call_id": "c-1", "text": {"not": "text"}},
        {"type": "snapshot_of_nothing"},
    ],
)
def test_hostile_messages_are_absorbed(message: dict) -> None:
    model = fresh()
    model.apply_snapshot(sample_snapshot())
    model.apply(message)
    for c in model.calls.values():
        for value in (c.latency_p50_ms, c.level_in_dbfs, c.duration_s):
            assert value is None or math.isfinite(value)
        assert isinstance(c.caller, str)
        assert c.late_frames is None or isinstance(c.late_frames, int)
    assert all(i.state in model_module.INSTANCE_STATES for i in model.instances.values())


def test_snapshot_with_junk_entries_keeps_the_good_ones() -> None:
    model = fresh()
    model.apply_snapshot(
        {
            "type": "snapshot",
            "instances": "nope",
            "calls": [None, 3, "c-x", {"call_id": ""}, call("c-ok")],
        }
    )
    assert list(model.calls) == ["c-ok"]
    assert model.instances == {}


def test_remote_text_is_clipped_and_printable() -> None:
    model = fresh()
    model.apply(
        {"type": "call_started", "call_id": "c-1", "caller": "\x1b[31m" + "9" * 10_000 + "\n\r\x00"}
    )
    caller = model.calls["c-1"].caller
    assert len(caller) <= model_module.MAX_TEXT
    assert caller.isprintable()
    model.apply({"type": "text", "call_id": "c-1", "text": "w" * 50_000})
    assert len(model.calls["c-1"].transcript) <= model_module.MAX_TRANSCRIPT


def test_filter_matches_id_caller_instance_and_transport_case_insensitively() -> None:
    model = sample_model()
    assert [c.call_id for c in model.visible_calls()] == ["c-0001", "c-0002", "c-0003", "c-0004"]
    for text, expected in [
        ("C-0003", ["c-0003"]),
        ("[/]", ["c-0002"]),
        ("MOSHI", ["c-0002"]),
        ("voice", ["c-0001", "c-0002", "c-0003", "c-0004"]),
        ("nobody", []),
    ]:
        model.set_filter(text)
        assert [c.call_id for c in model.visible_calls()] == expected, text


def test_sort_by_column_direction_and_missing_values_last() -> None:
    model = sample_model()
    model.apply({"type": "call_started", "call_id": "c-0005", "instance": "voice"})
    model.set_sort("latency_p99_ms")
    order = [c.call_id for c in model.visible_calls()]
    assert order[-1] == "c-0005", "a call with no figures yet sorts last"
    assert order[:4] == ["c-0003", "c-0001", "c-0004", "c-0002"]
    model.set_sort("latency_p99_ms")
    assert model.sort_reverse
    order = [c.call_id for c in model.visible_calls()]
    assert order[:4] == ["c-0002", "c-0004", "c-0001", "c-0003"]
    assert order[-1] == "c-0005", "still last when reversed"
    with pytest.raises(ValueError, match="unknown sort column"):
        model.set_sort("ssn")


def test_next_sort_cycles_columns_and_reverse_flips() -> None:
    model = sample_model()
    seen = []
    for _ in model_module.SORT_COLUMNS:
        model.next_sort()
        seen.append(model.sort_column)
    assert seen == list(model_module.SORT_COLUMNS)
    model.next_sort()
    assert model.sort_column == "call_id"
    model.reverse_sort()
    assert [c.call_id for c in model.visible_calls()][0] == "c-0004"


def test_sort_survives_live_updates() -> None:
    model = sample_model()
    model.set_sort("latency_p50_ms")
    model.apply(stats("c-0002", 1) | {"latency_p50_ms": 1.0})
    assert model.visible_calls()[0].call_id == "c-0002"
    model.apply(stats("c-0002", 1) | {"latency_p50_ms": 999.0})
    assert model.visible_calls()[-1].call_id == "c-0002"


def test_instance_down_makes_its_calls_stale_and_status_brings_it_back() -> None:
    model = sample_model()
    model.take_changes()
    model.apply(
        {
            "type": "instance_state",
            "instance": "voice",
            "state": "down",
            "reason": "connection refused",
        }
    )
    assert model.instances["voice"].state == "down"
    assert model.instances["voice"].error == "connection refused"
    assert all(model.call_is_stale(c) for c in model.calls.values())
    assert model.take_changes().calls == set(model.calls)
    model.apply(
        {
            "type": "instance_status",
            "instance": "voice",
            "state": "ready",
            "active_calls": 1,
            "cpu": 5.0,
        }
    )
    assert model.instances["voice"].state == "up"
    assert not any(model.call_is_stale(c) for c in model.calls.values())
    model.set_connection("down", "lost")
    assert all(model.call_is_stale(c) for c in model.calls.values())


def test_instance_state_carries_the_supervisors_view_and_removal_drops_it() -> None:
    model = sample_model()
    model.apply(
        {
            "type": "instance_state",
            "instance": "voice",
            "state": "up",
            "reason": "connected",
            "info": instance(restarts=2, pid=5151, name="ignored"),
        }
    )
    assert model.instances["voice"].restarts == 2
    assert model.instances["voice"].pid == 5151
    model.apply({"type": "instance_removed", "instance": "voice@2"})
    assert list(model.instances) == ["voice"]


def test_a_call_of_a_lost_instance_is_unknown_until_it_reports_again() -> None:
    model = fresh()
    model.apply_snapshot(
        {
            "type": "snapshot",
            "instances": [instance(state="down")],
            "calls": [call("c-1", state="unknown", suggestions=2)],
        }
    )
    assert model.calls["c-1"].shown_state == "unknown"
    assert model.calls["c-1"].suggestions == 2
    model.apply({"type": "suggestion_applied", "call_id": "c-1", "text": "x"})
    assert model.calls["c-1"].suggestions == 3
    model.apply(stats("c-1", 4))
    assert model.calls["c-1"].shown_state == "active"


def test_hangup_request_shows_until_the_call_ends() -> None:
    model = sample_model()
    model.request_hangup("c-0001")
    assert model.calls["c-0001"].shown_state == "hanging up"
    model.request_hangup("c-unknown")


def test_events_pane_is_bounded() -> None:
    model = fresh()
    for n in range(model_module.LOG_EVENTS_KEPT + 50):
        model.apply({"type": "dtmf", "call_id": "c-1", "digit": str(n % 10)})
    assert len(model.events) == model_module.LOG_EVENTS_KEPT


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "–"), (0, "00:00"), (65.9, "01:05"), (3599, "59:59"), (3700, "1h01m"), (-5, "00:00")],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "–"),
        (512, "512B"),
        (1536, "1.5K"),
        (512 << 20, "512M"),
        (14 << 30, "14G"),
        (5 << 40, "5T"),
    ],
)
def test_format_bytes(value: float | None, text: str) -> None:
    assert format_bytes(value) == text


def test_the_instances_panel_shows_the_gpu_an_instance_owns_and_keeps_its_slots() -> None:
    from xswarm.tui.widgets.instances import instance_cells

    model = fresh()
    model.apply_snapshot(sample_snapshot())
    name = next(iter(model.instances))
    model.apply(
        {
            "type": "instance_status",
            "instance": name,
            "engine": "moshi",
            "device": "cuda:1",
            "gpu": "NVIDIA H200 at 0000:62:00.0",
            "engine_details": {"device": "cuda:1", "slots": 80},
        }
    )
    view = model.instances[name]
    assert (view.device, view.gpu, view.slots) == ("cuda:1", "NVIDIA H200 at 0000:62:00.0", 80)
    assert instance_cells(view, connected=True)[2].plain == "cuda:1"
    model.apply({"type": "instance_status", "instance": name, "device": "cpu"})
    assert instance_cells(model.instances[name], connected=True)[2].plain == "moshi"
