"""The ``xswarm`` command: one entry point, one module per subcommand, imported lazily.

Lazy imports keep ``xswarm status`` fast and keep torch and Textual out of commands that do
not need them. Each subcommand is the module ``xswarm.commands.<name>``, exposing a click
command named ``command``.
"""

from __future__ import annotations

import importlib

import click

from xswarm import __version__
from xswarm.runtime.boundary import run_command

SUBCOMMANDS = (
    "backup",
    "bench",
    "call",
    "dashboard",
    "doctor",
    "drain",
    "haproxy",
    "install",
    "models",
    "reloadctl",
    "rollback",
    "status",
    "targets",
    "twilio",
    "undrain",
    "upgrade",
)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        module = importlib.import_module(f"xswarm.commands.{cmd_name}")
        command: click.Command = module.command
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xswarm")
def cli() -> None:
    """xswarm: run a real-time MOSHI voice service on a Linux server."""


def main() -> None:
    run_command(cli, "xswarm")
