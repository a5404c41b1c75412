"""``xswarm drain --backend HOST:PORT``: no new calls to a bridge on another host, then wait
for its calls to end, so that host can upgrade without cutting a call."""

from __future__ import annotations

from pathlib import Path

import click

from xswarm.commands.options import backend_option, root_option, to_stderr
from xswarm.ops import haproxy_state
from xswarm.ops.layout import Layout


@click.command(name="drain")
@backend_option()
@click.option(
    "--timeout",
    type=click.FloatRange(0, 86400),
    default=600.0,
    show_default=True,
    help="seconds to wait for the backend's calls to end",
)
@root_option()
def command(backend: str, timeout: float, root: Path) -> None:
    """On the front host: stop sending new calls to a backend and wait until it has none.

    Then upgrade that host (xswarm upgrade there) and put it back with xswarm undrain.
    The drain is saved for a start of HAProxy after a power loss; if that save fails, a
    warning on stderr says why, and the exit status stays 0: HAProxy holds the drain, so the
    next step of a rolling upgrade (upgrading that host) is safe. Exit 1: HAProxy refused
    the drain, or calls were still open after --timeout.
    """
    haproxy_state.drain_backend(Layout(root), backend, timeout, click.echo, to_stderr)
