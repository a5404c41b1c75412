"""``xswarm twilio``: connect a Twilio number to this bridge (``twiml`` prints what to paste)."""

from __future__ import annotations

from pathlib import Path

import click

from xswarm import config as config_module
from xswarm.commands.options import server_config_option
from xswarm.ops import twilio_console
from xswarm.protocol import twilio


@click.group(name="twilio")
def command() -> None:
    """Connect a Twilio phone number to this bridge."""


@command.command(name="twiml")
@server_config_option()
@click.option(
    "--public-url",
    default=None,
    help="the URL at which Twilio reaches the bridge (default: [voice.bridge] public_url)",
)
@click.option("--number", default=None, help="the Twilio number to set up, +E.164 (for the text)")
def twiml(config_path: Path | None, public_url: str | None, number: str | None) -> None:
    """Print the webhook URLs for a number's Voice Configuration, and the TwiML they answer."""
    if number is not None and (problem := twilio.e164_problem(number)):
        raise click.BadParameter(problem, param_hint="--number")
    config = config_module.load(config_path)
    url = twilio_console.public_url_of(config, public_url)
    click.echo(twilio_console.console_setup(config, url, number))
