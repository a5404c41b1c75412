"""``xswarm backup``: the release, units, config, .env and database in one dated folder."""

from __future__ import annotations

from pathlib import Path

import click

from xswarm.commands.options import root_option
from xswarm.ops import backup
from xswarm.ops.files import UntrustedPathError
from xswarm.ops.layout import Layout


@click.command(name="backup")
@click.option(
    "--keep",
    type=click.IntRange(1, 1000),
    default=backup.DEFAULT_KEEP,
    show_default=True,
    help="backups to keep in /opt/xswarm/backup",
)
@root_option()
def command(keep: int, root: Path) -> None:
    """Save the release, units, config, .env and the database to /opt/xswarm/backup/<time>/."""
    layout = Layout(root)
    layout.backup.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        folder, manifest = backup.backup(layout, keep)
    except (backup.BackupError, UntrustedPathError) as exc:
        raise click.ClickException(str(exc)) from None
    unit_files = manifest["units"]
    removed = manifest["removed"]
    assert isinstance(unit_files, list) and isinstance(removed, list)
    click.echo(f"backup written to {folder}")
    click.echo(
        f"  release {manifest['release']}, {len(unit_files)} unit files, "
        f"config {'yes' if manifest.get('config.toml') else 'no'}, "
        f".env {'yes' if manifest.get('.env') else 'no'}, "
        f"database {manifest.get('database_pages', 'absent')} pages"
    )
    for name in removed:
        click.echo(f"  removed old backup {name}")
