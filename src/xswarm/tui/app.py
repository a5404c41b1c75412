"""The ``xswarm dashboard`` app: owns the model, the supervisor link and the repaint timer.

Messages from the link change the model at once (called directly, not queued as Textual
messages: a fleet sends thousands a second); the widgets catch up on a 4 Hz timer, so a burst
of events costs one repaint, and a repaint costs what is on screen. Screens never call the
app: what the operator asks for comes up as a message (``xswarm.tui.messages``), and each
repaint's changes go down through ``LiveScreen.show``. Constructed with ``url=None`` it never
connects, which is how the tests and the snapshots drive it from a prepared model.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.driver import Driver
from textual.message import Message
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from xswarm.protocol.operator import BATCHED_EVENTS, Batch
from xswarm.tui import settings
from xswarm.tui.client import SupervisorLink, hangup_message, inject_message, watch_message
from xswarm.tui.driver import prompt_escape_driver
from xswarm.tui.messages import (
    BadSupervisorMessage,
    ConnectionChanged,
    FilterChanged,
    HangupConfirmed,
    HangupRequested,
    HelpRequested,
    OpenCall,
    ReconnectRequested,
    SortRequested,
    SuggestionRequested,
    SupervisorMessage,
    WriteSuggestion,
)
from xswarm.tui.model import DashboardModel, clip_text
from xswarm.tui.palette import CallCommands
from xswarm.tui.requests import OwnRequests, acknowledgement
from xswarm.tui.screens.confirm import ConfirmHangupScreen
from xswarm.tui.screens.detail import CallDetailScreen
from xswarm.tui.screens.help import HelpScreen
from xswarm.tui.screens.live import LiveScreen
from xswarm.tui.screens.main import MainScreen
from xswarm.tui.screens.suggest import SuggestionScreen

REPAINT_HZ = 4


class XswarmDashboard(App[None]):
    # Absolute, so that subclasses defined elsewhere (the benchmark's) find it too.
    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "xswarm dashboard"
    COMMAND_PALETTE_BINDING = "question_mark"
    COMMAND_PALETTE_DISPLAY = "?"
    COMMANDS = App.COMMANDS | {CallCommands}
    HORIZONTAL_BREAKPOINTS = [
        (0, "-narrow"),
        (120, "-wide"),
    ]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False),
        Binding("f1", "help", "Help"),
        Binding("r", "reconnect", "Reconnect"),
    ]

    def __init__(
        self,
        url: str | None,
        token: str = "",
        model: DashboardModel | None = None,
        settings_path: Path | None = None,
    ) -> None:
        super().__init__()
        self.url = url
        self.model = model or DashboardModel()
        self.settings_path = settings_path
        if settings_path is not None:
            problem = settings.load(settings_path, self.model)
            if problem:
                self.model.note("settings", problem)
        self.link = SupervisorLink(url, token, self._from_link) if url else None
        self.requests = OwnRequests(f"tui-{os.getpid()}")
        # Whether this supervisor takes ``watch`` (its batches say how slow the rest go), and
        # the call ids last sent with it.
        self.watch_supported = False
        self.watch_sent: list[str] | None = None
        self._sending: set[asyncio.Task[bool]] = set()

    def _from_link(self, message: Message) -> bool:
        """The link's messages: the supervisor's data goes straight into the model."""
        if isinstance(message, SupervisorMessage):
            self.on_supervisor_message(message)
            return True
        return self.post_message(message)

    def get_driver_class(self) -> type[Driver]:
        return prompt_escape_driver(super().get_driver_class())

    def get_default_screen(self) -> Screen[Any]:
        return MainScreen(self.model)

    def on_mount(self) -> None:
        if self.link is not None:
            self.connect_supervisor()
        self.set_interval(1 / REPAINT_HZ, self.repaint)
        self.repaint()

    async def on_unmount(self) -> None:
        if self.settings_path is not None:
            problem = settings.save(self.settings_path, self.model)
            if problem:
                self.log.warning(problem)
        if self.link is not None:
            await self.link.close()

    @work(exclusive=True, group="supervisor", exit_on_error=False)
    async def connect_supervisor(self) -> None:
        assert self.link is not None
        await self.link.run()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A bug in the link must show, not leave a dashboard silently frozen."""
        if event.worker.group == "supervisor" and event.state == WorkerState.ERROR:
            reason = f"the supervisor link stopped on an internal error: {event.worker.error!r}"
            self.model.set_connection("down", reason + "; press r to restart it")
            self.notify(reason, severity="error", timeout=30, markup=False)
            self.repaint()

    def repaint(self) -> None:
        """Hand the model's changes since the last repaint down to every screen showing it."""
        self.model.prune()
        changes = self.model.take_changes()
        live = [s for s in self.screen_stack if s.is_mounted and isinstance(s, LiveScreen)]
        if changes:
            for screen in live:
                screen.show(changes)
        if self.watch_supported:
            self._watch(sorted({call_id for screen in live for call_id in screen.watched()}))

    def _watch(self, call_ids: list[str]) -> None:
        """Tell the supervisor which calls are on screen, when that changed."""
        if call_ids == self.watch_sent or self.link is None:
            return
        self.watch_sent = call_ids
        task = asyncio.get_running_loop().create_task(self.link.send(watch_message(call_ids)))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def on_connection_changed(self, message: ConnectionChanged) -> None:
        self.model.set_connection(message.state, message.detail)
        if message.state == "refused":
            self.notify(
                message.detail, title="Not connected", severity="error", timeout=30, markup=False
            )
        elif message.state == "up":
            self.model.note("connected", message.detail)
            self.watch_supported = False
            self.watch_sent = None
        elif message.state == "down":
            self.model.note("disconnected", message.detail)
        self.repaint()

    def on_bad_supervisor_message(self, message: BadSupervisorMessage) -> None:
        self.model.note("error", f"unreadable message from the supervisor: {message.reason}")

    def on_supervisor_message(self, message: SupervisorMessage) -> None:
        data = message.data
        kind = data["type"]
        if kind == "snapshot":
            self.model.apply_snapshot(data)
            self.repaint()
            return
        if kind in ("auth_result", "pong"):
            return
        if kind == "batch":
            batch = Batch.decode(data)
            self.watch_supported = batch.background_s is not None
            for event in batch.events:
                if event["type"] not in BATCHED_EVENTS:
                    self._notice(event)
            self.model.apply_batch(batch.events)
            return
        self._notice(data)
        self.model.apply(data)

    def _notice(self, data: Mapping[str, Any]) -> None:
        """Tell the operator about a supervisor error or an answer to their own request."""
        if data["type"] == "error":
            reason = clip_text(data.get("message"), 300)
            self.notify(reason, title="Supervisor", severity="error", markup=False)
        notice = acknowledgement(data) if self.requests.answered(data) else None
        if notice is not None:
            self.notify(notice[0], severity=notice[1], markup=False)

    def on_open_call(self, message: OpenCall) -> None:
        self.push_screen(CallDetailScreen(self.model, message.call_id))

    def on_write_suggestion(self, message: WriteSuggestion) -> None:
        self.push_screen(SuggestionScreen(message.call_id))

    def on_suggestion_requested(self, message: SuggestionRequested) -> None:
        self.run_worker(self.inject(message.call_id, message.text, message.priority))

    def on_hangup_requested(self, message: HangupRequested) -> None:
        call = self.model.calls.get(message.call_id)
        caller = call.caller if call is not None else ""
        self.push_screen(ConfirmHangupScreen(message.call_id, caller))

    def on_hangup_confirmed(self, message: HangupConfirmed) -> None:
        self.run_worker(self.hangup(message.call_id))

    def on_help_requested(self, _message: HelpRequested) -> None:
        self.action_help()

    def on_reconnect_requested(self, _message: ReconnectRequested) -> None:
        self.action_reconnect()

    def on_filter_changed(self, message: FilterChanged) -> None:
        self.model.set_filter(message.text)
        self.repaint_after_key()

    def on_sort_requested(self, message: SortRequested) -> None:
        if message.column is not None:
            self.model.set_sort(message.column)
        elif message.reverse:
            self.model.reverse_sort()
        else:
            self.model.next_sort()
        self.repaint_after_key()

    def repaint_after_key(self) -> None:
        """Repaint once the key's own effect (a box opening or closing, the typed letter) is
        on screen: re-sorting a fleet must not stand between a key and its echo."""
        self.call_after_refresh(self.repaint)

    async def inject(self, call_id: str, text: str, priority: str = "normal") -> str | None:
        """Send a suggestion for ``call_id``; the request id, or None when it could not go."""
        request_id = self.requests.next_id()
        try:
            payload = inject_message(call_id, text, request_id, priority)
        except ValueError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return None
        if not await self._send(payload):
            return None
        self.requests.sent(request_id)
        self.model.note("suggest", f"{call_id} sent: {clip_text(text, 120)}", call_id=call_id)
        return request_id

    async def hangup(self, call_id: str) -> bool:
        if not await self._send(hangup_message(call_id)):
            return False
        self.model.request_hangup(call_id)
        self.model.note("hangup", f"{call_id} hang-up requested", call_id=call_id)
        self.repaint()
        return True

    async def _send(self, payload: dict[str, Any]) -> bool:
        if self.link is None or not await self.link.send(payload):
            self.notify(
                f"not connected to the supervisor; {payload['type']} was not sent",
                severity="error",
                markup=False,
            )
            return False
        return True

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_reconnect(self) -> None:
        if self.link is None:
            self.notify("started without a supervisor URL; nothing to reconnect", markup=False)
            return
        worker = next((w for w in self.workers if w.group == "supervisor"), None)
        if worker is None or worker.is_finished:
            self.connect_supervisor()
        else:
            self.link.retry_now()
