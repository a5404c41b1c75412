"""HAProxy's server states carried across its own reload or restart, and across a power loss.

A reload (``systemctl reload haproxy``: ``xswarm install`` after re-rendering, a package
upgrade) starts new workers from haproxy.cfg alone: a server drained through the admin socket
(``xswarm drain --backend``, a rolling upgrade) would be back in service and take new calls
while its host upgrades, and a dead one would be tried as healthy. haproxy.cfg names a
``server-state-file`` that HAProxy loads when it starts (``load-server-state-from-file
global``); :func:`save` writes it from the admin socket's ``show servers state``, as root, right
before the reload signal and before a stop (deploy/haproxy/server-state.conf).

A start with no stop before it (a power loss of the front host) runs no ExecStop: HAProxy
loads what the file last said. So the file also follows every operator's change:
``xswarm drain``/``undrain --backend`` save it right after HAProxy took the change
(:func:`save_after_change`), else a power loss would bring back the drain of the last reload
(a server that silently takes no calls) or undo the drain of a host being upgraded. A
rolling restart's drain of a local instance lasts seconds and is not saved (a power loss in
those seconds must not leave the instance drained); its return to ready is.

The file carries how each server is (drain/maint, up/down, weight), not where it is: HAProxy
would also restore the recorded port, and the recorded address of a server named by host
(haproxy.cfg's ``init-addr libc`` stops that one). So a server whose port in the haproxy.cfg
about to be loaded is not the recorded one, or that is gone from it, is left out: it is
another endpoint now, and starts as the config says.

A change whose save fails still holds in the running HAProxy (the drain is what the operator
needs right now, and the next reload or stop saves it): the command succeeds and warns, in one
line, what a start after a power loss would do and how to save the states. The previous file
goes, since it may say the opposite of that change.

When the dump before a reload or stop fails, what happens to the previous file depends on why.
Since every change xswarm makes is saved at once, or removes the file when it cannot be, a file
that is there holds the last states xswarm set.

- HAProxy does not answer (no socket, connection refused, no answer in time): it crashed, was
  killed, or hangs. systemd runs ExecStop= even then, and Debian's Restart=always starts a new
  HAProxy right after. Its states are gone or out of reach, so the file is the best record
  left: it is kept (checked against the config about to be loaded, as a dump is) and the
  one-line error says so in ``journalctl -u haproxy``. Removing it would put every drained
  server back in rotation.
- HAProxy answers, but not with a dump we can use (another version's format, a torn line,
  something else on the socket path): something runs there with states we cannot read, and we
  cannot tell whether the file describes it; the next save will get the same answer, so the
  file would stand for states nobody checks any more. The config cannot be read: the file
  cannot be checked against it. The file cannot be written: the dump in hand says what HAProxy
  holds now, and the old file may say otherwise. In each case the previous file is removed and
  the error says why: HAProxy starts every server from the config, as it did before this file
  existed, and the operator drains again what must stay drained.

What a kept file cannot hold: a state set by hand on the admin socket (``set server ...
state drain`` with socat, not through xswarm) since the last save. After such a change, run
``sudo xswarm haproxy save-state`` so that a crash does not lose it.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from xswarm.config import backend_address
from xswarm.errors import XswarmError
from xswarm.ops import files
from xswarm.ops.checks import haproxy_servers
from xswarm.ops.haproxy import (
    BACKEND,
    HaproxyError,
    admin_socket,
    ask,
    backend_server,
    send,
    sessions,
    state_command,
    unreachable,
)
from xswarm.ops.layout import Layout

# Named by haproxy.cfg's server-state-file. /var/lib/haproxy is Debian's, root's, mode 0755:
# the service account cannot plant or change what a new HAProxy will load.
SERVER_STATE = "/var/lib/haproxy/xswarm-server-state"
STATE_MODE = 0o644
# The haproxy.service drop-in that runs save-state (deploy/haproxy/server-state.conf), and
# the Debian unit whose ExecReload= lines it repeats.
DROPIN = "haproxy.service.d/xswarm-server-state.conf"
DEBIAN_UNIT = "/lib/systemd/system/haproxy.service"
FORMAT_VERSION = "1"
# srv_admin_state bits (HAProxy's management guide, "show servers state").
FORCED_MAINT = 0x01
FORCED_DRAIN = 0x08
# srv_op_state values.
OP_STATES = {0: "down", 1: "starting", 2: "up", 3: "stopping"}


def state_file(layout: Layout) -> Path:
    return layout.root / SERVER_STATE.lstrip("/")


@dataclass(frozen=True)
class ServerState:
    """One server's line of ``show servers state``, kept verbatim for the file."""

    backend: str
    server: str
    port: int | None
    op_state: int
    admin_state: int
    line: str

    @property
    def summary(self) -> str:
        if self.admin_state & FORCED_MAINT:
            return "maint"
        if self.admin_state & FORCED_DRAIN:
            return "drain"
        return OP_STATES.get(self.op_state, f"op_state {self.op_state}")


