"""Where the dashboard finds its supervisor: the operator API's URL, and the token for it."""

from __future__ import annotations

import os

from xswarm import config as config_module
from xswarm.protocol.auth import TOKEN_ENV


def default_url(config_path: str | None) -> str:
    """The supervisor's operator API from the config's [dashboard] host and port."""
    cfg = config_module.load(config_path)
    host = cfg.dashboard.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{cfg.dashboard.port}/ws"


def token(given: str | None) -> str:
    """The operator token: the one given, else ``$XSWARM_SUPERVISOR_TOKEN``, else none."""
    return given if given is not None else os.environ.get(TOKEN_ENV, "")
