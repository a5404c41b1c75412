"""``xswarm dashboard``: the operator's live view of every call, in a terminal."""

from __future__ import annotations

import click

from xswarm.tui import endpoint


def check_url(url: str) -> str:
    if not url.startswith(("ws://", "wss://")):
        raise click.BadParameter(
            f"{url!r} is not a WebSocket URL; expected ws://HOST:PORT/ws or wss://HOST/ws",
            param_hint="--url",
        )
    return url


@click.command("dashboard")
@click.option("--url", help="supervisor operator API; default ws://<[dashboard] host>:<port>/ws")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help=f"file holding the supervisor token (mode 600); default ${endpoint.SUPERVISOR_TOKEN_ENV}"
    f" or ${endpoint.SUPERVISOR_TOKEN_ENV}_FILE",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="config file to read [dashboard] host and port from",
)
def command(url: str | None, token_file: str | None, config_path: str | None) -> None:
    """Watch and steer live calls: the real-time monitoring TUI.

    There is no --token option: an argument is visible to every local user in ps. Give the
    token in a private file (--token-file) or the environment.
    """
    from xswarm.tui import settings
    from xswarm.tui.app import XswarmDashboard

    target = check_url(url) if url else endpoint.default_url(config_path)
    secret = endpoint.token(token_file)
    XswarmDashboard(url=target, token=secret, settings_path=settings.default_path()).run()
