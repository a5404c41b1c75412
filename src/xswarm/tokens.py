"""Where a service's bearer tokens come from: its environment or a private file, never argv.

``XSWARM_CONTROL_TOKEN`` (or ``XSWARM_CONTROL_TOKEN_FILE``, a path) and the same pair for
``XSWARM_SUPERVISOR_TOKEN``. A file is read at start and on every reload, so a rotated token
takes effect with ``systemctl reload``; it must be readable by the service and by nobody else
(no group or other permission bits), because a token any local user can read protects
nothing. A service that listens beyond loopback without its token refuses to start
(:func:`require_token_off_loopback`): development mode is for a checkout, not a server.
Every refusal is a :class:`TokenError`, exit status 78, one line naming the variable and the
fix. The supervisor may hold a different control token per instance (bridges on other hosts,
other owners): :func:`read_instance_tokens`; the shared one stays the default.
"""

from __future__ import annotations

import os
import re
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


# A token for one supervised instance, overriding XSWARM_CONTROL_TOKEN for it alone:
# XSWARM_CONTROL_TOKEN_FOR_<KEY> (or ..._FILE), or a file named <key> in the directory
# XSWARM_CONTROL_TOKEN_DIR (systemd: LoadCredential=<key>:PATH with XSWARM_CONTROL_TOKEN_DIR=%d).
INSTANCE_TOKEN_INFIX = "_FOR_"
TOKEN_DIR_SUFFIX = "_DIR"
_NOT_IN_A_KEY = re.compile(r"[^A-Za-z0-9]+")
_NOT_IN_A_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def instance_token_variable(variable: str, instance: str) -> str:
    """``XSWARM_CONTROL_TOKEN_FOR_VOICE_B`` for instance ``voice-b`` (``10.0.0.5:10001`` is
    ``..._FOR_10_0_0_5_10001``): upper-cased, each run of other characters one ``_``."""
    key = _NOT_IN_A_KEY.sub("_", instance).strip("_").upper()
    return f"{variable}{INSTANCE_TOKEN_INFIX}{key}"


def instance_token_file_name(instance: str) -> str:
    """The file an instance's token has in the token directory: its name, with each run of
    characters a systemd credential name cannot hold (``:``, ``/``) as one ``_``."""
    return _NOT_IN_A_FILE_NAME.sub("_", instance).strip("_") or "_"


def read_instance_tokens(
    variable: str, instances: Iterable[str], environ: Mapping[str, str] | None = None
) -> dict[str, str | None]:
    """Each instance's token: its own when one is given, else ``variable``'s (None: none).

    Read at start and on every reload, with the rules of :func:`read_token` (a file must be
    private); an instance with its own token both in a variable and in the directory is
    refused, so that nobody edits one and wonders why the other still applies.
    """
    env = os.environ if environ is None else environ
    shared = read_token(variable, env)
    folder_variable = variable + TOKEN_DIR_SUFFIX
    folder = env.get(folder_variable) or None
    if folder is not None and not os.path.isdir(folder):
        raise TokenError(
            f"{folder_variable}={folder}: is not a directory; point it at the folder that holds "
            "one token file per instance (systemd: %d, the credentials directory)"
        )
    tokens: dict[str, str | None] = {}
    for instance in instances:
        own_variable = instance_token_variable(variable, instance)
        own = read_token(own_variable, env)
        if folder is not None:
            path = os.path.join(folder, instance_token_file_name(instance))
            if os.path.lexists(path):
                if own is not None:
                    raise TokenError(
                        f"instance {instance} has a token both in {own_variable} and in "
                        f"{path}; keep only one of them"
                    )
                own = _read_private_file(path, folder_variable)
        tokens[instance] = own if own is not None else shared
    return tokens
