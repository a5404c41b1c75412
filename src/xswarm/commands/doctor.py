"""``xswarm doctor``: every known cause of a failing xswarm on this server, with its fix."""

from __future__ import annotations

from pathlib import Path

import click

from xswarm.commands.options import root_option, server_config_option, service_user_option
from xswarm.ops import checks, doctor
from xswarm.ops.layout import Layout


@click.command(name="doctor")
@root_option()
@server_config_option()
@service_user_option()
def command(root: Path, config_path: Path | None, service_user: str) -> None:
    """Check this server for every known cause of a failing xswarm, with the fix for each."""
    layout = Layout(root, service_user)
    findings = checks.diagnose(doctor.gather(layout, config_path or layout.config))
    click.echo(doctor.format_findings(findings))
    if checks.failed(findings):
        raise SystemExit(1)
