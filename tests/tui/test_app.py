"""Pilot tests: every key and action of the dashboard, driven from its own model (no network)."""

from __future__ import annotations

import asyncio
from typing import Any

from textual.command import CommandPalette
from textual.widgets import Input, Label, RichLog, Sparkline, Static

from tests.tui.data import HOSTILE_CALLERS, FakeClock, sample_model, stats
from xswarm.tui.app import XswarmDashboard
from xswarm.tui.messages import OpenCall
from xswarm.tui.model import DashboardModel
from xswarm.tui.screens.confirm import ConfirmHangupScreen
from xswarm.tui.screens.detail import CallDetailScreen
from xswarm.tui.screens.help import HelpScreen
from xswarm.tui.screens.main import MainScreen
from xswarm.tui.screens.suggest import SuggestionScreen
from xswarm.tui.widgets.banner import ConnectionBanner
from xswarm.tui.widgets.calls import CallsTable


def make_app(model: DashboardModel | None = None) -> XswarmDashboard:
    return XswarmDashboard(url=None, model=model or sample_model())


def table(app: XswarmDashboard) -> CallsTable:
    return app.screen.query_one("#calls", CallsTable)


def row_ids(app: XswarmDashboard) -> list[str]:
    return [str(row.key.value) for row in table(app).ordered_rows]


def cell_text(app: XswarmDashboard, call_id: str, column: str) -> str:
    return table(app).get_cell(call_id, column).plain


def notices(app: XswarmDashboard) -> list[str]:
    return [n.message for n in app._notifications]


async def test_hostile_remote_text_renders_as_plain_text() -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        for call_id, caller in zip(("c-0002", "c-0003", "c-0004"), HOSTILE_CALLERS, strict=True):
            assert cell_text(app, call_id, "caller") == caller
        app.model.apply(
            {
                "type": "call_started",
                "call_id": "c-[/]",
                "caller": "[/][/]",
                "instance": "[bold]voice",
                "transport": "[red]twilio",
            }
        )
        app.model.apply(
            {"type": "suggestion_rejected", "call_id": "c-[/]", "reason": "[/]queue full[/]"}
        )
        app.model.apply({"type": "error", "message": "[/] bad [b]"})
        app.repaint()
        await pilot.pause()
        assert cell_text(app, "c-[/]", "caller") == "[/][/]"
        assert cell_text(app, "c-[/]", "instance") == "[bold]voice"
        lines = [strip.text for strip in app.screen.query_one("#events", RichLog).lines]
        assert any("[/]queue full[/]" in line for line in lines)
        app.post_message(OpenCall("c-[/]"))
        await pilot.pause()
        summary = app.screen.query_one("#summary", Static).render()
        assert "[/][/]" in str(summary)
        await pilot.press("escape", "question_mark")
        await pilot.pause()
        await pilot.press(*"c-[/]")
        await pilot.pause(0.3)
        assert isinstance(app.screen, CommandPalette)


async def test_sort_key_orders_rows_and_the_order_survives_live_updates() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        for _ in range(9):  # call_id, instance, ..., latency_p99_ms (the ninth)
            await pilot.press("o")
        assert app.model.sort_column == "latency_p99_ms"
        await pilot.pause()
        assert row_ids(app) == [c.call_id for c in app.model.visible_calls()]
        assert row_ids(app) == ["c-0003", "c-0001", "c-0004", "c-0002"]
        app.model.apply(stats("c-0002", 3) | {"latency_p99_ms": 10.0})
        app.model.apply(stats("c-0003", 3) | {"latency_p99_ms": 900.0})
        app.repaint()
        await pilot.pause()
        assert row_ids(app) == ["c-0002", "c-0001", "c-0004", "c-0003"]
        await pilot.press("O")
        await pilot.pause()
        assert row_ids(app) == ["c-0003", "c-0004", "c-0001", "c-0002"]
        assert "p99▼" in str(table(app).columns["latency_p99_ms"].label)


async def test_clicking_a_header_sorts_by_it() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        calls = table(app)
        x = sum(c.get_render_width(calls) for c in calls.ordered_columns[:3]) + 2
        assert await pilot.click("#calls", offset=(x, 1))
        await pilot.pause()
        assert app.model.sort_column == "duration_s"
        assert row_ids(app) == ["c-0002", "c-0004", "c-0001", "c-0003"]


async def test_cursor_stays_on_its_call_when_rows_move() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("down")
        assert table(app).selected_key() == "c-0002"
        app.model.set_sort("latency_p50_ms")
        app.repaint()
        await pilot.pause()
        assert row_ids(app).index("c-0002") != 1
        assert table(app).selected_key() == "c-0002"


