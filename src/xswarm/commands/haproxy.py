"""``xswarm haproxy save-state``: HAProxy's server states, kept for its next start.

Run by root from haproxy.service's ExecReload= and ExecStop= (deploy/haproxy/server-state.conf),
right before HAProxy re-reads its config, so that drained servers stay drained.
"""

from __future__ import annotations

from pathlib import Path

import click

from xswarm.commands.options import root_option
from xswarm.ops import haproxy_state
from xswarm.ops.layout import Layout


@click.group(name="haproxy")
def command() -> None:
    """HAProxy on the front host, beyond drain and undrain."""


@command.command(name="save-state")
@root_option()
@click.option(
    "--haproxy-config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="the haproxy.cfg HAProxy is about to load (default: /etc/haproxy/haproxy.cfg)",
)
def save_state(root: Path, haproxy_config: Path | None) -> None:
    """Write the running HAProxy's server states (drain, maint, up, down) to the file its
    config loads at start-up. Exit 1 when they could not be saved: if HAProxy is dead or hung
    (ExecStop= after a crash), the file xswarm last saved is kept for the next start; on any
    other failure it is removed, so nothing stale is loaded. The message says which."""
    layout = Layout(root)
    saved = haproxy_state.save_for_next_start(layout, haproxy_config or layout.haproxy_config)
    click.echo(saved.report())
