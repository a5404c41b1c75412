"""One call up close: latency and level sparklines, the model's words, the call's events."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.widgets import Header, Label, RichLog, Sparkline, Static

from xswarm.tui.messages import HangupRequested, WriteSuggestion
from xswarm.tui.model import CallView, Changes, DashboardModel, format_duration
from xswarm.tui.screens.live import LiveScreen
from xswarm.tui.widgets.events import event_text
from xswarm.tui.widgets.footer import KeysFooter

SPARKS = (
    ("latency_p50_history", "latency p50 ms", "latency_p50_ms"),
    ("latency_p99_history", "latency p99 ms", "latency_p99_ms"),
    ("level_in_history", "level in dBFS", "level_in_dbfs"),
    ("level_out_history", "level out dBFS", "level_out_dbfs"),
)


def _figure(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def call_summary(call: CallView | None, call_id: str, stale: bool) -> Text:
    """The head of the detail screen; every remote value is appended as plain text."""
    if call is None:
        return Text(f"call {call_id} is no longer known to the dashboard", style="dim")
    text = Text()
    text.append(call.call_id, style="bold")
    text.append(f"  {call.shown_state}", style="green" if call.state == "active" else "yellow")
    if stale:
        text.append("  (stale)", style="bold yellow")
    text.append("\ncaller ", style="dim")
    text.append(call.caller or "–")
    text.append("  via ", style="dim")
    text.append(call.transport or "–")
    text.append("  on ", style="dim")
    text.append(call.instance or "–")
    text.append("  from ", style="dim")
    text.append(call.remote or "–")
    text.append("\nduration ", style="dim")
    text.append(format_duration(call.duration_s))
    text.append("  frames in/out ", style="dim")
    text.append(f"{_figure(call.frames_in)}/{_figure(call.frames_out)}")
    text.append("  late ", style="dim")
    text.append(_figure(call.late_frames))
    text.append("  suggestions ", style="dim")
    text.append(_figure(call.suggestions))
    text.append("  started ", style="dim")
    text.append(call.started_at or "–")
    return text


class CallDetailScreen(LiveScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("i", "suggest", "Suggest"),
        Binding("h", "hangup", "Hang up"),
    ]

    def __init__(self, model: DashboardModel, call_id: str) -> None:
        super().__init__(model)
        self.call_id = call_id
        self._events_written = 0
        self._transcript = ""

    def watched(self) -> list[str]:
        return [self.call_id]

    def compose(self) -> ComposeResult:
        yield Header(icon="☎")
        yield Static(id="summary")
        with Grid(id="sparks"):
            for attr, title, _field in SPARKS:
                with Vertical(classes="spark"):
                    yield Label(title, id=f"{attr}-label", classes="spark-label")
                    yield Sparkline([], id=attr)
        with Horizontal(id="detail-body"):
            with VerticalScroll(id="words-box"):
                yield Static(id="words")
            yield RichLog(id="call-events", max_lines=200, markup=False, wrap=True)
        yield KeysFooter()

    def on_mount(self) -> None:
        self.sub_title = f"call {self.call_id}"
        self.query_one("#words-box").border_title = "the model's words"
        self.query_one("#call-events").border_title = "call events"
        self.show(Changes(reset=True))

    def show(self, changes: Changes) -> None:
        """Redraw from the model; new words and events are appended, nothing is redrawn twice.

        Any change may touch this call (its staleness follows the connection and its
        instance), so ``changes`` is not consulted.
        """
        call = self.model.calls.get(self.call_id)
        stale = call is not None and self.model.call_is_stale(call)
        self.query_one("#summary", Static).update(call_summary(call, self.call_id, stale))
        if call is None:
            return
        for attr, title, field in SPARKS:
            history = list(getattr(call, attr))
            spark = self.query_one(f"#{attr}", Sparkline)
            if list(spark.data or []) != history:
                spark.data = history
            label = Text(f"{title}: {_figure(getattr(call, field))}")
            self.query_one(f"#{attr}-label", Label).update(label)
        if call.transcript != self._transcript:
            self._transcript = call.transcript
            self.query_one("#words", Static).update(Text(call.transcript))
            self.query_one("#words-box", VerticalScroll).scroll_end(animate=False)
        log = self.query_one("#call-events", RichLog)
        new = call.event_count - self._events_written
        if new > 0:
            for line in list(call.events)[-min(new, len(call.events)) :]:
                log.write(event_text(line))
            self._events_written = call.event_count

    def action_suggest(self) -> None:
        self.post_message(WriteSuggestion(self.call_id))

    def action_hangup(self) -> None:
        self.post_message(HangupRequested(self.call_id))
