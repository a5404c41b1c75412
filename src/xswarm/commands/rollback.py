"""``xswarm rollback [RELEASE]``: back to an earlier installed release, one unit at a time."""

from __future__ import annotations

from pathlib import Path

import click

from xswarm.commands.options import root_option
from xswarm.ops import rollback, rolling
from xswarm.ops.files import UntrustedPathError
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
@root_option()
def command(release: str | None, timeout: float, root: Path) -> None:
    """Go back to RELEASE (default: the one before the current) and restart onto it."""
    try:
        rollback.rollback(Layout(root), release, timeout, click.echo)
    except (rolling.RolloutError, UntrustedPathError) as exc:
        raise click.ClickException(str(exc)) from None
