"""The units' ExecReload (``xswarm reloadctl``): a SIGHUP that waits for its outcome.

A bare ``kill -HUP $MAINPID`` returns at once, so on systemd 252 ``systemctl reload`` can
report success before the service has even read its config (measured: 1 in 12), and never
reports a refused config. The services write ``$RUNTIME_DIRECTORY/reload.json``
(generation, ok, message, pid) after each SIGHUP; this waits until the generation grows.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from xswarm.errors import XswarmError

DEFAULT_TIMEOUT = 90.0


class ReloadError(XswarmError):
    """The reload could not be asked for, or the service never said how it went."""


@dataclass(frozen=True)
class ReloadState:
    generation: int
    ok: bool
    message: str
    pid: int | None


def parse_state(text: str) -> ReloadState | None:
    """The reload record, or None when it is absent, torn or not ours."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    generation, ok = data.get("generation"), data.get("ok")
    if not isinstance(generation, int) or isinstance(generation, bool) or not isinstance(ok, bool):
        return None
    message = data.get("message")
    pid = data.get("pid")
    return ReloadState(
        generation=generation,
        ok=ok,
        message=message if isinstance(message, str) else "",
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
    )


def read_state(path: Path) -> ReloadState | None:
    try:
        return parse_state(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):  # absent, or torn inside a multi-byte character
        return None


def state_path() -> Path:
    directory = os.environ.get("RUNTIME_DIRECTORY") or os.environ.get("XSWARM_RUNTIME_DIR")
    if not directory:
        raise ReloadError(
            "neither $RUNTIME_DIRECTORY nor $XSWARM_RUNTIME_DIR is set; run this as the unit's "
            "ExecReload (the unit sets RuntimeDirectory=) or export XSWARM_RUNTIME_DIR"
        )
    return Path(directory.split(":")[0]) / "reload.json"


def reload(pid: int, path: Path, timeout: float, poll: float = 0.05) -> ReloadState:
    """Send SIGHUP to ``pid`` and wait for a newer reload record from that same process."""
    before = read_state(path)
    generation = before.generation if before and before.pid in (pid, None) else 0
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ReloadError(f"no process {pid} to reload; is the service running?") from None
    except PermissionError:
        raise ReloadError(f"not allowed to signal PID {pid}; run as its user or root") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(path)
        if state is not None and state.pid in (pid, None) and state.generation > generation:
            return state
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise ReloadError(f"PID {pid} exited during the reload") from None
        except PermissionError:
            pass
        time.sleep(poll)
    raise ReloadError(
        f"PID {pid} did not report on its reload within {timeout:g} s ({path} unchanged); "
        "see journalctl for the service"
    )


def target_pid(given: int | None) -> int:
    """The process to reload: ``given``, else systemd's $MAINPID; never init."""
    if given is None:
        main = os.environ.get("MAINPID", "")
        if not main.isdigit() or int(main) <= 0:
            raise ReloadError("no PID given and $MAINPID is not set")
        given = int(main)
    if given <= 1:
        raise ReloadError(f"refusing to signal PID {given}")
    return given
