"""``xswarm undrain --backend HOST:PORT``: a drained bridge on another host takes calls again."""

from __future__ import annotations

from pathlib import Path

import click

from xswarm.commands.options import backend_option, root_option, to_stderr
from xswarm.ops import haproxy_state
from xswarm.ops.layout import Layout


@click.command(name="undrain")
@backend_option()
@root_option()
def command(backend: str, root: Path) -> None:
    """On the front host: put a backend drained by xswarm drain back in rotation.

    HAProxy sends it calls again once its /readyz health check passes. Saved for a start
    of HAProxy after a power loss like a drain (see xswarm drain --help); a save that fails
    warns on stderr and the exit status stays 0, since the backend is in rotation.
    """
    server = haproxy_state.set_backend_state(Layout(root), backend, "ready", to_stderr)
    click.echo(f"{server}: back in rotation; HAProxy sends it calls while /readyz answers 200")
