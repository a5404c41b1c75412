"""``xswarm dashboard``: the operator's live view of every call, in a terminal."""

from __future__ import annotations

import os

import click

from xswarm import config as config_module

TOKEN_ENV = "XSWARM_SUPERVISOR_TOKEN"


def default_url(config_path: str | None) -> str:
    """The supervisor's operator API from the config's [dashboard] host and port."""
    cfg = config_module.load(config_path)
    host = cfg.get("dashboard", "host")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{cfg.get('dashboard', 'port')}/ws"


def check_url(url: str) -> str:
    if not url.startswith(("ws://", "wss://")):
        raise click.BadParameter(
            f"{url!r} is not a WebSocket URL; expected ws://HOST:PORT/ws or wss://HOST/ws",
            param_hint="--url",
        )
    return url


@click.command("dashboard")
@click.option("--url", help="supervisor operator API; default ws://<[dashboard] host>:<port>/ws")
@click.option("--token", help=f"supervisor token; default ${TOKEN_ENV}")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="config file to read [dashboard] host and port from",
)
def command(url: str | None, token: str | None, config_path: str | None) -> None:
    """Watch and steer live calls: the real-time monitoring TUI."""
    from xswarm.tui import settings
    from xswarm.tui.app import XswarmDashboard

    target = check_url(url) if url else default_url(config_path)
    secret = token if token is not None else os.environ.get(TOKEN_ENV, "")
    XswarmDashboard(url=target, token=secret, settings_path=settings.default_path()).run()
