"""Releases: one virtual environment per version, ``current`` flipped atomically, a history.

Each release is built at its final path (``/opt/xswarm/releases/<version>/venv``) because a
venv is not relocatable: its console scripts carry the absolute path of its interpreter, and
that is what pins a running process to its release after ``current`` moves. A release counts
only once its ``.complete`` marker exists, so a half-built one is rebuilt, never run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from xswarm.errors import XswarmError
from xswarm.ops import files
from xswarm.ops.layout import Layout

COMPLETE = ".complete"
# A release name becomes a directory name: only the characters a PEP 440 version uses.
_WHEEL = re.compile(r"^xswarm-(?P<version>[0-9][0-9A-Za-z.+!_]*)-[^-]+-[^-]+-[^-]+\.whl$")


class ReleaseError(XswarmError):
    """A release cannot be built, found or switched to."""


def version_key(version: str) -> tuple[tuple[int, str], ...]:
    """Sort key for versions like 0.1.10 > 0.1.9, tolerant of suffixes (1.0rc1)."""
    parts = []
    for piece in re.split(r"[.+-]", version):
        match = re.match(r"(\d*)(.*)", piece)
        number, rest = match.groups() if match else ("", piece)
        parts.append((int(number) if number else -1, rest))
    return tuple(parts)


def wheel_version(path: Path) -> str:
    match = _WHEEL.match(path.name)
    if match is None:
        raise ReleaseError(f"{path} is not an xswarm wheel (expected xswarm-VERSION-*.whl)")
    return match.group("version")


def find_wheel(wheelhouse: Path, version: str | None = None) -> Path:
    """The xswarm wheel to install: the one of ``version``, else the newest in the wheelhouse."""
    if not wheelhouse.is_dir():
        raise ReleaseError(f"wheelhouse {wheelhouse} is not a directory; pass --wheelhouse DIR")
    wheels = [p for p in wheelhouse.iterdir() if _WHEEL.match(p.name)]
    if version is not None:
        wheels = [p for p in wheels if wheel_version(p) == version]
    if not wheels:
        wanted = f"xswarm {version}" if version else "an xswarm wheel"
        raise ReleaseError(
            f"{wheelhouse} holds no wheel of {wanted}; "
            "build one with `pip wheel --no-deps -w DIR .`"
        )
    return max(wheels, key=lambda p: version_key(wheel_version(p)))


def installed(layout: Layout) -> list[str]:
    """Complete releases, oldest version first."""
    if not layout.releases.is_dir():
        return []
    names = [p.name for p in layout.releases.iterdir() if (p / COMPLETE).exists()]
    return sorted(names, key=version_key)


def current(layout: Layout) -> str | None:
    try:
        target = os.readlink(layout.current)
    except OSError:
        return None
    return Path(target).name


def history(layout: Layout) -> list[str]:
    try:
        return [line for line in layout.history.read_text().split() if line]
    except FileNotFoundError:
        return []


def previous(layout: Layout) -> str | None:
    """The release that was current before this one and is still installed."""
    now = current(layout)
    present = set(installed(layout))
    for name in reversed(history(layout)):
        if name != now and name in present:
            return name
    return None


def switch(layout: Layout, version: str) -> None:
    """Point ``current`` at a release with one rename(2), and record it in the history."""
    if version not in installed(layout):
        raise ReleaseError(f"release {version} is not installed under {layout.releases}")
    files.check_trusted(layout.release_dir(version), layout.root)
    files.replace_symlink(layout.current, f"releases/{version}")
    names = history(layout)
    if not names or names[-1] != version:
        text = "".join(f"{name}\n" for name in [*names, version])
        files.write_file(layout.history, text, 0o644)


def prune(layout: Layout, keep: int) -> list[str]:
    """Remove the oldest releases beyond ``keep``, never the current or the previous one."""
    protected = {current(layout), previous(layout)}
    names = installed(layout)
    removable = [n for n in names if n not in protected]
    excess = max(0, len(names) - max(keep, 1))
    removed = removable[:excess]
    for name in removed:
        shutil.rmtree(layout.release_dir(name))
    return removed


def build(layout: Layout, wheel: Path, wheelhouse: Path | None, python: str) -> tuple[str, bool]:
    """Create the release of ``wheel`` unless it is complete already: (version, built?)."""
    version = wheel_version(wheel)
    home = layout.release_dir(version)
    if (home / COMPLETE).exists():
        return version, False
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    venv = home / "venv"
    _run([python, "-m", "venv", str(venv)], f"creating the virtual environment {venv}")
    (home / "wheel").mkdir()
    kept = home / "wheel" / wheel.name
    shutil.copy2(wheel, kept)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-input"]
    pip += ["--disable-pip-version-check", "--no-compile"]
    if wheelhouse is not None:
        pip += ["--no-index", "--find-links", str(wheelhouse)]
    _run([*pip, str(kept)], f"installing {wheel.name} into {venv}")
    for script in ("xswarm", "xswarm-voice", "xswarm-dashboard"):
        if not (venv / "bin" / script).exists():
            raise ReleaseError(f"{wheel.name} installed no {script} console script into {venv}")
    files.write_file(home / COMPLETE, version + "\n", 0o644)
    return version, True


def _run(argv: list[str], doing: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise ReleaseError(f"{doing} failed (exit {result.returncode}): " + " | ".join(tail))


def default_python() -> str:
    """The interpreter for new release venvs: the system's, never a venv's own."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    return getattr(sys, "_base_executable", sys.executable)
