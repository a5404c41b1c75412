"""The one screen of ``xswarm status``: the whole server, probed and laid out as a table.

Each xswarm unit with systemd's view of it (state, main PID, restarts, memory against
MemoryMax) and the service's own (/healthz, /readyz, active calls, the device its engine
runs on), plus the release.
"""

from __future__ import annotations

from dataclasses import dataclass

from xswarm.config import Config
from xswarm.ops import health, systemctl
from xswarm.ops.checks import size_text
from xswarm.ops.inventory import deployed_single_voice, installed_instances, installed_units
from xswarm.ops.layout import Layout


@dataclass(frozen=True)
class Row:
    unit: str
    port: int
    state: str = "unknown"
    pid: int = 0
    restarts: int | None = None
    memory: int | None = None
    memory_max: int | None = None
    status_text: str = ""
    healthy: bool | None = None
    ready: str = "-"
    calls: str = "-"
    # The device the bridge's engine runs on (/readyz), and on a GPU the card itself.
    device: str = "-"
    gpu: str = ""


def _memory(row: Row) -> str:
    """``2.0G / 16.0G (12%)``; the limit alone where the kernel does not account memory."""
    used = "-" if row.memory is None else size_text(row.memory)
    if not row.memory_max:
        return used
    text = f"{used} / {size_text(row.memory_max)}"
    if row.memory is not None:
        text += f" ({row.memory / row.memory_max:.0%})"
    return text


def render(release: str | None, rows: list[Row]) -> str:
    header = (
        "UNIT",
        "PORT",
        "STATE",
        "PID",
        "RESTARTS",
        "MEMORY / MAX",
        "HEALTH",
        "READY",
        "CALLS",
        "DEVICE",
    )
    table = [header]
    for row in rows:
        table.append(
            (
                row.unit,
                str(row.port),
                row.state,
                str(row.pid or "-"),
                "-" if row.restarts is None else str(row.restarts),
                _memory(row),
                {True: "ok", False: "DOWN", None: "-"}[row.healthy],
                row.ready,
                row.calls,
                row.device,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [f"xswarm release: {release or 'none installed'}", ""]
    for entry in table:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(entry)).rstrip())
    notes = [f"  {row.unit}: {row.status_text}" for row in rows if row.status_text]
    if notes:
        lines += ["", "Status lines:", *notes]
    cards = [f"  {row.unit}: {row.device} {row.gpu}" for row in rows if row.gpu]
    if cards:
        lines += ["", "GPUs:", *cards]
    return "\n".join(lines)


def voice_targets(config: Config, files: dict[str, str]) -> list[tuple[str, str, int]]:
    out = []
    bridge = config.bridge
    if not files or deployed_single_voice(files):
        out.append(("xswarm-voice.service", bridge.host, bridge.port))
    for number in installed_instances(files):
        view = config.for_instance(number).bridge
        out.append((f"xswarm-voice@{number}.service", view.host, view.port))
    return out


def collect(layout: Layout, config: Config) -> list[Row]:
    files = installed_units(layout)
    voices = voice_targets(config, files)
    dash = config.dashboard
    names = [v[0] for v in voices] + ["xswarm-dashboard.service"]
    shown = systemctl.show(names) if systemctl.available() else {}
    rows = []
    for unit, host, port, path in [(*v, "/readyz") for v in voices] + [
        ("xswarm-dashboard.service", dash.host, dash.port, "")
    ]:
        props = shown.get(unit, {})
        state = f"{props['ActiveState']}/{props['SubState']}" if props else "unknown"
        alive = health.get(health.url(host, port, "/healthz"), timeout=2)
        ready, calls, device, gpu = "-", "-", "-", ""
        if path:
            probe = health.get(health.url(host, port, path), timeout=2)
            body = probe.json()
            if probe.status:
                ready = "ready" if probe.ok else str(body.get("reason", probe.status))
            active, limit = body.get("active_calls"), body.get("max_concurrent_calls")
            if active is not None:
                calls = f"{active}/{limit}" if limit is not None else str(active)
            named, card = body.get("device"), body.get("gpu")
            device = named if isinstance(named, str) else device
            gpu = card if isinstance(card, str) else gpu
        rows.append(
            Row(
                unit=unit,
                port=port,
                state=state,
                pid=systemctl.number(props.get("MainPID")) or 0,
                restarts=systemctl.number(props.get("NRestarts")) if props else None,
                memory=systemctl.number(props.get("MemoryCurrent")),
                memory_max=systemctl.number(props.get("MemoryMax")),
                status_text=props.get("StatusText", ""),
                healthy=alive.ok if alive.status or alive.error else None,
                ready=ready,
                calls=calls,
                device=device,
                gpu=gpu,
            )
        )
    return rows
