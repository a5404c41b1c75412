"""``xswarm upgrade --wheelhouse DIR``: a new release, rolled out one instance at a time.

The new release is built beside the old one, its units installed and ``current`` flipped;
then each running instance is restarted and must come back ready on the new code. If one does
not, the old release's saved units and ``current`` are put back and everything is restarted
onto it again, and the command exits 1: the server is left running what it ran before.
"""

from __future__ import annotations

from pathlib import Path

import click

from xswarm.ops import releases, rolling
from xswarm.ops.install import DEFAULT_KEEP
from xswarm.ops.layout import Layout


@click.command(name="upgrade")
@click.option(
    "--wheelhouse",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="directory holding the new xswarm wheel and its dependencies",
)
@click.option("--version", "version", default=None, help="release to install (default: newest)")
@click.option(
    "--timeout",
    type=float,
    default=rolling.READY_TIMEOUT,
    show_default=True,
    help="seconds each instance has to become ready after its restart",
)
@click.option(
    "--keep",
    type=click.IntRange(1, 100),
    default=DEFAULT_KEEP,
    show_default=True,
    help="releases to keep",
)
@click.option("--python", default=None, help="interpreter for the release venv (default: system)")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="filesystem root of the installation (tests)",
)
def command(
    wheelhouse: Path, version: str | None, timeout: float, keep: int, python: str | None, root: Path
) -> None:
    """Install a new release and restart onto it, rolling back on its own if it is unhealthy."""
    layout = Layout(root)
    old = releases.current(layout)
    if old is None:
        raise click.ClickException("nothing is installed yet; run `sudo xswarm install` first")
    wheel = releases.find_wheel(wheelhouse, version)
    new, built = releases.build(layout, wheel, wheelhouse, python or releases.default_python())
    if new == old:
        click.echo(f"release {new} is already current; nothing to upgrade")
        return
    click.echo(f"release {new} {'built' if built else 'already present'}; upgrading from {old}")
    running = rolling.running_targets(layout)
    error = rolling.switch_to(layout, new, running, click.echo, fresh_units=True, timeout=timeout)
    if error is None:
        for name in releases.prune(layout, keep):
            click.echo(f"removed old release {name} (keeping {keep})")
        click.echo(f"upgraded {old} -> {new}")
        return
    click.echo(f"ROLLING BACK to {old}: {error}", err=True)
    again = rolling.switch_to(layout, old, running, click.echo, fresh_units=False, timeout=timeout)
    if again is not None:
        raise click.ClickException(
            f"upgrade to {new} failed ({error}) and so did the rollback "
            f"to {old} ({again}); see `sudo xswarm doctor`"
        )
    raise click.ClickException(f"upgrade to {new} failed ({error}); rolled back to {old}")
