"""A fleet costs what is on screen: coalesced repaints, rows built only when visible, views.

Time is a ``FakeClock`` moved by hand; nothing here depends on how fast the machine is.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text

from tests.tui.data import FakeClock, call, instance, stats
from xswarm.tui.app import XswarmDashboard
from xswarm.tui.messages import SupervisorMessage
from xswarm.tui.model import (
    LOG_EVENTS_KEPT,
    RESORT_S,
    TOP_N,
    CallOrder,
    Changes,
    DashboardModel,
    find_call,
    fleet_totals,
    state_counts,
)
from xswarm.tui.screens.main import INSTANCES_EVERY_S, MainScreen
from xswarm.tui.widgets.calls import CallsTable
from xswarm.tui.widgets.events import EventsPane
from xswarm.tui.widgets.footer import KeysFooter
from xswarm.tui.widgets.instances import InstancesTable
from xswarm.tui.widgets.summary import SummaryLine

FLEET = 2000


def fleet_model(calls: int = FLEET, clock: FakeClock | None = None) -> DashboardModel:
    model = DashboardModel(clock=clock or FakeClock(), wall=lambda: 0.0)
    model.set_connection("up", "authenticated")
    model.apply_snapshot(
        {
            "type": "snapshot",
            "instances": [
                instance("a", active_calls=calls // 2, max_concurrent_calls=calls // 2),
                instance("b", active_calls=calls - calls // 2, max_concurrent_calls=calls),
                instance("c", state="down", active_calls=None, max_concurrent_calls=50),
            ],
            "calls": [
                call(f"c-{n:05d}", instance="a" if n % 2 else "b", latency_p99_ms=float(n % 997))
                for n in range(calls)
            ],
        }
    )
    model.take_changes()
    return model


def calls_table(app: XswarmDashboard) -> CallsTable:
    return app.screen.query_one("#calls", CallsTable)


async def test_only_the_rows_on_screen_are_built() -> None:
    app = XswarmDashboard(url=None, model=fleet_model())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        table = calls_table(app)
        on_screen = table.body_height
        assert table.row_count == FLEET
        assert 0 < table.rows_built <= on_screen
        built = table.rows_built
        for n in range(FLEET):
            app.model.apply(stats(f"c-{n:05d}", 3))
        app.repaint()
        await pilot.pause()
        assert table.rows_built - built <= on_screen, "every call changed, visible ones rebuilt"
        built = table.rows_built
        await pilot.press("pagedown")
        await pilot.pause()
        assert table.rows_built - built <= on_screen
        assert table.selected_key() == f"c-{on_screen:05d}"
        assert len(table._cells) <= on_screen, "rows scrolled away are not kept"


async def test_a_burst_of_events_costs_one_repaint(monkeypatch: Any) -> None:
    app = XswarmDashboard(url=None, model=fleet_model())
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MainScreen)
        shown: list[Changes] = []
        original = screen.show

        def record(changes: Changes) -> None:
            shown.append(changes)
            original(changes)

        monkeypatch.setattr(screen, "show", record)
        # What the link does with each message: straight into the model, nothing drawn.
        for round_ in range(5):
            for n in range(FLEET):
                app._from_link(SupervisorMessage(stats(f"c-{n:05d}", round_)))
        assert shown == []
        app.repaint()
        assert len(shown) == 1
        assert len(shown[0].calls) == FLEET
        app.repaint()
        assert len(shown) == 1, "nothing new, nothing drawn"


async def test_summary_line_counts_calls_by_state_and_instances_show_fleet_totals() -> None:
    model = fleet_model(calls=10)
    model.apply({"type": "call_ended", "call_id": "c-00001", "reason": "caller_hangup"})
    model.request_hangup("c-00002")
    app = XswarmDashboard(url=None, model=model)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        line = app.screen.query_one("#calls-summary", SummaryLine).text.plain
        assert line.startswith("10 calls: 8 active · 1 ended · 1 hanging up")
        subtitle = str(app.screen.query_one("#instances").border_subtitle)
        assert "2/3 up · 10 calls · 5 free slots · 1 full" in subtitle


async def test_top_views_and_jump_to_a_call() -> None:
    app = XswarmDashboard(url=None, model=fleet_model())
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        table = calls_table(app)
        await pilot.press("t")
        await pilot.pause()
        assert table.row_count == TOP_N
        worst = [app.model.calls[c].latency_p99_ms for c in table.order]
        assert worst == sorted(worst, reverse=True) and worst[0] == 996.0
        line = app.screen.query_one("#calls-summary", SummaryLine).text.plain
        assert f"top {TOP_N} by worst p99 latency" in line
        # A call outside the top view: jumping to it leaves the view for the full list.
        await pilot.press("g", *"01234", "enter")
        await pilot.pause()
        assert table.selected_key() == "c-01234"
        assert table.row_count == FLEET
        top = round(table.scroll_y)
        assert top <= table.cursor_row < top + table.body_height, "the call is on screen"


def test_order_is_resorted_at_most_every_resort_interval_for_a_large_fleet() -> None:
    clock = FakeClock()
    model = fleet_model(clock=clock)
    model.set_sort("latency_p99_ms")
    model.take_changes()
    order = CallOrder()
    order.update(model, Changes(reset=True))
    assert order.sorts == 1
    for step in range(20):  # twenty repaints within one resort interval
        model.apply(stats("c-00005", step) | {"latency_p99_ms": 5000.0 + step})
        order.update(model, model.take_changes())
        clock.advance(RESORT_S / 40)
    assert order.sorts == 1
    assert order.order[-1] != "c-00005", "not re-sorted yet"
    clock.advance(RESORT_S)
    model.apply(stats("c-00006", 1))
    order.update(model, model.take_changes())
    assert order.sorts == 2
    assert order.order[-1] == "c-00005"


def test_gone_calls_leave_the_order_at_once_new_ones_when_a_sort_is_due() -> None:
    model_clock, order_clock = FakeClock(), FakeClock()
    model = fleet_model(clock=model_clock)
    order = CallOrder(clock=order_clock)
    order.update(model, Changes(reset=True))
    model.apply({"type": "call_ended", "call_id": "c-00007", "reason": "x"})
    model_clock.advance(60)
    model.prune()
    model.apply({"type": "call_started", "call_id": "c-99999", "instance": "a"})
    changes = model.take_changes()
    assert "c-00007" in changes.removed
    order_clock.advance(RESORT_S / 10)
    order.update(model, changes)
    assert "c-00007" not in order.order and "c-99999" not in order.order
    assert order.sorts == 1
    order_clock.advance(RESORT_S)
    order.update(model, Changes())
    assert order.sorts == 2
    assert order.order[-1] == "c-99999"


def test_small_fleets_are_resorted_on_every_repaint() -> None:
    model = fleet_model(calls=50)
    model.set_sort("latency_p99_ms")
    order = CallOrder()
    order.update(model, model.take_changes())
    model.apply(stats("c-00003", 1) | {"latency_p99_ms": 9999.0})
    order.update(model, model.take_changes())
    assert order.order[-1] == "c-00003"


def test_state_counts_totals_and_find_call() -> None:
    model = fleet_model(calls=6)
    model.apply({"type": "call_ended", "call_id": "c-00000", "reason": "x"})
    assert state_counts(model) == {"active": 5, "ended": 1}
    totals = fleet_totals(model)
    assert (totals.instances, totals.up, totals.calls) == (3, 2, 6)
    assert (totals.free_slots, totals.full) == (3, 1)
    assert find_call(model, "c-00004") == "c-00004"
    assert find_call(model, "00003") == "c-00003"
    assert find_call(model, "C-0000") == "c-00000", "the first id that contains it"
    assert find_call(model, "nope") is None
    assert find_call(model, "  ") is None


async def test_a_batch_is_one_model_update_and_one_repaint(monkeypatch: Any) -> None:
    clock = FakeClock()
    app = XswarmDashboard(url=None, model=fleet_model(clock=clock))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MainScreen)
        shown: list[Changes] = []
        original = screen.show

        def record(changes: Changes) -> None:
            shown.append(changes)
            original(changes)

        monkeypatch.setattr(screen, "show", record)
        events = [stats(f"c-{n:05d}", 3) for n in range(FLEET)]
        events.append({"type": "call_ended", "call_id": "c-00007", "reason": "caller_hangup"})
        app._from_link(SupervisorMessage({"type": "batch", "ts": "", "events": events}))
        assert shown == []
        clock.advance(0.25)
        app.repaint()
        assert len(shown) == 1
        assert len(shown[0].calls) == FLEET
        model = app.model
        assert model.calls["c-00001"].frames_in == 150, "the batch's figures are applied"
        assert model.calls["c-00007"].state == "ended", "in order: the end after the stats"
        app.repaint()
        assert len(shown) == 1, "nothing new, nothing drawn"


def test_model_applies_a_batch_in_order() -> None:
    model = fleet_model(calls=3)
    model.apply_batch(
        [
            stats("c-00000", 1),
            {"type": "call_ended", "call_id": "c-00000", "reason": "caller_hangup"},
            {"type": "text", "call_id": "c-00001", "text": "hello"},
        ]
    )
    changes = model.take_changes()
    assert changes.calls == {"c-00000", "c-00001"}
    assert model.calls["c-00000"].state == "ended" and model.calls["c-00000"].frames_in == 50
    assert model.calls["c-00001"].transcript == "hello"


async def test_instances_panel_shows_refusals_in_the_last_minute() -> None:
    model = fleet_model(calls=10)
    model.apply(
        {
            "type": "instance_status",
            "instance": "a",
            "refused_total": {"full": 9},
            "refusals_total": 9,
            "refusals_last_minute": 4,
        }
    )
    model.apply({"type": "instance_status", "instance": "b", "refusals_last_minute": 2})
    totals = fleet_totals(model)
    assert totals.refusals_last_minute == 6 and totals.refusals_total == 9
    app = XswarmDashboard(url=None, model=model)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        subtitle = str(app.screen.query_one("#instances").border_subtitle)
        assert subtitle.endswith("· 6 refused/min")
    assert fleet_totals(fleet_model(calls=2)).refusals_last_minute is None


def status(name: str, cpu: float, **overrides: Any) -> dict[str, Any]:
    return {"type": "instance_status", "instance": name, "cpu": cpu, **overrides}


def test_status_reports_redraw_calls_only_when_their_instance_changes_liveness() -> None:
    model = fleet_model()
    for n in range(20):
        model.apply(status("a", float(n)))
    changes = model.take_changes()
    assert changes.instances and changes.calls == set(), "figures changed, no call row did"
    model.apply({"type": "instance_state", "instance": "a", "state": "stale"})
    changes = model.take_changes()
    assert len(changes.calls) == FLEET // 2, "a's calls now draw as stale"
    model.apply(status("a", 1.0))
    assert len(model.take_changes().calls) == FLEET // 2, "and live again"


def test_the_same_filter_again_rebuilds_nothing() -> None:
    model = fleet_model()
    model.set_filter("")
    assert not model.take_changes()
    model.set_filter("c-0001")
    assert model.take_changes().reset
    model.set_filter(" C-0001 ")
    assert not model.take_changes()


async def test_instances_panel_follows_reports_at_most_once_per_interval(monkeypatch: Any) -> None:
    clock = FakeClock()
    app = XswarmDashboard(url=None, model=fleet_model(clock=clock))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        shows: list[float] = []
        table = app.screen.query_one("#instances", InstancesTable)
        original = table.show

        def record(model: DashboardModel) -> None:
            shows.append(clock())
            original(model)

        monkeypatch.setattr(table, "show", record)
        clock.advance(INSTANCES_EVERY_S)
        for step in range(12):  # three seconds of repaints, reports from both instances
            app.model.apply(status("a", float(step)))
            app.model.apply(status("b", float(step)))
            app.repaint()
            clock.advance(INSTANCES_EVERY_S / 4)
        assert len(shows) <= 3 + 1, shows
        assert all(b - a >= INSTANCES_EVERY_S for a, b in zip(shows, shows[1:], strict=False))
        app.model.apply(status("a", 99.0))
        app.repaint()
        await pilot.pause(INSTANCES_EVERY_S + 0.2)
        assert table.get_row("a")[5].plain == "99%", "the last report is shown, if late"


async def test_events_pane_wraps_only_the_events_it_draws() -> None:
    app = XswarmDashboard(url=None, model=fleet_model())
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        pane = app.screen.query_one("#events", EventsPane)
        before = pane.wrapped
        for n in range(LOG_EVENTS_KEPT):
            pane.write(Text(f"event {n}"))
        await pilot.pause()
        height = pane.scrollable_content_region.height
        assert 0 < pane.wrapped - before <= height
        assert [s.text for s in pane.lines][-1] == f"event {LOG_EVENTS_KEPT - 1}"


async def test_the_key_bar_redraws_its_line_and_a_click_on_a_key_presses_it() -> None:
    app = XswarmDashboard(url=None, model=fleet_model(20))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        bar = app.screen.query_one(KeysFooter)
        browsing = bar.keys
        assert "Filter" in [k.description for k in browsing]
        await pilot.press("slash")
        await pilot.pause()
        assert bar.keys != browsing, "typing into the box: its letters are no keys"
        assert not bar.children, "one line of text, no widget per key"
        await pilot.press("escape")
        await pilot.pause()
        assert bar.keys == browsing
        filter_at = next(start for start, _, key in bar.spans if key == "slash")
        await pilot.click(KeysFooter, offset=(filter_at + 1, 0))
        await pilot.pause()
        assert app.screen.query_one("#filter").has_focus


async def test_moving_the_focus_repaints_the_widgets_it_moves_between_not_the_screen(
    monkeypatch: Any,
) -> None:
    """``/`` and Escape move the focus: Textual alone would redraw every cell of the screen."""
    app = XswarmDashboard(url=None, model=fleet_model())
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        compositor = app.screen._compositor
        updates: list[str] = []
        for kind in ("render_full_update", "render_partial_update"):
            original = getattr(compositor, kind)

            def record(*args: Any, _kind: str = kind, _original: Any = original) -> Any:
                updates.append(_kind)
                return _original(*args)

            monkeypatch.setattr(compositor, kind, record)
        await pilot.press("slash")
        await pilot.pause()
        assert app.screen.query_one("#filter").has_focus
        await pilot.press("escape")
        await pilot.pause()
        assert calls_table(app).has_focus
        assert "render_partial_update" in updates
        assert "render_full_update" not in updates