@dataclass(frozen=True)
class Dump:
    header: str
    servers: list[ServerState]


def parse(text: str) -> Dump:
    """``show servers state`` as HAProxy answers it: the version, a ``#`` header naming the
    fields, one line per server. Anything else is refused (it would not load either)."""
    lines = text.strip("\n").split("\n")
    if len(lines) < 2 or lines[0].strip() != FORMAT_VERSION or not lines[1].startswith("# "):
        first = lines[0][:80] if lines else ""
        raise HaproxyError(
            f"HAProxy answered 'show servers state' with {first!r}, not a version "
            f"{FORMAT_VERSION} state dump"
        )
    names = lines[1][2:].split()
    needed = ("be_name", "srv_name", "srv_op_state", "srv_admin_state", "srv_port")
    missing = [name for name in needed if name not in names]
    if missing:
        raise HaproxyError(f"HAProxy's state dump has no {', '.join(missing)} column")
    servers = []
    for line in lines[2:]:
        if not line.strip() or line.startswith("#"):
            continue
        values = line.split()
        if len(values) != len(names):
            raise HaproxyError(f"HAProxy's state dump has a torn line: {line[:120]!r}")
        fields = dict(zip(names, values, strict=True))
        try:
            servers.append(
                ServerState(
                    backend=fields["be_name"],
                    server=fields["srv_name"],
                    port=int(fields["srv_port"]) if fields["srv_port"] != "-" else None,
                    op_state=int(fields["srv_op_state"]),
                    admin_state=int(fields["srv_admin_state"]),
                    line=line,
                )
            )
        except ValueError:
            raise HaproxyError(f"HAProxy's state dump has a bad number: {line[:120]!r}") from None
    return Dump(lines[1], servers)


def configured_ports(config_text: str) -> dict[str, int]:
    """{server name: port} of haproxy.cfg's ``server`` lines (``host:port``, IPv6 in [])."""
    ports = {}
    for name, address in haproxy_servers(config_text).items():
        _, _, port = address.rpartition(":")
        if port.isdigit():
            ports[name] = int(port)
    return ports


def carried(dump: Dump, ports: dict[str, int]) -> tuple[list[ServerState], list[str]]:
    """The servers whose state the new HAProxy may load, and the names of those left out."""
    kept, left = [], []
    for state in dump.servers:
        if state.backend == BACKEND and ports.get(state.server) == state.port:
            kept.append(state)
        else:
            left.append(f"{state.backend}/{state.server}")
    return kept, left


class NoAnswer(HaproxyError):
    """HAProxy's admin socket is absent, refuses the connection, or answers nothing in time:
    HAProxy is dead or hung, and the states it held are out of reach."""


# What a socket whose HAProxy is dead or hung does (a kill -9 leaves the socket file behind).
_NO_ANSWER = (FileNotFoundError, ConnectionRefusedError, TimeoutError)


@dataclass(frozen=True)
class Saved:
    path: Path
    servers: list[ServerState]
    left_out: list[str]

    @property
    def states(self) -> str:
        """Each server's state, and the servers left out."""
        text = ", ".join(f"{s.server} {s.summary}" for s in self.servers) or "no servers"
        if self.left_out:
            text += (
                f"; left out (moved or gone in haproxy.cfg, they start from it): "
                f"{', '.join(self.left_out)}"
            )
        return text

    def report(self) -> str:
        return f"saved HAProxy's server states to {self.path}: {self.states}"


