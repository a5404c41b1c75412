"""Telling HAProxy about a restart or an upgrade through its admin socket.

A restarting instance first stops accepting, and HAProxy only notices after its health checks
fail, so calls sent there in between wait for the next process. Putting the server in
``drain`` state first means HAProxy sends it no new calls at all; once the instance is back and
ready it returns to ``ready``. A local instance is drained by the rolling restart itself; a
backend on another host (``[haproxy] backends``) by ``xswarm drain --backend`` on the front
host, which waits for its calls to end, before that host upgrades (ops.haproxy_state, which
also saves the states for a start after a power loss). The socket path and names
match deploy/haproxy/haproxy.cfg.
"""

from __future__ import annotations

import csv
import re
import socket
from pathlib import Path

from xswarm.errors import XswarmError
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


class HaproxyError(XswarmError):
    """HAProxy's admin socket is absent, refused a command, or a drain did not finish."""


_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9.:-]")


def backend_server(host: str, port: int) -> str:
    """The server name of a backend on another host: ``host:port`` as ``backend_address``
    spells it, which HAProxy and its admin socket take as a name (an IPv6 address keeps its
    colons; nothing else but letters, digits, dots and hyphens). Local instances are
    ``voiceN``, which no ``host:port`` can be."""
    return _UNSAFE_IN_NAME.sub("_", f"{host}:{port}")


def state_command(server: str, state: str) -> str:
    if state not in ("ready", "drain", "maint"):
        raise ValueError(f"unknown server state {state!r}")
    return f"set server {BACKEND}/{server} state {state}\n"


def admin_socket(layout: Layout) -> Path:
    return layout.root / ADMIN_SOCKET.lstrip("/")


def tls_pem(layout: Layout) -> Path:
    return layout.root / TLS_PEM.lstrip("/")


# How long a command on the admin socket may take: HAProxy answers in microseconds.
ANSWER_TIMEOUT = 2.0


def send(path: Path, line: str, timeout: float = ANSWER_TIMEOUT) -> str:
    """One command on the admin socket; HAProxy answers with an empty line on success."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(line.encode())
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace").strip()


def fronted_server(layout: Layout, unit: str) -> str | None:
    """The HAProxy server in front of ``unit`` on this host; None when HAProxy fronts none
    (not a template instance, or no admin socket: a host without HAProxy)."""
    server = server_for(unit)
    if server is None or not admin_socket(layout).exists():
        return None
    return server


def set_state(layout: Layout, unit: str, state: str) -> str | None:
    """Set the unit's server state if HAProxy fronts it; None when done or not applicable,
    else what went wrong (the restart goes on: health checks still protect the calls)."""
    server = fronted_server(layout, unit)
    if server is None:
        return None
    path = admin_socket(layout)
    try:
        answer = send(path, state_command(server, state))
    except OSError as exc:
        return unreachable(path, exc)
    return answer or None


def unreachable(path: Path, exc: OSError) -> str:
    """Why the admin socket at ``path`` gave no answer, and what to do: each failure has a
    different cause (a refused connection is a stopped HAProxy, not a missing permission)."""
    where = f"HAProxy admin socket {path}"
    if isinstance(exc, FileNotFoundError):
        return (
            f"no HAProxy admin socket at {path}: HAProxy is not running here, or not with the "
            "haproxy.cfg that xswarm install --haproxy renders; run this on the front host once "
            "haproxy runs"
        )
    if isinstance(exc, PermissionError):
        return f"{where}: permission denied; run as root"
    if isinstance(exc, ConnectionRefusedError):
        return (
            f"{where}: connection refused, so HAProxy is not running; see "
            "`systemctl status haproxy` and `journalctl -u haproxy`"
        )
    if isinstance(exc, TimeoutError):
        return (
            f"{where}: no answer within {ANSWER_TIMEOUT:g} s, so HAProxy is hung or "
            "overloaded; see `journalctl -u haproxy`"
        )
    return f"{where}: {exc.strerror or exc}"


def ask(path: Path, line: str) -> str:
    try:
        return send(path, line)
    except OSError as exc:
        raise HaproxyError(unreachable(path, exc)) from None


def sessions(layout: Layout) -> dict[str, int]:
    """Open connections (calls, health checks aside) per server of the voice backend."""
    text = ask(admin_socket(layout), "show stat\n")
    rows = csv.DictReader(text.lstrip("# ").splitlines())
    return {
        row["svname"]: int(row["scur"] or 0)
        for row in rows
        if row.get("pxname") == BACKEND and row.get("svname") not in ("FRONTEND", "BACKEND")
    }
