"""The ``xswarm`` command: one entry point, one module per subcommand, imported lazily.

Lazy imports keep ``xswarm status`` fast and keep torch and Textual out of commands that do
not need them. Each subcommand module exposes a click command named ``command``.
"""

from __future__ import annotations

import importlib

import click

from xswarm import __version__
from xswarm.runtime.boundary import run_command

# name -> module holding ``command``; the help text comes from the command itself.
SUBCOMMANDS = {
    "call": "xswarm.client.call_cmd",
    "bench": "xswarm.client.bench_cmd",
    "dashboard": "xswarm.tui.command",
    "models": "xswarm.engine.models_cmd",
    "install": "xswarm.ops.install",
    "doctor": "xswarm.ops.doctor",
    "status": "xswarm.ops.status",
    "backup": "xswarm.ops.backup",
    "rollback": "xswarm.ops.rollback",
    "upgrade": "xswarm.ops.upgrade",
    "reloadctl": "xswarm.ops.reloadctl",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = SUBCOMMANDS.get(cmd_name)
        if module_name is None:
            return None
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("xswarm"):
                return None
            raise
        command: click.Command = module.command
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xswarm")
def cli() -> None:
    """xswarm: run a real-time MOSHI voice service on a Linux server."""


def main() -> None:
    run_command(cli, "xswarm")
