"""``xswarm dashboard``: the operator's live view of every call, in a terminal."""

from __future__ import annotations

import gc
import os

import click

from xswarm.tui import endpoint


def check_url(url: str) -> str:
    if not url.startswith(("ws://", "wss://")):
        raise click.BadParameter(
            f"{url!r} is not a WebSocket URL; expected ws://HOST:PORT/ws or wss://HOST/ws",
            param_hint="--url",
        )
    return url


DEFAULT_NICE = 10

# Milliseconds a lone Escape byte waits to be told apart from the start of a key's escape
# sequence (the variable ncurses and Textual read).
ESCAPE_DELAY_MS = "50"


def quicker_escape() -> None:
    """Let Escape land 50 ms after its byte (``xswarm.tui.driver`` polls just after it).

    With Textual's own 100 ms wait, Escape took 100 or 200 ms to close the filter box. A
    terminal sends a key's whole escape sequence in one write, so 50 ms still tells arrow
    keys from Escape over ssh; an operator's own ESCDELAY is kept. It must run before
    Textual is imported: Textual reads the variable once.
    """
    os.environ.setdefault("ESCDELAY", ESCAPE_DELAY_MS)


def keep_startup_objects_out_of_collections() -> None:
    """Leave what the imports made (Textual's and our classes, functions, stylesheets) out of
    every later garbage collection: it lives as long as the process, and each full collection
    walked it again while a key pressed at that moment waited. Collected once first, so that
    nothing left for garbage is kept for good."""
    gc.collect()
    gc.freeze()


def lower_priority(increment: int) -> None:
    """Be the first process the kernel starves: operators open the dashboard on the voice
    host itself, exactly when it is busy, and a call must never wait for a repaint."""
    if increment > 0:
        os.nice(increment)


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
@click.option(
    "--nice",
    "niceness",
    type=click.IntRange(0, 19),
    default=DEFAULT_NICE,
    show_default=True,
    help="lower the dashboard's own CPU priority by this much (like nice -n)",
)
@click.option("--no-nice", is_flag=True, help="keep the normal CPU priority (same as --nice 0)")
def command(
    url: str | None, token_file: str | None, config_path: str | None, niceness: int, no_nice: bool
) -> None:
    """Watch and steer live calls: the real-time monitoring TUI.

    There is no --token option: an argument is visible to every local user in ps. Give the
    token in a private file (--token-file) or the environment.

    It runs at a lower CPU priority (nice +10 by default) so that, on the voice host itself,
    it never takes CPU time that live calls need; --nice N or --no-nice change that.
    """
    quicker_escape()
    from xswarm.tui import settings
    from xswarm.tui.app import XswarmDashboard

    target = check_url(url) if url else endpoint.default_url(config_path)
    secret = endpoint.token(token_file)
    lower_priority(0 if no_nice else niceness)
    app = XswarmDashboard(url=target, token=secret, settings_path=settings.default_path())
    keep_startup_objects_out_of_collections()
    app.run()
