"""``reload.json``: how a daemon tells ``xswarm reloadctl`` (systemd's ExecReload) what a
SIGHUP did.

A bare ``kill -HUP`` returns before the service has read its config, so the daemon records
each reload's outcome as ``{"generation", "ok", "message", "pid"}`` in its runtime directory
and ``reloadctl`` waits for the generation to grow. ``xswarm.ops.reloadctl`` reads this format.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger("xswarm.runtime")

RECORD_NAME = "reload.json"


def runtime_dir() -> Path | None:
    """systemd's ``$RUNTIME_DIRECTORY`` (its first entry), else ``$XSWARM_RUNTIME_DIR``."""
    value = os.environ.get("RUNTIME_DIRECTORY") or os.environ.get("XSWARM_RUNTIME_DIR")
    return Path(value.split(":")[0]) if value else None


def write_reload_record(generation: int, ok: bool, message: str) -> None:
    """Replace reload.json atomically (temp file + rename), so a reader never sees half of it.

    Without a runtime directory nobody can be waiting, so nothing is written.
    """
    folder = runtime_dir()
    if folder is None:
        return
    body = {"generation": generation, "ok": ok, "message": message, "pid": os.getpid()}
    target = folder / RECORD_NAME
    temp = folder / f".{RECORD_NAME}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temp.write_text(json.dumps(body) + "\n", encoding="utf-8")
        os.replace(temp, target)
    except OSError as exc:
        log.error("cannot write %s: %s; `xswarm reloadctl` will time out", target, exc.strerror)