async def test_slash_filters_and_escape_clears() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("slash")
        box = app.screen.query_one("#filter", Input)
        assert box.display and box.has_focus
        await pilot.press(*"moshi")
        await pilot.pause()
        assert row_ids(app) == ["c-0002"]
        await pilot.press("enter")
        assert table(app).has_focus
        assert "filter: moshi" in app.screen.sub_title
        app.model.apply({"type": "call_started", "call_id": "c-0009", "transport": "twilio"})
        app.model.apply({"type": "call_started", "call_id": "c-0010", "transport": "moshi"})
        app.repaint()
        await pilot.pause()
        assert row_ids(app) == ["c-0002", "c-0010"]
        await pilot.press("escape")
        await pilot.pause()
        assert not box.display
        assert len(row_ids(app)) == 6


async def test_enter_opens_the_call_detail_and_escape_returns() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CallDetailScreen) and screen.call_id == "c-0001"
        call = app.model.calls["c-0001"]
        assert screen.query_one("#latency_p99_history", Sparkline).data == list(
            call.latency_p99_history
        )
        words = str(screen.query_one("#words", Static).render())
        assert "[bold]How[/] can I help?" in words
        app.model.apply({"type": "text", "call_id": "c-0001", "text": " Goodbye."})
        app.model.apply(stats("c-0001", 50))
        app.repaint()
        await pilot.pause()
        assert str(screen.query_one("#words", Static).render()).endswith("help? Goodbye.")
        assert screen.query_one("#latency_p50_history", Sparkline).data[-1] == 60.0
        label = str(screen.query_one("#latency_p50_history-label", Label).render())
        assert label == "latency p50 ms: 60"
        events = [s.text for s in screen.query_one("#call-events", RichLog).lines]
        assert any("suggestion_applied" in line for line in events)
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_suggestion_box_validates_sends_by_call_id_and_cancels() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.model.set_sort("call_id")
        app.model.reverse_sort()
        app.repaint()
        await pilot.pause()
        assert table(app).cursor_row == 3, "the cursor followed c-0001 to the bottom"
        await pilot.press("i")
        await pilot.pause()
        assert isinstance(app.screen, SuggestionScreen)
        assert app.screen.call_id == "c-0001", "the call under the cursor, by id"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, SuggestionScreen), "an empty suggestion is not sent"
        assert "empty" in str(app.screen.query_one("#problem", Label).render())
        await pilot.press(*"Offer a callback?")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert notices(app) == ["not connected to the supervisor; inject_suggestion was not sent"]
        await pilot.press("i")
        await pilot.press(*"never mind")
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert len(notices(app)) == 1


async def test_hangup_asks_first_and_cancel_sends_nothing() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("slash", *"0003", "enter", "h")
        await pilot.pause()
        modal = app.screen
        assert isinstance(modal, ConfirmHangupScreen)
        assert modal.call_id == "c-0003" and modal.caller == "[bold red]x"
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        await pilot.press("h", "escape")
        await pilot.pause()
        assert notices(app) == []
        await pilot.press("h")
        await pilot.pause()
        await pilot.click("#no")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen) and notices(app) == []
        await pilot.press("h", "y")
        await pilot.pause()
        assert notices(app) == ["not connected to the supervisor; hangup was not sent"]
        assert app.model.calls["c-0003"].shown_state == "active"


async def test_detail_screen_keys_act_on_its_own_call() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        app.post_message(OpenCall("c-0004"))
        await pilot.pause()
        await pilot.press("h")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmHangupScreen) and app.screen.call_id == "c-0004"
        await pilot.press("n", "i")
        await pilot.pause()
        assert isinstance(app.screen, SuggestionScreen) and app.screen.call_id == "c-0004"


async def test_help_key_and_close() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_question_mark_opens_the_palette_with_per_call_actions() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"hang up call c-0002")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmHangupScreen)
        assert app.screen.call_id == "c-0002"
        await pilot.press("n", "question_mark", *"help keys")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)


async def test_q_quits() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running


async def test_reconnect_key_without_a_supervisor_says_so() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("r")
        await pilot.pause()
        assert notices(app) == ["started without a supervisor URL; nothing to reconnect"]


async def test_stale_banner_dims_rows_and_a_snapshot_restores() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        banner = app.screen.query_one("#banner", ConnectionBanner)
        assert not banner.display
        app.model.set_connection("down", "lost the supervisor; retrying in 1.0s (attempt 1)")
        app.repaint()
        await pilot.pause()
        assert banner.display and banner.has_class("-alarm")
        assert "STALE" in str(banner.render()) and "attempt 1" in str(banner.render())
        assert table(app).has_class("-stale")
        assert {cell_text(app, cid, "state") for cid in row_ids(app)} == {"stale"}
        assert str(table(app).get_cell("c-0001", "caller").style) == "dim"
        app.model.set_connection("up", "authenticated")
        app.model.apply_snapshot({"type": "snapshot", "instances": [], "calls": []})
        app.repaint()
        await pilot.pause()
        assert not banner.display and not table(app).has_class("-stale")
        assert row_ids(app) == []