def _write(layout: Layout, header: str, servers: list[ServerState]) -> Path:
    target = state_file(layout)
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    files.check_trusted(target.parent, layout.root)
    text = "".join(f"{line}\n" for line in [FORMAT_VERSION, header, *(s.line for s in servers)])
    files.write_file(target, text, STATE_MODE)
    return target


def _config_text(haproxy_config: Path) -> str:
    try:
        return haproxy_config.read_text()
    except OSError as exc:
        raise HaproxyError(f"cannot read {haproxy_config}: {exc.strerror}") from None


def save(layout: Layout, haproxy_config: Path) -> Saved:
    """Dump the running HAProxy's server states into :data:`SERVER_STATE`, atomically, for
    the HAProxy that ``haproxy_config`` (the file about to be loaded) will start. Raises
    :class:`NoAnswer` when HAProxy is dead or hung."""
    config_text = _config_text(haproxy_config)
    path = admin_socket(layout)
    try:
        answer = send(path, "show servers state\n")
    except _NO_ANSWER as exc:
        raise NoAnswer(unreachable(path, exc)) from None
    except OSError as exc:
        raise HaproxyError(unreachable(path, exc)) from None
    dump = parse(answer)
    kept, left = carried(dump, configured_ports(config_text))
    return Saved(_write(layout, dump.header, kept), kept, left)


def keep(layout: Layout, haproxy_config: Path) -> Saved | None:
    """The file as xswarm last saved it, for the HAProxy ``haproxy_config`` will start when
    the running one cannot be asked; None when there is none. It is checked as a dump is: in
    a root-only directory, and rewritten without a server moved or gone in that config (a
    config re-rendered while HAProxy was down). Raises when it cannot be vouched for."""
    target = state_file(layout)
    files.check_trusted(target, layout.root)
    config_text = _config_text(haproxy_config)
    try:
        text = target.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        dump = parse(text)
    except HaproxyError as exc:
        raise HaproxyError(f"{target} is not a state file xswarm wrote: {exc}") from None
    kept, left = carried(dump, configured_ports(config_text))
    if left:
        _write(layout, dump.header, kept)
    return Saved(target, kept, left)


def forget(layout: Layout) -> bool:
    """Remove the state file; True when there was one."""
    try:
        os.unlink(state_file(layout))
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def _why_not_saved(exc: XswarmError | OSError, target: Path) -> str:
    """Why a save failed, in words that name the path."""
    if isinstance(exc, XswarmError):
        return str(exc)
    where = Path(exc.filename) if exc.filename else target
    if where.parent == target.parent:
        return f"could not write {target} ({exc.strerror})"
    return f"could not write {target} ({where}: {exc.strerror})"


def save_for_next_start(layout: Layout, haproxy_config: Path) -> Saved:
    """:func:`save`, before a reload or stop. When HAProxy does not answer, keep the file
    xswarm last saved (:func:`keep`) and raise, saying so; on any other failure remove it
    and raise, saying what the start will do without it (the module docstring says why)."""
    try:
        return save(layout, haproxy_config)
    except NoAnswer as silent:
        try:
            kept = keep(layout, haproxy_config)
        except (XswarmError, OSError) as exc:
            _forget(layout, haproxy_config, f"{silent}; {_why_not_saved(exc, state_file(layout))}")
        if kept is None:
            what = (
                f"no state file: HAProxy starts every server as {haproxy_config} says, so "
                "drain again any server that must stay drained"
            )
        else:
            what = (
                f"kept {kept.path} as xswarm last saved it, for the next start: {kept.states}; "
                "a state set by hand on the admin socket since then is not in it, set it again "
                "once HAProxy runs"
            )
        raise HaproxyError(
            f"server states not saved ({silent}); HAProxy is dead or hung, so {what}"
        ) from None
    except (XswarmError, OSError) as exc:
        _forget(layout, haproxy_config, _why_not_saved(exc, state_file(layout)))


