"""The main screen: instances, live calls, and the events pane.

Each repaint costs what is on screen: the calls table builds only its visible rows, the events
pane takes at most ``EVENT_LINES_PER_PAINT`` new lines (a flood shows as a count of the lines
skipped), and the summary and fleet totals are one pass over the model.
"""

from __future__ import annotations

import math

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.events import Resize
from textual.reactive import Reactive
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Header, Input

from xswarm.tui.messages import (
    FilterChanged,
    HangupRequested,
    OpenCall,
    SortRequested,
    WriteSuggestion,
)
from xswarm.tui.model import (
    LOG_EVENTS_KEPT,
    TOP_N,
    TOP_VIEWS,
    Changes,
    find_call,
    fleet_totals,
    host_totals_line,
    state_counts,
)
from xswarm.tui.screens.live import LiveScreen
from xswarm.tui.widgets.banner import ConnectionBanner
from xswarm.tui.widgets.calls import CallsTable
from xswarm.tui.widgets.events import EventsPane, event_text
from xswarm.tui.widgets.footer import KeysFooter
from xswarm.tui.widgets.instances import InstancesTable
from xswarm.tui.widgets.summary import SummaryLine
from xswarm.tui.widgets.virtual_table import VirtualTable

WIDE_AT = 120
EVENT_LINES_PER_PAINT = 20
TITLE_EVERY_S = 10.0
INSTANCES_EVERY_S = 1.0
VIEW_CYCLE: tuple[str | None, ...] = (*TOP_VIEWS, None)


