"""Where the dashboard finds its supervisor: the operator API's URL, and the token for it."""

from __future__ import annotations

import os

from xswarm import config as config_module
from xswarm.protocol.auth import SUPERVISOR_TOKEN_ENV
from xswarm.tokens import read_token


def default_url(config_path: str | None) -> str:
    """The supervisor's operator API from the config's [dashboard] host and port."""
    cfg = config_module.load(config_path)
    host = cfg.dashboard.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{cfg.dashboard.port}/ws"


def token(token_file: str | None) -> str:
    """The operator token: from ``token_file``, else ``$XSWARM_SUPERVISOR_TOKEN`` (or its
    ``_FILE``), else none. Never from a command-line argument, which any local user sees in
    ``ps``. A file must be private to its owner (mode 600), as the services require."""
    if token_file is not None:
        return read_token(SUPERVISOR_TOKEN_ENV, {f"{SUPERVISOR_TOKEN_ENV}_FILE": token_file}) or ""
    return read_token(SUPERVISOR_TOKEN_ENV, os.environ) or ""
