"""The process boundary of every click console script: how an error becomes an exit status.

Kept apart from ``xswarm.cli`` so that the daemons' entry points share it without importing
the admin command's table of subcommands; it needs nothing but click and ``xswarm.errors``.
"""

from __future__ import annotations

import sys

import click

from xswarm.errors import XswarmError


def run_command(command: click.Command, prog: str) -> None:
    """Run ``command`` as a process: an XswarmError is printed once, as one line, and becomes
    the exit status (78 for config errors); Ctrl-C exits 130; click's own errors keep click's
    wording."""
    try:
        command.main(standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except XswarmError as exc:
        click.echo(f"{prog}: {exc}", err=True)
        sys.exit(exc.exit_status)
