"""Who holds a TCP port: read from /proc, so error messages can name the process to stop."""

from __future__ import annotations

import os
from pathlib import Path


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN.
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    return inodes


def who_listens(port: int) -> tuple[int, str] | None:
    """(pid, process name) of a process listening on ``port``, when /proc lets us see it."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    with os.scandir("/proc") as processes:
        for process in processes:
            if process.name.isdigit() and _holds_any(process.name, targets):
                try:
                    name = Path(f"/proc/{process.name}/comm").read_text().strip()
                except OSError:  # it has just exited
                    continue
                return int(process.name), name
    return None


def _holds_any(pid: str, targets: set[str]) -> bool:
    """Whether process ``pid`` has one of ``targets`` open; False when /proc hides it."""
    try:
        with os.scandir(f"/proc/{pid}/fd") as fds:
            return any(os.readlink(fd.path) in targets for fd in fds)
    except OSError:
        return False


def describe_owner(port: int) -> str:
    """'in use by PID 4242 (nginx)', or a plainer phrase when the owner is hidden from us."""
    owner = who_listens(port)
    if owner is None:
        return "in use (by a process this user cannot see)"
    return f"in use by PID {owner[0]} ({owner[1]})"