async def test_layout_switches_between_80_and_160_columns() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.screen.has_class("-narrow")
        assert "instance" not in table(app).columns
        await pilot.resize_terminal(160, 48)
        await pilot.pause()
        assert app.screen.has_class("-wide")
        assert "instance" in table(app).columns
        assert len(row_ids(app)) == 4
        assert cell_text(app, "c-0002", "caller") == "[/]"


async def test_live_update_touches_only_changed_cells(monkeypatch: Any) -> None:
    clock = FakeClock()
    app = make_app(sample_model(clock=clock))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        touched: list[tuple[str, str]] = []
        calls = table(app)
        original = calls.update_cell

        def record(row_key: Any, column_key: Any, value: Any, **kw: Any) -> None:
            touched.append((str(row_key), str(column_key)))
            original(row_key, column_key, value, **kw)

        monkeypatch.setattr(calls, "update_cell", record)
        before = app.model.calls["c-0002"]
        app.model.apply(
            stats("c-0002", 1)
            | {
                "level_in_dbfs": before.level_in_dbfs,
                "level_out_dbfs": before.level_out_dbfs,
                "latency_p50_ms": before.latency_p50_ms,
                "latency_p99_ms": before.latency_p99_ms,
                "late_frames": before.late_frames,
                "duration_s": 6.0,
            }
        )
        app.repaint()
        await pilot.pause()
        assert touched == [("c-0002", "duration_s")]
        touched.clear()
        app.repaint()
        assert touched == [], "nothing changed, nothing repainted"
        app.model.apply({"type": "call_ended", "call_id": "c-0002", "reason": "caller_hangup"})
        app.repaint()
        await pilot.pause()
        assert cell_text(app, "c-0002", "state") == "ended: caller_hangup"
        clock.advance(10)
        app.repaint()
        await pilot.pause()
        assert "c-0002" not in row_ids(app)


async def test_sort_is_kept_between_runs(tmp_path: Any) -> None:
    path = tmp_path / "xswarm" / "dashboard.json"
    app = XswarmDashboard(url=None, model=sample_model(), settings_path=path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("o", "o", "o", "o", "o", "O", "q")
    assert path.exists()
    again = XswarmDashboard(url=None, model=sample_model(), settings_path=path)
    assert (again.model.sort_column, again.model.sort_reverse) == ("duration_s", True)
    async with again.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert row_ids(again) == ["c-0003", "c-0001", "c-0004", "c-0002"]


async def test_a_broken_settings_file_is_reported_not_fatal(tmp_path: Any) -> None:
    path = tmp_path / "dashboard.json"
    for content, reason in [
        ("{not json", "cannot be read"),
        ("[1]", "does not hold a JSON object"),
        ('{"sort_column": "[/]password"}', "unknown sort_column"),
        ("x" * 70_000, "larger than"),
    ]:
        path.write_text(content)
        app = XswarmDashboard(url=None, model=sample_model(), settings_path=path)
        assert app.model.sort_column is None
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            notes = [e.text for e in app.model.events if e.kind == "settings"]
            assert len(notes) == 1 and reason in notes[0], notes


async def test_a_failing_link_worker_is_shown_and_r_restarts_it() -> None:
    from xswarm.tui.client import SupervisorLink

    class BrokenOnce(SupervisorLink):
        runs = 0

        async def run(self) -> None:
            BrokenOnce.runs += 1
            if BrokenOnce.runs == 1:
                raise RuntimeError("injected fault")
            await asyncio.Event().wait()

    app = make_app()
    app.link = BrokenOnce("ws://127.0.0.1:1/ws", "t", app.post_message)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        assert app.model.connection == "down"
        assert "internal error: RuntimeError('injected fault')" in app.model.connection_message
        assert any("injected fault" in n for n in notices(app))
        await pilot.press("r")
        await pilot.pause(0.3)
        assert BrokenOnce.runs == 2


async def test_filtering_for_markup_finds_the_caller_and_does_not_crash() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("slash", *"[/]")
        await pilot.pause()
        assert row_ids(app) == ["c-0002"]
        assert app.screen.sub_title.endswith("filter: [/]")
        await pilot.press("enter", "enter")
        await pilot.pause()
        assert isinstance(app.screen, CallDetailScreen) and app.screen.call_id == "c-0002"


async def test_footer_shows_the_keys() -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        shown = {
            (key, active.binding.description)
            for key, active in app.screen.active_bindings.items()
            if active.binding.show
        }
        for pair in [
            ("i", "Suggest"),
            ("h", "Hang up"),
            ("slash", "Filter"),
            ("o", "Sort"),
            ("q", "Quit"),
            ("f1", "Help"),
            ("r", "Reconnect"),
        ]:
            assert pair in shown, pair
        footer_text = app.export_screenshot()
        assert "Hang&#160;up" in footer_text and "palette" in footer_text
