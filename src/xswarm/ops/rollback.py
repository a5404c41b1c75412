"""``xswarm rollback [RELEASE]``: back to an earlier release that is still installed.

Restores the units that release was installed with (kept in ``releases/<v>/units``), moves
``current``, runs daemon-reload, and restarts one instance at a time with a health check.
"""

from __future__ import annotations

from pathlib import Path

import click

from xswarm.ops import releases, rolling
from xswarm.ops.layout import Layout


@click.command(name="rollback")
@click.argument("release", required=False)
@click.option(
    "--timeout",
    type=float,
    default=rolling.READY_TIMEOUT,
    show_default=True,
    help="seconds each instance has to become ready after its restart",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="filesystem root of the installation (tests)",
)
def command(release: str | None, timeout: float, root: Path) -> None:
    """Go back to RELEASE (default: the one before the current) and restart onto it."""
    layout = Layout(root)
    now = releases.current(layout)
    target = release or releases.previous(layout)
    present = releases.installed(layout)
    if target is None:
        raise click.ClickException(
            f"no earlier release to go back to (installed: {', '.join(present) or 'none'})"
        )
    if target not in present:
        raise click.ClickException(
            f"release {target} is not installed; installed: {', '.join(present) or 'none'}"
        )
    if target == now:
        click.echo(f"release {target} is already current")
        return
    click.echo(f"rolling back {now} -> {target}")
    running = rolling.running_targets(layout)
    error = rolling.switch_to(
        layout, target, running, click.echo, fresh_units=False, timeout=timeout
    )
    if error is not None:
        raise click.ClickException(f"rollback to {target}: {error}")
    click.echo(f"now on {target}")
