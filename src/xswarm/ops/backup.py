"""A backup: what a rollback or a rebuilt server needs, in one dated folder.

The release (its name, its exact package set and the wheel it was built from), the installed
units, config.toml, .env (kept mode 600) and the SQLite database, copied through SQLite's
online backup API so that a live supervisor's writes never leave a torn copy.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

from xswarm import config as config_module
from xswarm.errors import ConfigError, XswarmError
from xswarm.ops import files, releases
from xswarm.ops.inventory import database_path, installed_units
from xswarm.ops.layout import Layout

DEFAULT_KEEP = 10


class BackupError(XswarmError):
    """A backup could not be made whole; nothing torn is left in its place."""


def copy_database(source: Path, target: Path) -> int:
    """Online copy of a SQLite file; returns its page count."""
    files.write_file(target, b"", 0o600, replace=False)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=10)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            pages = dst.execute("PRAGMA page_count").fetchone()[0]
            verdict = dst.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            dst.close()
    finally:
        src.close()
    if verdict != "ok":
        raise BackupError(f"the copy of {source} fails its integrity check: {verdict}")
    return int(pages)


def prune(layout: Layout, keep: int) -> list[str]:
    folders = sorted(
        p for p in layout.backup.iterdir() if p.is_dir() and (p / "MANIFEST.json").exists()
    )
    removed = []
    for folder in folders[: max(0, len(folders) - keep)]:
        shutil.rmtree(folder)
        removed.append(folder.name)
    return removed


def _save(target: Path, data: str | bytes, mode: int = 0o600) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    files.write_file(target, data, mode)


def _fsync_tree(top: Path) -> None:
    """Flush every file and directory of a finished backup before it is renamed into place."""
    for path in sorted(top.rglob("*"), reverse=True):
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif path.is_dir():
            files.fsync_dir(path)
    files.fsync_dir(top)


def backup(layout: Layout, keep: int) -> tuple[Path, dict[str, object]]:
    """Refuses (UntrustedPathError) when anything it reads as root, or the backup folder,
    could have been changed by another user: root neither copies from nor runs what the
    service account could have planted."""
    for path in (layout.opt, layout.backup, layout.releases, layout.unit_dir):
        files.check_trusted(path, layout.root)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = layout.backup / stamp
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = layout.backup / f"{stamp}-{suffix}"
    staging = layout.backup / f".{folder.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True, mode=0o700)
    manifest: dict[str, object] = {"created": stamp}
    version = releases.current(layout)
    manifest["release"] = version
    if version is not None:
        home = layout.release_dir(version)
        files.check_trusted(home, layout.root)
        (staging / "release").mkdir()
        for wheel in (home / "wheel").glob("*.whl"):
            files.check_trusted(wheel, layout.root)
            _save(staging / "release" / wheel.name, files.read_trusted(wheel), 0o644)
        pip = home / "venv" / "bin" / "pip"
        if pip.exists():
            files.check_trusted(pip, layout.root)
            frozen = subprocess.run(
                [str(pip), "freeze", "--disable-pip-version-check"],
                capture_output=True,
                text=True,
                check=False,
            )
            _save(staging / "release" / "requirements.txt", frozen.stdout, 0o644)
    unit_files = installed_units(layout)
    for relative, text in unit_files.items():
        _save(staging / "units" / relative, text, 0o644)
    manifest["units"] = sorted(unit_files)
    secrets = ((layout.config, "config.toml", 0o640), (layout.env_file, ".env", 0o600))
    for source, name, mode in secrets:
        if os.path.lexists(source):
            files.check_trusted(source, layout.root)
            _save(staging / name, files.read_trusted(source), mode)
            manifest[name] = True
    try:
        config = config_module.load(layout.config)
    except ConfigError:
        config = config_module.defaults()
    database = database_path(config, layout)
    if database.is_symlink():
        raise BackupError(
            f"{database} is a symbolic link; root will not copy what it points at. "
            "Move it aside (the supervisor recreates the database) and back up again"
        )
    if database.exists():
        manifest["database_pages"] = copy_database(database, staging / "xswarm.db")
        manifest["database"] = str(database)
    _save(staging / "MANIFEST.json", json.dumps(manifest, indent=2) + "\n", 0o644)
    _fsync_tree(staging)
    staging.rename(folder)
    files.fsync_dir(layout.backup)
    manifest["removed"] = prune(layout, keep)
    return folder, manifest
