"""The main screen: instances, live calls, and the events pane."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.events import Resize
from textual.widgets import DataTable, Footer, Header, Input, RichLog

from xswarm.tui.messages import (
    FilterChanged,
    HangupRequested,
    OpenCall,
    SortRequested,
    WriteSuggestion,
)
from xswarm.tui.model import Changes
from xswarm.tui.screens.live import LiveScreen
from xswarm.tui.widgets.banner import ConnectionBanner
from xswarm.tui.widgets.calls import CallsTable
from xswarm.tui.widgets.events import event_text
from xswarm.tui.widgets.instances import InstancesTable

WIDE_AT = 120


class MainScreen(LiveScreen):
    BINDINGS = [
        Binding("enter", "open_call", "Detail", show=True),
        Binding("i", "suggest", "Suggest"),
        Binding("h", "hangup", "Hang up"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("o", "next_sort", "Sort"),
        Binding("O", "reverse_sort", "Reverse", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Header(icon="☎")
        yield ConnectionBanner(id="banner")
        yield Input(placeholder="filter by id, caller, instance, transport", id="filter")
        with Horizontal(id="top"):
            yield InstancesTable(id="instances", cursor_type="none")
            yield RichLog(id="events", max_lines=500, markup=False, wrap=True)
        yield CallsTable(id="calls")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.query_one("#instances", InstancesTable).border_title = "instances"
        self.query_one("#calls", CallsTable).border_title = "live calls"
        self.query_one("#events", RichLog).border_title = "events"
        self.query_one("#calls", CallsTable).focus()
        self.show(
            Changes(reset=True, instances=True, connection=True, events=list(self.model.events))
        )

    def on_resize(self, event: Resize) -> None:
        calls = self.query_one("#calls", CallsTable)
        wide = event.size.width >= WIDE_AT
        if wide != calls.wide:
            calls.wide = wide
            self.show(Changes(reset=True, instances=True))

    def show(self, changes: Changes) -> None:
        """Apply one batch of model changes to the widgets (the screen must be composed)."""
        model = self.model
        if changes.connection or changes.reset:
            self.query_one("#banner", ConnectionBanner).show(model)
            self.query_one("#calls", CallsTable).set_class(not model.connected, "-stale")
        if changes.instances or changes.connection or changes.reset:
            self.query_one("#instances", InstancesTable).show(model)
        if changes:
            self.query_one("#calls", CallsTable).show(model, changes)
        log = self.query_one("#events", RichLog)
        for line in changes.events:
            log.write(event_text(line))
        shown = self.query_one("#calls", CallsTable).row_count
        live = sum(1 for c in model.calls.values() if c.state == "active")
        filtered = f" | filter: {model.filter_text}" if model.filter_text else ""
        self.sub_title = f"{live} live calls, {shown} shown{filtered}"

    def selected_call(self) -> str | None:
        return self.query_one("#calls", CallsTable).selected_key()

    def action_open_call(self) -> None:
        call_id = self.selected_call()
        if call_id is not None:
            self.post_message(OpenCall(call_id))

    def action_suggest(self) -> None:
        call_id = self.selected_call()
        if call_id is not None:
            self.post_message(WriteSuggestion(call_id))

    def action_hangup(self) -> None:
        call_id = self.selected_call()
        if call_id is not None:
            self.post_message(HangupRequested(call_id))

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.value = self.model.filter_text
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.display = False
        self.post_message(FilterChanged(""))
        self.query_one("#calls", CallsTable).focus()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.post_message(FilterChanged(event.value))

    @on(Input.Submitted, "#filter")
    def filter_done(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            self.query_one("#filter", Input).display = False
        self.query_one("#calls", CallsTable).focus()

    def action_next_sort(self) -> None:
        self.post_message(SortRequested())

    def action_reverse_sort(self) -> None:
        self.post_message(SortRequested(reverse=True))

    @on(DataTable.HeaderSelected, "#calls")
    def header_clicked(self, event: DataTable.HeaderSelected) -> None:
        column = event.column_key.value
        if column is not None:
            self.post_message(SortRequested(column=column))

    @on(DataTable.RowSelected, "#calls")
    def row_chosen(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.post_message(OpenCall(event.row_key.value))
