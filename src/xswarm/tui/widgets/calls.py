"""The live calls table: one row per call, keyed by call id, in the operator's sort order."""

from __future__ import annotations

from rich.text import Text

from xswarm.tui.model import CallOrder, CallView, Changes, DashboardModel, format_duration
from xswarm.tui.widgets.keyed_table import ColumnSpec
from xswarm.tui.widgets.virtual_table import VirtualTable

# Sized so that ten columns plus their padding fit 80 columns with a scrollbar.
NARROW_COLUMNS = (
    ColumnSpec("call_id", "id", 10),
    ColumnSpec("transport", "via", 6),
    ColumnSpec("caller", "caller", 11),
    ColumnSpec("duration_s", "dur", 5, numeric=True),
    ColumnSpec("level_in_dbfs", "in", 4, numeric=True),
    ColumnSpec("level_out_dbfs", "out", 4, numeric=True),
    ColumnSpec("latency_p50_ms", "p50", 4, numeric=True),
    ColumnSpec("latency_p99_ms", "p99", 4, numeric=True),
    ColumnSpec("late_frames", "late", 4, numeric=True),
    ColumnSpec("state", "state", 8),
)
WIDE_COLUMNS = (
    ColumnSpec("call_id", "id", 14),
    ColumnSpec("instance", "instance", 15),
    ColumnSpec("transport", "transport", 9),
    ColumnSpec("caller", "caller", 18),
    ColumnSpec("duration_s", "duration", 8, numeric=True),
    ColumnSpec("level_in_dbfs", "in dBFS", 7, numeric=True),
    ColumnSpec("level_out_dbfs", "out dBFS", 8, numeric=True),
    ColumnSpec("latency_p50_ms", "p50 ms", 6, numeric=True),
    ColumnSpec("latency_p99_ms", "p99 ms", 6, numeric=True),
    ColumnSpec("late_frames", "late", 6, numeric=True),
    ColumnSpec("state", "state", 18),
)

LATENCY_WARN_MS = 100.0
LATENCY_BAD_MS = 200.0
LEVEL_CLIPPING_DBFS = -1.0


def _number(value: float | None, style: str = "") -> Text:
    if value is None:
        return Text("–", style="dim", justify="right")
    return Text(f"{value:.0f}", style=style, justify="right")


def _latency_style(value: float | None) -> str:
    if value is None or value < LATENCY_WARN_MS:
        return ""
    return "yellow" if value < LATENCY_BAD_MS else "bold red"


def _cell(call: CallView, column: str) -> Text:
    if column == "duration_s":
        return Text(format_duration(call.duration_s), justify="right")
    if column in ("level_in_dbfs", "level_out_dbfs"):
        value = getattr(call, column)
        clipping = value is not None and value >= LEVEL_CLIPPING_DBFS
        return _number(value, "bold red" if clipping else "")
    if column in ("latency_p50_ms", "latency_p99_ms"):
        value = getattr(call, column)
        return _number(value, _latency_style(value))
    if column == "late_frames":
        late = call.late_frames
        return _number(late, "yellow" if late else "")
    if column == "state":
        state = call.shown_state
        style = "green" if state == "active" else "yellow" if state == "hanging up" else "dim"
        return Text(state, style=style)
    if column == "caller":
        # Calls without a From number (WebSocket clients) show where they connect from.
        if call.caller:
            return Text(call.caller)
        return Text(call.remote, style="dim") if call.remote else Text("–", style="dim")
    return Text(str(getattr(call, column)))


def call_cells(call: CallView, columns: tuple[ColumnSpec, ...], stale: bool) -> list[Text]:
    """The row for one call; remote strings stay plain ``Text``, dimmed while stale."""
    cells = [_cell(call, spec.key) for spec in columns]
    if stale:
        for cell in cells:
            cell.style = "dim"
        cells[-1] = Text("stale", style="dim italic")
    return cells


class CallsTable(VirtualTable):
    """``DashboardModel.calls`` in the order ``CallOrder`` keeps; builds on-screen rows only."""

    def __init__(self, model: DashboardModel, *, id: str | None = None) -> None:
        super().__init__(self._build, id=id)
        self.model = model
        self.calls_order = CallOrder()
        self.wide = False

    @property
    def column_specs(self) -> tuple[ColumnSpec, ...]:
        return WIDE_COLUMNS if self.wide else NARROW_COLUMNS

    def _build(self, call_id: str) -> list[Text]:
        call = self.model.calls.get(call_id)
        if call is None:
            return [Text("") for _ in self.columns]
        return call_cells(call, tuple(self.columns.values()), self.model.call_is_stale(call))

    def show(self, model: DashboardModel, changes: Changes, keep: str | None = None) -> None:
        """Bring the table in line with the model: new order, then the changed on-screen rows."""
        self.model = model
        columns = self.column_specs
        labels = {}
        if model.sort_column is not None:
            spec = next((s for s in columns if s.key == model.sort_column), None)
            if spec is not None:
                labels[spec.key] = f"{spec.label}{'▼' if model.sort_reverse else '▲'}"
        self.set_columns(columns, labels)
        if changes.reset or changes.connection:
            self.forget_rows()
        self.set_order(self.calls_order.update(model, changes), keep)
        self.update_rows([*changes.calls, *changes.removed])
