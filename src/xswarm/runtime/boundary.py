"""The process boundary: deep code raises ``XswarmError``, the console script ends here.

The message is printed once, as one line, and ``exit_status`` becomes the process's (78,
EX_CONFIG, for config errors, so systemd's ``RestartPreventExitStatus=78`` stops a restart
loop); Ctrl-C exits 130 as a shell expects.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import click

from xswarm.errors import XswarmError


@contextlib.contextmanager
def exit_on_error(report: Callable[[XswarmError], None]) -> Iterator[None]:
    """Turn an ``XswarmError`` into ``report(error)`` and its exit status; Ctrl-C into 130."""
    try:
        yield
    except KeyboardInterrupt:
        sys.exit(130)
    except XswarmError as exc:
        report(exc)
        sys.exit(exc.exit_status)


def run_command(command: click.Command, prog: str) -> None:
    """Run a click console script: its usage errors as click shows them, ours as one line."""
    with exit_on_error(lambda exc: click.echo(f"{prog}: {exc}", err=True)):
        try:
            command.main(standalone_mode=False)
        except click.exceptions.Abort:
            sys.exit(130)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
