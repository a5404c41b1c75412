"""The one place that runs systemctl and journalctl; parsing of their output is pure.

Everything else in ``xswarm.ops`` asks this module, so tests can run the pure parts on any
machine and the end-to-end tests drive the real thing under a booted systemd.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from xswarm.errors import XswarmError

SHOW_PROPERTIES = (
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "MainPID",
    "StatusText",
    "NRestarts",
    "MemoryCurrent",
    "MemoryMax",
    "MemoryHigh",
    "TasksCurrent",
    "TasksMax",
    "ExecMainStatus",
    "Result",
    "FragmentPath",
)


class SystemctlError(XswarmError):
    """systemctl refused or failed; the message carries its own words."""


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def available() -> bool:
    """True when systemd is the running init and systemctl can talk to it."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def run(*args: str, timeout: float = 120.0) -> Result:
    argv = ["systemctl", "--no-pager", "--no-ask-password", *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise SystemctlError("systemctl is not installed; this command needs systemd") from None
    except subprocess.TimeoutExpired:
        raise SystemctlError(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s") from None
    return Result(done.returncode, done.stdout, done.stderr)


def must(*args: str, timeout: float = 120.0) -> Result:
    result = run(*args, timeout=timeout)
    if not result.ok:
        words = (result.stderr or result.stdout).strip() or f"exit {result.returncode}"
        raise SystemctlError(f"systemctl {' '.join(args)} failed: {words}")
    return result


def parse_show(text: str) -> list[dict[str, str]]:
    """``systemctl show`` output: one dict per unit (blocks separated by a blank line)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, _, value = line.partition("=")
        current[key] = value
    if current:
        blocks.append(current)
    return blocks


def show(
    units: list[str], properties: tuple[str, ...] = SHOW_PROPERTIES
) -> dict[str, dict[str, str]]:
    if not units:
        return {}
    result = run("show", "--property=" + ",".join(properties), *units)
    blocks = parse_show(result.stdout)
    return {block.get("Id", unit): block for unit, block in zip(units, blocks, strict=False)}


def list_units(pattern: str) -> list[str]:
    """Loaded units matching a glob, e.g. ``xswarm-voice@*.service``, in any state."""
    result = run("list-units", "--all", "--plain", "--no-legend", pattern)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def daemon_reload() -> None:
    must("daemon-reload")


def restart(unit: str, timeout: float = 180.0) -> Result:
    """Restart after clearing the start-rate counter, which counts manual restarts too."""
    run("reset-failed", unit)
    return run("restart", unit, timeout=timeout)


def journal(unit: str, lines: int = 20, priority: str | None = None, own: bool = False) -> str:
    """The unit's journal; ``own`` keeps only its processes' lines, not systemd's about it."""
    which = [f"_SYSTEMD_UNIT={unit}"] if own else ["-u", unit]
    argv = ["journalctl", "--no-pager", *which, "-n", str(lines), "-o", "cat"]
    if priority:
        argv += ["-p", priority]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return done.stdout


def number(value: str | None) -> int | None:
    """A numeric property, None for empty, ``[not set]`` or ``infinity``."""
    if value is None:
        return None
    try:
        parsed = int(value)
    except ValueError:
        return None
    return None if parsed >= 2**63 - 1 or parsed < 0 else parsed
