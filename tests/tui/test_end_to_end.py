"""The TUI against the real supervisor and the real voice bridge, over loopback sockets.

``xswarm-voice`` (echo engine, which applies suggestions) and ``xswarm-dashboard`` run as
subprocesses; the dashboard app runs headless under Pilot and is driven by its keys. Waits are
bounded polls (a limit on waiting, never a claim about speed).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.supervisor.support import running_supervisor, start_supervisor, twilio_call
from tests.support.bridge import running_bridge, start_bridge
from tests.tui.helpers import until
from xswarm.tui.app import XswarmDashboard
from xswarm.tui.client import Backoff
from xswarm.tui.screens.confirm import ConfirmHangupScreen
from xswarm.tui.screens.suggest import SuggestionScreen
from xswarm.tui.widgets.banner import ConnectionBanner
from xswarm.tui.widgets.calls import CallsTable

BRIDGE_CONFIG = '[voice.bridge]\nengine = "echo"\nstatus_interval = 0.2\ndrain_timeout = 2\n'
TOKEN = "tui-test-token-5e2a"
ENV = {"XSWARM_SUPERVISOR_TOKEN": TOKEN, "XSWARM_CONTROL_TOKEN": "tui-test-bridge-token"}


def live_call_ids(app: XswarmDashboard) -> list[str]:
    return [c.call_id for c in app.model.calls.values() if c.state == "active"]


def table_ids(app: XswarmDashboard) -> list[str]:
    table = app.screen.query_one("#calls", CallsTable)
    return list(table.order)


def notices(app: XswarmDashboard) -> list[str]:
    return [n.message for n in app._notifications]


async def test_operator_sees_steers_and_hangs_up_a_call(tmp_path: Path) -> None:
    with (
        running_bridge(tmp_path, BRIDGE_CONFIG, env=ENV) as bridge,
        running_supervisor(tmp_path, [bridge.ws_url + "/control"], env=ENV) as sup,
    ):
        app = XswarmDashboard(url=sup.ws_url, token=TOKEN)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.model.connected and app.model.instances)
            instance = next(iter(app.model.instances.values()))
            await until(pilot, lambda: instance.state == "up" and instance.engine == "echo")
            async with twilio_call(bridge.ws_url) as caller:
                ids = await until(pilot, lambda: live_call_ids(app))
                call_id = ids[0]
                await until(pilot, lambda: table_ids(app) == [call_id])
                await until(pilot, lambda: app.model.calls[call_id].frames_in)
                # The supervisor's batches offer watch; the row on screen is watched.
                await until(pilot, lambda: app.watch_sent == [call_id])
                assert app.model.calls[call_id].transport == "twilio"

                await pilot.press("i")
                await until(pilot, lambda: isinstance(app.screen, SuggestionScreen))
                assert app.screen.call_id == call_id
                await pilot.press(*"Offer a callback", "enter")
                applied = f"Suggestion applied to call {call_id}"
                await until(pilot, lambda: applied in notices(app))
                await until(
                    pilot, lambda: "Offer a callback" in app.model.calls[call_id].transcript
                )

                await pilot.press("h")
                await until(pilot, lambda: isinstance(app.screen, ConfirmHangupScreen))
                assert app.screen.call_id == call_id
                await pilot.press("y")
                await until(
                    pilot,
                    lambda: (
                        app.model.calls.get(call_id) is None
                        or app.model.calls[call_id].end_reason == "operator_hangup"
                    ),
                )
                await asyncio.wait_for(caller.closed.wait(), 10)
            await until(pilot, lambda: call_id not in table_ids(app), within=20)

        status, history = await asyncio.to_thread(sup.get, "/api/calls?limit=5", TOKEN)
        assert status == 200
        row = next(r for r in history if r["call_id"] == call_id)
        assert row["reason"] == "operator_hangup"
        assert row["suggestions"] >= 1
        assert not [n for n in notices(app) if "watch" in n], "the supervisor took watch"


async def test_bridge_restart_shows_down_then_recovers(tmp_path: Path) -> None:
    bridge = start_bridge(tmp_path, BRIDGE_CONFIG, env=ENV)
    try:
        with running_supervisor(tmp_path, [bridge.ws_url + "/control"], env=ENV) as sup:
            app = XswarmDashboard(url=sup.ws_url, token=TOKEN)
            async with app.run_test(size=(80, 24)) as pilot:
                await until(pilot, lambda: app.model.connected and app.model.instances)
                instance = next(iter(app.model.instances.values()))
                await until(pilot, lambda: instance.state == "up")
                first_pid = instance.pid
                await asyncio.to_thread(bridge.stop)
                await until(pilot, lambda: instance.state in ("down", "stale"))
                assert app.model.connected, "the supervisor itself is still there"
                bridge = await asyncio.to_thread(
                    start_bridge, tmp_path, BRIDGE_CONFIG, ENV, (), bridge.port
                )
                await until(pilot, lambda: instance.state == "up" and instance.pid != first_pid)
                assert instance.pid == bridge.proc.pid
                await until(pilot, lambda: instance.restarts)
    finally:
        await asyncio.to_thread(bridge.stop)


async def test_supervisor_restart_shows_stale_then_a_fresh_snapshot(tmp_path: Path) -> None:
    with running_bridge(tmp_path, BRIDGE_CONFIG, env=ENV) as bridge:
        sup = start_supervisor(tmp_path, [bridge.ws_url + "/control"], env=ENV)
        try:
            app = XswarmDashboard(url=sup.ws_url, token=TOKEN)
            async with app.run_test(size=(80, 24)) as pilot:
                async with twilio_call(bridge.ws_url) as caller:
                    ids = await until(pilot, lambda: live_call_ids(app))
                    await until(pilot, lambda: table_ids(app) == ids)
                    banner = app.screen.query_one("#banner", ConnectionBanner)
                    assert not banner.display
                    await asyncio.to_thread(sup.stop)
                    await until(pilot, lambda: app.model.connection == "down")
                    await until(pilot, lambda: banner.display and "STALE" in str(banner.render()))
                    table = app.screen.query_one("#calls", CallsTable)
                    assert table.has_class("-stale")
                    assert table.get_cell(ids[0], "state").plain == "stale"
                    await caller.hang_up()
                    sup = await asyncio.to_thread(
                        start_supervisor,
                        tmp_path,
                        [bridge.ws_url + "/control"],
                        ENV,
                        "",
                        "supervisor",
                        (),
                        sup.port,
                    )
                    await until(pilot, lambda: app.model.connected)
                    await until(pilot, lambda: not banner.display)
                    await until(pilot, lambda: table_ids(app) == [] and not app.model.calls)
                    assert not table.has_class("-stale")
        finally:
            await asyncio.to_thread(sup.stop)


async def test_a_refused_token_is_a_clear_message_not_a_crash(tmp_path: Path) -> None:
    with running_supervisor(tmp_path, [], env=ENV) as sup:
        app = XswarmDashboard(url=sup.ws_url, token="wrong-token")
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.model.connection == "refused")
            banner = app.screen.query_one("#banner", ConnectionBanner)
            await until(pilot, lambda: banner.display)
            text = str(banner.render())
            assert "refused the token" in text and "XSWARM_SUPERVISOR_TOKEN" in text
            assert any("invalid token" in n for n in notices(app))
            assert app.is_running


async def test_reconnect_key_cuts_the_wait_short(tmp_path: Path) -> None:
    from tests.support.bridge import free_port

    port = free_port()
    app = XswarmDashboard(url=f"ws://127.0.0.1:{port}/ws", token=TOKEN)
    assert app.link is not None
    app.link.backoff = Backoff(initial=60.0, cap=60.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.model.connection == "down")
        assert "retrying in 60.0s" in app.model.connection_message
        assert "connection refused" in app.model.connection_message
        with running_supervisor(tmp_path, [], env=ENV, port=port):
            await pilot.press("r")
            await until(pilot, lambda: app.model.connected, within=20)
