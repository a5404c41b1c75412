"""Options several subcommands share, written once so that their spelling and help agree."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def root_option(help: str = "filesystem root of the installation (tests)") -> Callable[[F], F]:
    """``--root DIR``: act on an installation under DIR instead of /."""
    return click.option(
        "--root",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("/"),
        show_default=True,
        help=help,
    )


def server_config_option() -> Callable[[F], F]:
    """``--config FILE``: the server's config.toml, default the installation's own."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="config file (default: /opt/xswarm/config.toml)",
    )


def service_user_option() -> Callable[[F], F]:
    """``--service-user NAME``: whose state and logs are, in a staging tree (with ``--root``).

    On a server it is always ``xswarm``, the account the units run as.
    """
    return click.option(
        "--service-user",
        default="xswarm",
        show_default=True,
        help="the service account's name, for a staging tree under --root (tests, images)",
    )


def backend_option() -> Callable[[F], F]:
    """``--backend HOST:PORT``: a bridge on another host, as listed in ``[haproxy] backends``."""
    return click.option(
        "--backend",
        required=True,
        metavar="HOST:PORT",
        help="the backend as listed in [haproxy] backends (or xswarm install --backends)",
    )


def to_stderr(text: str) -> None:
    """Where commands write warnings and progress: stderr, so that stdout stays the result a
    script reads."""
    click.echo(text, err=True)
