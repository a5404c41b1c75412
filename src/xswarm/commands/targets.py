"""``xswarm targets``: this host's Prometheus targets, as file_sd files.

Prometheus may run on another host: print the files here and copy them there, or give
``--out /etc/prometheus/xswarm`` where Prometheus runs beside the services.
"""

from __future__ import annotations

import socket
from pathlib import Path

import click

from xswarm import config as config_module
from xswarm.commands.options import root_option, server_config_option
from xswarm.errors import ConfigError
from xswarm.ops import files, inventory
from xswarm.ops.layout import Layout
from xswarm.ops.scrape_targets import TARGET_MODE, TargetError, host_targets


@click.command(name="targets")
@root_option()
@server_config_option()
@click.option(
    "--advertise",
    default=None,
    help="the name or address Prometheus reaches this host by, for services bound to a "
    "wildcard address (default: this host's FQDN)",
)
@click.option(
    "--host-label",
    default=None,
    help="the host label and file-name suffix (default: this host's short name)",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="write voice-HOST.json and dashboard-HOST.json into this directory instead of "
    "printing them (e.g. /etc/prometheus/xswarm)",
)
def command(
    root: Path,
    config_path: Path | None,
    advertise: str | None,
    host_label: str | None,
    out: Path | None,
) -> None:
    """Prometheus file_sd targets for the voice instances and the supervisor on this host."""
    layout = Layout(root)
    path = config_path or layout.config
    try:
        config = config_module.load(path if path.exists() else None)
    except ConfigError as exc:
        raise click.ClickException(f"{exc} (xswarm doctor explains)") from None
    instances = inventory.installed_instances(inventory.installed_units(layout))
    try:
        found = host_targets(
            config,
            instances,
            advertise or socket.getfqdn(),
            host_label or socket.gethostname().split(".")[0],
        )
    except (TargetError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    pairs = ((found.voice_name, found.voice), (found.dashboard_name, found.dashboard))
    if out is None:
        for name, text in pairs:
            click.echo(f"# {name}\n{text}", nl=False)
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, text in pairs:
        files.write_file(out / name, text, TARGET_MODE, None)
        click.echo(f"wrote {out / name}")
