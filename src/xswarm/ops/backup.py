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
from xswarm.ops import releases
from xswarm.ops.inventory import database_path, installed_units
from xswarm.ops.layout import Layout

DEFAULT_KEEP = 10


class BackupError(XswarmError):
    """A backup could not be made whole; nothing torn is left in its place."""


def copy_database(source: Path, target: Path) -> int:
    """Online copy of a SQLite file; returns its page count."""
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


def backup(layout: Layout, keep: int) -> tuple[Path, dict[str, object]]:
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
        (staging / "release").mkdir()
        for wheel in (home / "wheel").glob("*.whl"):
            shutil.copy2(wheel, staging / "release" / wheel.name)
        pip = home / "venv" / "bin" / "pip"
        if pip.exists():
            frozen = subprocess.run(
                [str(pip), "freeze", "--disable-pip-version-check"],
                capture_output=True,
                text=True,
                check=False,
            )
            (staging / "release" / "requirements.txt").write_text(frozen.stdout)
    files = installed_units(layout)
    for relative, text in files.items():
        target = staging / "units" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    manifest["units"] = sorted(files)
    secrets = ((layout.config, "config.toml", 0o640), (layout.env_file, ".env", 0o600))
    for source, name, mode in secrets:
        if source.exists():
            shutil.copyfile(source, staging / name)
            os.chmod(staging / name, mode)
            manifest[name] = True
    try:
        config = config_module.load(layout.config)
    except ConfigError:
        config = config_module.defaults()
    database = database_path(config, layout)
    if database.exists():
        manifest["database_pages"] = copy_database(database, staging / "xswarm.db")
        manifest["database"] = str(database)
    (staging / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    staging.rename(folder)
    manifest["removed"] = prune(layout, keep)
    return folder, manifest
