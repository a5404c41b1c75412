"""``xswarm status``: services, health, calls, restarts and memory, on one screen."""

from __future__ import annotations

from pathlib import Path

import click

from xswarm import config as config_module
from xswarm.commands.options import root_option, server_config_option
from xswarm.errors import ConfigError
from xswarm.ops import releases, status
from xswarm.ops.layout import Layout


@click.command(name="status")
@root_option()
@server_config_option()
def command(root: Path, config_path: Path | None) -> None:
    """Services, health, active calls, restarts and memory against limits, on one screen."""
    layout = Layout(root)
    path = config_path or layout.config
    try:
        config = config_module.load(path if path.exists() else None)
    except ConfigError as exc:
        raise click.ClickException(f"{exc} (xswarm doctor explains)") from None
    click.echo(status.render(releases.current(layout), status.collect(layout, config)))
