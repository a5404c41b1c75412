"""Telling HAProxy about a rolling restart through its admin socket.

A restarting instance first stops accepting, and HAProxy only notices after its health checks
fail, so calls sent there in between wait for the next process. Putting the server in
``drain`` state first means HAProxy sends it no new calls at all; once the instance is back and
ready it returns to ``ready``. The socket path and names match deploy/haproxy/haproxy.cfg.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

from xswarm.ops.layout import Layout

BACKEND = "xswarm_voice_instances"
ADMIN_SOCKET = "/run/haproxy-xswarm.sock"
# The certificate chain and key HAProxy serves, as one PEM: `xswarm install --tls-cert`.
TLS_PEM = "/etc/haproxy/xswarm/xswarm.pem"
_INSTANCE_UNIT = re.compile(r"^xswarm-voice@(\d+)\.service$")


def server_for(unit: str) -> str | None:
    """The HAProxy server line ``install`` wrote for a template instance unit."""
    match = _INSTANCE_UNIT.match(unit)
    return f"voice{match.group(1)}" if match else None


def state_command(server: str, state: str) -> str:
    if state not in ("ready", "drain", "maint"):
        raise ValueError(f"unknown server state {state!r}")
    return f"set server {BACKEND}/{server} state {state}\n"


def admin_socket(layout: Layout) -> Path:
    return layout.root / ADMIN_SOCKET.lstrip("/")


def tls_pem(layout: Layout) -> Path:
    return layout.root / TLS_PEM.lstrip("/")


def send(path: Path, line: str, timeout: float = 2.0) -> str:
    """One command on the admin socket; HAProxy answers with an empty line on success."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(line.encode())
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace").strip()


def set_state(layout: Layout, unit: str, state: str) -> str | None:
    """Set the unit's server state if HAProxy fronts it; None when done or not applicable,
    else what went wrong (the restart goes on: health checks still protect the calls)."""
    server = server_for(unit)
    path = admin_socket(layout)
    if server is None or not path.exists():
        return None
    try:
        answer = send(path, state_command(server, state))
    except OSError as exc:
        return f"HAProxy admin socket {path}: {exc}"
    return answer or None