class MainScreen(LiveScreen):
    # Textual repaints the whole screen whenever the focus moves, which every ``/`` and Escape
    # does; the two widgets involved repaint themselves for their ``:focus`` styles. At 5000
    # calls and 160x45 that full repaint was a quarter of a key's time on screen.
    focused: Reactive[Widget | None] = Reactive(None, repaint=False)
    # A call id the operator jumped to: the next repaint puts the cursor on it.
    _jump_to: str | None = None
    _titled_at = -math.inf
    _titled_filter = ""
    _instances_at = -math.inf
    _instances_timer: Timer | None = None

    BINDINGS = [
        Binding("enter", "open_call", "Detail", show=True),
        Binding("i", "suggest", "Suggest"),
        Binding("h", "hangup", "Hang up"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("o", "next_sort", "Sort"),
        Binding("O", "reverse_sort", "Reverse", show=False),
        Binding("t", "next_view", "Top N", show=False),
        Binding("g", "jump", "Go to call", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Header(icon="☎")
        yield ConnectionBanner(id="banner")
        with Horizontal(id="top"):
            yield InstancesTable(id="instances", cursor_type="none")
            yield EventsPane(LOG_EVENTS_KEPT, id="events")
        # The boxes share the summary's line: opening one resizes nothing but that line, where
        # a box of its own pushed every panel down and redrew the whole screen per key.
        with Horizontal(id="calls-bar"):
            yield SummaryLine(id="calls-summary")
            yield Input(
                placeholder="filter by id, caller, instance, transport", id="filter", compact=True
            )
            yield Input(
                placeholder="go to call: its id or part of it, enter to jump",
                id="jump",
                compact=True,
            )
        yield CallsTable(self.model, id="calls")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.query_one("#jump", Input).display = False
        self.query_one("#instances", InstancesTable).border_title = "instances"
        self.query_one("#calls", CallsTable).border_title = "live calls"
        self.query_one("#events", EventsPane).border_title = "events"
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
        calls = self.query_one("#calls", CallsTable)
        if changes.connection or changes.reset:
            self.query_one("#banner", ConnectionBanner).show(model)
            calls.set_class(not model.connected, "-stale")
        if changes.connection or changes.reset:
            self._show_instances()
        elif changes.instances:
            wait = self._instances_at + INSTANCES_EVERY_S - model.clock()
            if wait <= 0:
                self._show_instances()
            elif self._instances_timer is None:
                self._instances_timer = self.set_timer(wait, self._show_instances)
        if changes:
            keep, self._jump_to = self._jump_to, None
            calls.show(model, changes, keep)
        self._write_events(changes)
        self._summarise()

    def _show_instances(self) -> None:
        """The instances panel and its fleet totals.

        Every instance reports once a second, out of step with the others: shown as they
        come, a fleet of ten redrew the panel at every repaint. It follows at most every
        ``INSTANCES_EVERY_S``; a change of connection or a rebuild shows at once.
        """
        if self._instances_timer is not None:
            self._instances_timer.stop()
            self._instances_timer = None
        model = self.model
        self._instances_at = model.clock()
        instances = self.query_one("#instances", InstancesTable)
        instances.show(model)
        totals = fleet_totals(model)
        subtitle = (
            f"{totals.up}/{totals.instances} up · {totals.calls} calls · "
            f"{totals.free_slots} free slots · {totals.full} full"
        )
        if totals.refusals_last_minute is not None:
            subtitle += f" · {totals.refusals_last_minute} refused/min"
        instances.border_subtitle = subtitle
        per_host = host_totals_line(totals)
        instances.border_title = f"instances · {per_host}" if per_host else "instances"

    def _write_events(self, changes: Changes) -> None:
        log = self.query_one("#events", EventsPane)
        lines = changes.events
        if len(lines) > EVENT_LINES_PER_PAINT:
            skipped = len(lines) - EVENT_LINES_PER_PAINT
            log.write(Text(f"… {skipped} more events", style="dim italic"))
            lines = lines[-EVENT_LINES_PER_PAINT:]
        for line in lines:
            log.write(event_text(line))

    def _summarise(self) -> None:
        model = self.model
        calls = self.query_one("#calls", CallsTable)
        counts = state_counts(model)
        total = sum(counts.values())
        parts = [f"{total} calls"]
        if counts:
            parts[0] += ": " + " · ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        view = calls.calls_order.view
        if view is not None:
            parts.append(f"top {TOP_N} by {TOP_VIEWS[view][1]}")
        if model.filter_text:
            parts.append(f"filter: {model.filter_text}")
        parts.append(f"{calls.row_count} shown")
        self.query_one("#calls-summary", SummaryLine).show(Text(" | ".join(parts)))
        live = counts.get("active", 0)
        filtered = f" | filter: {model.filter_text}" if model.filter_text else ""
        sub_title = f"{live} live calls, {calls.row_count} shown{filtered}"
        # A new title lays the screen out again: the counts in it follow at most every
        # TITLE_EVERY_S (the summary line has them live); a new filter shows at once.
        now = model.clock()
        due = now - self._titled_at >= TITLE_EVERY_S or model.filter_text != self._titled_filter
        if sub_title != self.sub_title and due:
            self.sub_title = sub_title
            self._titled_at = now
            self._titled_filter = model.filter_text

    def watched(self) -> list[str]:
        return self.query_one("#calls", CallsTable).visible_keys()

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
        self.query_one("#jump", Input).display = False
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
        self.query_one("#jump", Input).display = False
        self.query_one("#calls", CallsTable).focus()

    def action_next_sort(self) -> None:
        self.post_message(SortRequested())

    def action_reverse_sort(self) -> None:
        self.post_message(SortRequested(reverse=True))

    def action_next_view(self) -> None:
        """Cycle the top-N views (worst latency, most late frames, longest, loudest, all)."""
        calls = self.query_one("#calls", CallsTable)
        current = VIEW_CYCLE.index(calls.calls_order.view)
        calls.calls_order.set_view(VIEW_CYCLE[(current + 1) % len(VIEW_CYCLE)])
        self.show(Changes(reset=True))

    def action_jump(self) -> None:
        box = self.query_one("#jump", Input)
        box.display = True
        box.value = ""
        box.focus()

    @on(Input.Submitted, "#jump")
    def jump_done(self, event: Input.Submitted) -> None:
        """Put the cursor on the call; a view or filter hiding it is cleared first."""
        box = self.query_one("#jump", Input)
        box.display = False
        calls = self.query_one("#calls", CallsTable)
        calls.focus()
        call_id = find_call(self.model, event.value)
        if call_id is None:
            if event.value.strip():
                self.notify(f"no call id contains {event.value.strip()!r}", markup=False)
            return
        self._jump_to = call_id
        if call_id not in calls.calls_order.order:
            calls.calls_order.set_view(None)
            if self.model.filter_text:
                self.action_clear_filter()
                return
        self.show(Changes(reset=True))

    @on(VirtualTable.HeaderSelected, "#calls")
    def header_clicked(self, event: VirtualTable.HeaderSelected) -> None:
        self.post_message(SortRequested(column=event.column))

    @on(VirtualTable.RowSelected, "#calls")
    def row_chosen(self, event: VirtualTable.RowSelected) -> None:
        self.post_message(OpenCall(event.key))
