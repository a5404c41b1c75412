"""``xswarm upgrade --wheelhouse DIR``: a new release, rolled out one instance at a time."""

from __future__ import annotations

from pathlib import Path

import click

from xswarm.commands.options import root_option, to_stderr
from xswarm.ops import releases, rolling, upgrade
from xswarm.ops.files import UntrustedPathError
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
@root_option()
def command(
    wheelhouse: Path, version: str | None, timeout: float, keep: int, python: str | None, root: Path
) -> None:
    """Install a new release and restart onto it, rolling back on its own if it is unhealthy."""
    interpreter = python or releases.default_python()
    try:
        upgrade.upgrade(
            Layout(root), wheelhouse, version, timeout, keep, interpreter, click.echo, to_stderr
        )
    except (rolling.RolloutError, UntrustedPathError) as exc:
        raise click.ClickException(str(exc)) from None
