"""Pilot tests of "attributes down, messages up": the operator's keys post typed messages, and
the app alone turns them into screens and supervisor commands (through a recording link)."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any, TypeVar

from textual.message import Message

import xswarm.tui
from tests.tui.data import sample_model
from tests.tui.helpers import until
from xswarm.tui.app import XswarmDashboard
from xswarm.tui.client import SupervisorLink
from xswarm.tui.messages import (
    FilterChanged,
    HangupConfirmed,
    HangupRequested,
    OpenCall,
    SortRequested,
    SuggestionRequested,
    SupervisorMessage,
    WriteSuggestion,
)
from xswarm.tui.screens.confirm import ConfirmHangupScreen
from xswarm.tui.screens.detail import CallDetailScreen
from xswarm.tui.screens.main import MainScreen
from xswarm.tui.screens.suggest import SuggestionScreen

M = TypeVar("M", bound=Message)


class RecordingLink(SupervisorLink):
    """A link that is always up and keeps what the app sends instead of sending it."""

    def __init__(self) -> None:
        super().__init__("ws://127.0.0.1:1/ws", "t", lambda _message: True)
        self.sent: list[dict[str, Any]] = []

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def send(self, payload: dict[str, Any]) -> bool:
        self.sent.append(payload)
        return True


class Recorder:
    """Every message any part of the app handled; a bubbling message is counted once."""

    def __init__(self) -> None:
        self.seen: dict[int, Message] = {}

    def __call__(self, message: Message) -> None:
        self.seen.setdefault(id(message), message)

    def of(self, kind: type[M]) -> list[M]:
        return [m for m in self.seen.values() if isinstance(m, kind)]


def linked_app() -> tuple[XswarmDashboard, RecordingLink]:
    app = XswarmDashboard(url=None, model=sample_model())
    link = RecordingLink()
    app.link = link
    return app, link


def notices(app: XswarmDashboard) -> list[str]:
    return [n.message for n in app._notifications]


async def test_enter_on_a_row_posts_open_call_and_the_detail_screen_opens() -> None:
    app = XswarmDashboard(url=None, model=sample_model())
    posted = Recorder()
    async with app.run_test(size=(80, 24), message_hook=posted) as pilot:
        await pilot.pause()
        await pilot.press("down", "enter")
        await pilot.pause()
        assert posted.of(OpenCall) == [OpenCall("c-0002")]
        assert isinstance(app.screen, CallDetailScreen) and app.screen.call_id == "c-0002"


async def test_confirming_the_modal_posts_hangup_confirmed_and_the_link_sends_it() -> None:
    app, link = linked_app()
    posted = Recorder()
    async with app.run_test(size=(80, 24), message_hook=posted) as pilot:
        await pilot.pause()
        await pilot.press("down", "h")
        await pilot.pause()
        assert posted.of(HangupRequested) == [HangupRequested("c-0002")]
        assert isinstance(app.screen, ConfirmHangupScreen)
        assert link.sent == [], "nothing goes before the operator confirms"
        await pilot.press("y")
        await until(pilot, lambda: link.sent)
        assert posted.of(HangupConfirmed) == [HangupConfirmed("c-0002")]
        assert link.sent == [{"type": "hangup", "call_id": "c-0002"}]
        assert isinstance(app.screen, MainScreen)
        assert app.model.calls["c-0002"].shown_state == "hanging up"


async def test_declining_the_modal_posts_nothing_and_sends_nothing() -> None:
    app, link = linked_app()
    posted = Recorder()
    async with app.run_test(size=(80, 24), message_hook=posted) as pilot:
        await pilot.pause()
        await pilot.press("h", "n")
        await pilot.pause()
        await pilot.press("h")
        await pilot.pause()
        await pilot.click("#no")
        await pilot.pause()
        assert len(posted.of(HangupRequested)) == 2
        assert posted.of(HangupConfirmed) == [] and link.sent == []


async def test_a_suggestion_goes_up_as_a_message_and_out_by_call_id() -> None:
    app, link = linked_app()
    posted = Recorder()
    async with app.run_test(size=(80, 24), message_hook=posted) as pilot:
        await pilot.pause()
        await pilot.press("i")
        await pilot.pause()
        assert posted.of(WriteSuggestion) == [WriteSuggestion("c-0001")]
        assert isinstance(app.screen, SuggestionScreen)
        await pilot.press(*"  Offer a callback?  ", "enter")
        await until(pilot, lambda: link.sent)
        wanted = SuggestionRequested("c-0001", "Offer a callback?", "normal")
        assert posted.of(SuggestionRequested) == [wanted]
        [sent] = link.sent
        request_id = sent.pop("request_id")
        assert isinstance(request_id, str) and request_id
        assert sent == {
            "type": "inject_suggestion",
            "call_id": "c-0001",
            "text": "Offer a callback?",
            "priority": "normal",
        }
        answer = {"type": "suggestion_applied", "call_id": "c-0001", "text": "Offer a callback?"}
        app.post_message(SupervisorMessage(answer | {"request_id": "someone-else"}))
        app.post_message(SupervisorMessage(answer | {"request_id": request_id}))
        await pilot.pause()
        assert notices(app) == ["Suggestion applied to call c-0001"]


async def test_palette_hits_post_messages_for_the_call_they_name() -> None:
    app = XswarmDashboard(url=None, model=sample_model())
    posted = Recorder()
    async with app.run_test(size=(80, 24), message_hook=posted) as pilot:
        await pilot.pause()
        await pilot.press("question_mark", *"open call c-0003")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert posted.of(OpenCall) == [OpenCall("c-0003")]
        assert isinstance(app.screen, CallDetailScreen) and app.screen.call_id == "c-0003"


async def test_sort_and_filter_keys_post_messages_that_the_app_applies() -> None:
    app = XswarmDashboard(url=None, model=sample_model())
    posted = Recorder()
    async with app.run_test(size=(80, 24), message_hook=posted) as pilot:
        await pilot.pause()
        await pilot.press("o", "O")
        await pilot.pause()
        assert posted.of(SortRequested) == [SortRequested(), SortRequested(reverse=True)]
        assert (app.model.sort_column, app.model.sort_reverse) == ("call_id", True)
        await pilot.press("slash", *"mo")
        await pilot.pause()
        assert [m.text for m in posted.of(FilterChanged)] == ["m", "mo"]
        assert app.model.filter_text == "mo"


def test_no_module_below_the_app_imports_it() -> None:
    """Screens, widgets and the palette reach the app only by posting messages."""
    package = Path(xswarm.tui.__file__).parent
    entry_points = {package / "app.py", package / "command.py"}
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path in entry_points:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if "xswarm.tui.app" in names:
                offenders.append(str(path.relative_to(package)))
    assert offenders == []
