"""``xswarm reloadctl [PID]``: the units' ExecReload, a SIGHUP that waits for its outcome."""

from __future__ import annotations

import click

from xswarm.ops import reloadctl


@click.command(name="reloadctl")
@click.argument("pid", type=int, required=False)
@click.option(
    "--timeout",
    type=float,
    default=reloadctl.DEFAULT_TIMEOUT,
    show_default=True,
    help="seconds to wait for the service to report its reload",
)
def command(pid: int | None, timeout: float) -> None:
    """Reload a service (SIGHUP) and wait until it has applied or refused its config."""
    try:
        target = reloadctl.target_pid(pid)
        state = reloadctl.reload(target, reloadctl.state_path(), timeout)
    except reloadctl.ReloadError as exc:
        raise click.ClickException(str(exc)) from None
    if not state.ok:
        raise click.ClickException(f"reload refused, old config kept: {state.message}")
    click.echo(f"reloaded: {state.message}" if state.message else "reloaded")