def _forget(layout: Layout, haproxy_config: Path, cause: str) -> NoReturn:
    try:
        removed = forget(layout)
    except OSError as gone:
        raise HaproxyError(
            f"server states not saved ({cause}), and the previous {state_file(layout)} "
            f"could not be removed ({gone.strerror}): HAProxy may load stale states; "
            "check `show servers state` after the reload"
        ) from None
    what = f"removed the previous {state_file(layout)}" if removed else "no state file"
    raise HaproxyError(
        f"server states not saved ({cause}); {what}: HAProxy starts every server as "
        f"{haproxy_config} says, so drain again any server that must stay drained"
    ) from None


def save_after_change(layout: Layout, change: str) -> str | None:
    """Save the states right after an operator's change through the admin socket, for a start
    with no stop before it; None when saved, else a one-line warning (``change`` says what
    HAProxy holds now, e.g. "10.0.0.2:9998 is drained").

    On failure the previous file goes, as when a dump before a reload fails: it may say the
    opposite of this change. The change itself stays in force, so this warns and never raises.
    """
    target = state_file(layout)
    try:
        save(layout, layout.haproxy_config)
    except (XswarmError, OSError) as exc:
        cause = _why_not_saved(exc, target)
        denied = isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM)
    else:
        return None
    such = f"such a start puts every server as {layout.haproxy_config} says"
    try:
        consequence = (
            f"removed the previous file, so {such}"
            if forget(layout)
            else f"there is no file, so {such}"
        )
    except OSError as gone:
        consequence = (
            f"the previous file stays ({gone.strerror}), so such a start may load older states"
        )
    fix = "run as root" if denied else "fix that"
    return (
        f"warning: {change} in HAProxy now, but not saved for a start after a power loss: "
        f"{cause}; {consequence}; {fix}, then `sudo xswarm haproxy save-state` saves what "
        "HAProxy holds now"
    )


# What each state means to an operator, as the warning of a failed save says it.
_HOLDS = {"ready": "is back in rotation", "drain": "is drained", "maint": "is in maintenance"}


def set_backend_state(layout: Layout, entry: str, state: str, warn: Callable[[str], None]) -> str:
    """Set a backend's server state and save the states for a start after a power loss;
    returns its server name. ``entry`` is host:port as in ``[haproxy] backends``. A save that
    fails is a ``warn``, not an error: HAProxy holds the state (see the module docstring)."""
    try:
        host, port = backend_address(entry)
    except ValueError as exc:
        raise HaproxyError(f"--backend {exc}") from None
    server = backend_server(host, port)
    answer = ask(admin_socket(layout), state_command(server, state))
    if answer:
        known = ", ".join(sorted(sessions(layout))) or "none"
        raise HaproxyError(
            f"HAProxy refused to set {server} to {state}: {answer} (its servers: {known}); "
            "a backend must be in [haproxy] backends or --backends when install renders "
            "haproxy.cfg"
        )
    warning = save_after_change(layout, f"{server} {_HOLDS[state]}")
    if warning:
        warn(warning)
    return server


def drain_backend(
    layout: Layout,
    entry: str,
    timeout: float,
    say: Callable[[str], None],
    warn: Callable[[str], None],
    poll: float = 0.5,
) -> None:
    """Send no new calls to a backend, then wait until its calls have ended (at most
    ``timeout`` seconds, saying how many are left as the count changes)."""
    server = set_backend_state(layout, entry, "drain", warn)
    say(f"{server}: drained in HAProxy; new calls go to the other servers")
    deadline = time.monotonic() + timeout
    last = None
    while True:
        left = sessions(layout).get(server, 0)
        if left == 0:
            say(f"{server}: no calls left; its host can be upgraded now")
            return
        if left != last:
            say(f"{server}: {left} call{'s' if left != 1 else ''} still open ...")
            last = left
        if time.monotonic() >= deadline:
            raise HaproxyError(
                f"{server} still has {left} open call{'s' if left != 1 else ''} after "
                f"{timeout:g} s; it stays drained (no new calls): wait longer with --timeout, "
                f"or put it back with xswarm undrain --backend {entry}"
            )
        time.sleep(poll)
