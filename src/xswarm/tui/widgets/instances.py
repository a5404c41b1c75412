"""The instances panel: one row per voice instance the supervisor watches."""

from __future__ import annotations

from rich.text import Text

from xswarm.tui.model import DashboardModel, InstanceView, format_bytes
from xswarm.tui.widgets.keyed_table import ColumnSpec, KeyedTable

# Sized to fit 80 columns: memory reads "rss/MemoryHigh/MemoryMax", tick "p50/p99" in ms.
COLUMNS = (
    ColumnSpec("name", "instance", 9),
    ColumnSpec("state", "state", 8),
    ColumnSpec("engine", "engine", 6),
    ColumnSpec("calls", "calls", 7, numeric=True),
    ColumnSpec("tick", "tick ms", 9, numeric=True),
    ColumnSpec("cpu", "cpu", 4, numeric=True),
    ColumnSpec("memory", "mem/high/max", 15, numeric=True),
    ColumnSpec("restarts", "rst", 3, numeric=True),
)

STATE_STYLES = {
    "up": "bold green",
    "draining": "yellow",
    "stale": "bold yellow",
    "down": "bold red",
    "unreachable": "bold red",
    "auth_refused": "bold magenta",
}

# Within the state column's 8 characters; the events pane and the detail say why in full.
STATE_LABELS = {"unreachable": "unreach", "auth_refused": "refused"}


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _memory(instance: InstanceView) -> Text:
    rss, high, top = instance.rss, instance.memory_high, instance.memory_max
    text = f"{format_bytes(rss)}/{format_bytes(high)}/{format_bytes(top)}"
    style = ""
    if rss is not None and top is not None and rss >= 0.9 * top:
        style = "bold red"
    elif rss is not None and high is not None and rss >= high:
        style = "yellow"
    return Text(text, style=style, justify="right")


def _engine(instance: InstanceView) -> Text:
    """The engine, or on a GPU the device it owns ("cuda:1", only MOSHI runs there): one
    column says both within 80 columns."""
    if instance.device.startswith("cuda"):
        return Text(instance.device)
    return Text(instance.engine or "–")


def instance_cells(instance: InstanceView, connected: bool) -> list[Text]:
    state = instance.state if connected else "stale"
    calls = f"{'–' if instance.active_calls is None else instance.active_calls}/" + (
        "–" if instance.max_concurrent_calls is None else str(instance.max_concurrent_calls)
    )
    cells = [
        Text(instance.name),
        Text(STATE_LABELS.get(state, state), style=STATE_STYLES.get(state, "")),
        _engine(instance),
        Text(calls, justify="right"),
        Text(f"{_ms(instance.tick_p50_ms)}/{_ms(instance.tick_p99_ms)}", justify="right"),
        Text("–" if instance.cpu is None else f"{instance.cpu:.0f}%", justify="right"),
        _memory(instance),
        Text("–" if instance.restarts is None else str(instance.restarts), justify="right"),
    ]
    if not connected:
        for cell in cells:
            cell.style = "dim"
    return cells


class InstancesTable(KeyedTable):
    def show(self, model: DashboardModel) -> None:
        self.set_columns(COLUMNS)
        names = sorted(model.instances)
        gone = [key for key in self._shown if key not in model.instances]
        upserts = {n: instance_cells(model.instances[n], model.connected) for n in names}
        self.apply_rows(upserts, gone, names)
