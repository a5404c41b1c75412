"""Where a service's bearer tokens come from: its environment or a private file, never argv.

``XSWARM_CONTROL_TOKEN`` (or ``XSWARM_CONTROL_TOKEN_FILE``, a path) and the same pair for
``XSWARM_SUPERVISOR_TOKEN``. A file is read at start and on every reload, so a rotated token
takes effect with ``systemctl reload``; it must be readable by the service and by nobody else
(no group or other permission bits), because a token any local user can read protects
nothing. A service that listens beyond loopback without its token refuses to start
(:func:`require_token_off_loopback`): development mode is for a checkout, not a server.
Every refusal is a :class:`TokenError`, exit status 78, one line naming the variable and the
fix.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping

from xswarm.errors import EX_CONFIG, XswarmError
from xswarm.protocol.auth import FILE_SUFFIX, is_loopback_bind

MAX_TOKEN_FILE_BYTES = 4096


class TokenError(XswarmError):
    """A token is missing where it is required, or its file is unsafe or unreadable."""

    exit_status = EX_CONFIG


def read_token(variable: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The token named ``variable`` from the environment or ``<variable>_FILE``; None if unset."""
    env = os.environ if environ is None else environ
    direct = env.get(variable) or None
    file_variable = variable + FILE_SUFFIX
    path = env.get(file_variable) or None
    if direct is not None and path is not None:
        raise TokenError(f"both {variable} and {file_variable} are set; keep only one of them")
    if path is None:
        return direct
    return _read_private_file(path, file_variable)


def _read_private_file(path: str, variable: str) -> str:
    where = f"{variable}={path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise TokenError(
            f"{where}: cannot be read ({exc.strerror}); create it owned by the service user "
            f"with mode 600 (chown xswarm {path}; chmod 600 {path})"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TokenError(f"{where}: is not a regular file; put the token in a plain file")
        if info.st_mode & 0o077:
            raise TokenError(
                f"{where}: is readable or writable by group or others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
            )
        raw = os.read(fd, MAX_TOKEN_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_TOKEN_FILE_BYTES:
        raise TokenError(f"{where}: is over {MAX_TOKEN_FILE_BYTES} bytes; it must hold one token")
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TokenError(f"{where}: is not UTF-8 text; write the token as one line") from None
    if not token or any(ch.isspace() or not ch.isprintable() for ch in token):
        raise TokenError(
            f"{where}: must hold exactly one token on one line (generate one with: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


def require_token_off_loopback(token: str | None, variable: str, hosts: Iterable[str]) -> None:
    """Refuse to serve beyond loopback without a token: anyone who can reach us would be in."""
    if token:
        return
    exposed = [host for host in hosts if not is_loopback_bind(host)]
    if exposed:
        raise TokenError(
            f"{variable} is not set but the service listens on {', '.join(exposed)}, beyond "
            f"loopback; set {variable} (or {variable}{FILE_SUFFIX}) in /opt/xswarm/.env, or "
            "bind 127.0.0.1"
        )
