"""Switching releases on a live server: units, ``current``, then one instance at a time.

Upgrade and rollback share this. Each running voice unit is restarted alone and must come
back ready (/readyz 200) running the release it was switched to (its main process's command
line lives under that release) before the next one goes; the supervisor goes last. Calls on
the other instances go on, and socket activation queues new connections during each restart.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xswarm import config as config_module
from xswarm.config import Config
from xswarm.errors import XswarmError
from xswarm.ops import (
    files,
    haproxy,
    haproxy_state,
    health,
    install,
    releases,
    systemctl,
    units,
)
from xswarm.ops.inventory import installed_instances, installed_profiles, installed_units
from xswarm.ops.layout import Layout

READY_TIMEOUT = 60.0


class RolloutError(XswarmError):
    """An upgrade or rollback that cannot start, or did not end on the release it aimed at."""


@dataclass(frozen=True)
class Target:
    unit: str
    host: str
    port: int
    path: str  # /readyz for voice, /healthz for the supervisor


def targets(config: Config) -> list[Target]:
    """Running xswarm units, voice instances first, the supervisor last."""
    names = [n for n in systemctl.list_units("xswarm-voice*.service") if n.endswith(".service")]
    names += ["xswarm-dashboard.service"]
    state = systemctl.show(names, ("Id", "ActiveState"))
    running = [
        n
        for n in names
        if state.get(n, {}).get("ActiveState") in ("active", "reloading", "activating")
    ]
    out = []
    for name in running:
        if name == "xswarm-dashboard.service":
            dash = config.dashboard
            out.append(Target(name, dash.host, dash.port, "/healthz"))
            continue
        instance = name[len("xswarm-voice@") : -len(".service")] if "@" in name else None
        view = config.for_instance(int(instance)) if instance and instance.isdigit() else config
        bridge = view.bridge
        out.append(Target(name, bridge.host, bridge.port, "/readyz"))
    return out


def running_release(unit: str, layout: Layout) -> str | None:
    """The release the unit's main process was started from, read from its command line."""
    pid = systemctl.number(systemctl.show([unit], ("Id", "MainPID")).get(unit, {}).get("MainPID"))
    if not pid:
        return None
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    prefix = str(layout.releases) + os.sep
    for word in argv:
        text = word.decode("utf-8", "replace")
        if text.startswith(prefix):
            return text[len(prefix) :].split(os.sep, 1)[0]
    return None


def restart_and_check(
    target: Target, layout: Layout, version: str, timeout: float, say: Callable[[str], None]
) -> str | None:
    """Restart one unit behind a drained HAProxy server; None when it came back healthy on
    ``version``, else why not."""
    _set_in_haproxy(layout, target.unit, "drain", say)
    try:
        return _restart_and_check(target, layout, version, timeout)
    finally:
        _back_in_rotation(layout, target.unit, say)


def _set_in_haproxy(layout: Layout, unit: str, state: str, say: Callable[[str], None]) -> bool:
    """Set the unit's HAProxy server state; False, and said why, when HAProxy refused it or
    could not be asked. The restart goes on either way: health checks still guard calls."""
    problem = haproxy.set_state(layout, unit, state)
    if problem:
        say(f"  HAProxy did not set {unit} to {state}: {problem.rstrip('.')}; the restart goes on")
    return problem is None


def _back_in_rotation(layout: Layout, unit: str, say: Callable[[str], None]) -> None:
    """Undo the restart's drain and save HAProxy's server states: a reload during the restart
    saved the drain, which a start after a power loss would load. The drain itself is not
    saved: it lasts seconds, and no xswarm command undrains a local instance that a power
    loss in those seconds left drained."""
    server = haproxy.fronted_server(layout, unit)
    if server is None:
        return
    if _set_in_haproxy(layout, unit, "ready", say):
        warning = haproxy_state.save_after_change(layout, f"{server} is back in rotation")
        if warning:
            say(f"  {warning}")


def _restart_and_check(target: Target, layout: Layout, version: str, timeout: float) -> str | None:
    result = systemctl.restart(target.unit, timeout=timeout + 60)
    if not result.ok:
        props = systemctl.show([target.unit], ("Id", "Result", "ExecMainStatus"))
        state = props.get(target.unit, {})
        lines = systemctl.journal(target.unit, lines=1, own=True).strip().splitlines()
        said = f"; it logged: {lines[-1][:200]}" if lines else ""
        return (
            f"systemctl restart {target.unit} failed (result {state.get('Result', '?')}, "
            f"exit status {state.get('ExecMainStatus', '?')}){said}"
        )
    deadline = time.monotonic() + timeout
    probe = health.get(health.url(target.host, target.port, target.path))
    while not probe.ok and time.monotonic() < deadline:
        time.sleep(0.5)
        probe = health.get(health.url(target.host, target.port, target.path))
    if not probe.ok:
        why = probe.error or f"HTTP {probe.status} {probe.body[:120]}"
        return f"{target.unit} is not healthy after restart ({target.path}: {why})"
    running = running_release(target.unit, layout)
    if running != version:
        return f"{target.unit} runs release {running}, expected {version}"
    return None


def rolling_restart(
    layout: Layout,
    running: list[Target],
    version: str,
    say: Callable[[str], None],
    timeout: float = READY_TIMEOUT,
) -> str | None:
    for target in running:
        say(f"restarting {target.unit} ...")
        error = restart_and_check(target, layout, version, timeout, say)
        if error:
            say(f"  FAILED: {error}")
            return error
        say(f"  {target.unit} healthy on {version}")
    return None


def activate(layout: Layout, version: str, plan_from_saved: bool) -> None:
    """Put a release's units in place, point ``current`` at it, and daemon-reload."""
    report = install.Report()
    if plan_from_saved:
        install.restore_units(layout, version, report)
    else:
        files = installed_units(layout)
        config = config_module.load(layout.config)
        plan = units.render(
            layout, version, config, installed_instances(files), installed_profiles(files)
        )
        install.install_units(layout, plan, report)
    releases.switch(layout, version)
    if systemctl.available():
        systemctl.daemon_reload()


def switch_to(
    layout: Layout,
    version: str,
    running: list[Target],
    say: Callable[[str], None],
    fresh_units: bool,
    timeout: float = READY_TIMEOUT,
) -> str | None:
    """Activate ``version`` and restart ``running`` onto it; the first error, if any.

    ``running`` is taken once, before the first switch, so that a rollback also brings back a
    unit that a failed restart took down with it (the supervisor Requires the voice service).
    """
    activate(layout, version, plan_from_saved=not fresh_units)
    say(f"{layout.current} -> releases/{version}; units installed; daemon-reload done")
    return rolling_restart(layout, running, version, say, timeout)


def check_layout(layout: Layout) -> None:
    """Refuse to act as root on an installation someone else could have changed: the
    application directory, releases, config.toml, .env and the unit directory."""
    for path in (layout.opt, layout.releases, layout.config, layout.env_file, layout.unit_dir):
        files.check_trusted(path, layout.root)


def running_targets(layout: Layout) -> list[Target]:
    if not systemctl.available():
        return []
    return targets(config_module.load(layout.config))
