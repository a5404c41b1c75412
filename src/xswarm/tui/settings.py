"""The operator's view settings, kept between runs: which column the calls are sorted by.

A small JSON file under ``$XDG_CONFIG_HOME/xswarm`` (``~/.config/xswarm``). It is a
convenience, so a missing, unreadable or hand-broken file never stops the dashboard: it is
reported in the events pane and the defaults are used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from xswarm.tui.model import SORT_COLUMNS, DashboardModel

MAX_SETTINGS_BYTES = 64 * 1024


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "xswarm" / "dashboard.json"


def load(path: Path, model: DashboardModel) -> str | None:
    """Apply the saved sort to ``model``; returns why the file was ignored, if it was."""
    try:
        if path.stat().st_size > MAX_SETTINGS_BYTES:
            return f"{path} is larger than {MAX_SETTINGS_BYTES} bytes; ignored"
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{path} cannot be read ({exc}); using the default view"
    if not isinstance(data, dict):
        return f"{path} does not hold a JSON object; using the default view"
    column, reverse = data.get("sort_column"), data.get("sort_reverse")
    if column is not None and column not in SORT_COLUMNS:
        return f"{path}: unknown sort_column {str(column)[:40]!r}; using the default view"
    model.sort_column = column
    model.sort_reverse = reverse is True
    return None


def save(path: Path, model: DashboardModel) -> str | None:
    """Write the current sort; returns the reason when it could not be written."""
    body = {"sort_column": model.sort_column, "sort_reverse": model.sort_reverse}
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.write_text(json.dumps(body) + "\n", encoding="utf-8")
        os.replace(temp, path)
    except OSError as exc:
        return f"cannot save the view settings to {path}: {exc.strerror}"
    return None
