"""Listening sockets for a daemon's aiohttp app: inherited from systemd, or bound here.

Socket activation (``LISTEN_FDS``) wins over the configured address: systemd holds those
sockets, so connections queue in its backlog while the service restarts instead of being
refused. Everything goes through aiohttp's public API (``SockSite``, ``TCPSite``,
``AppRunner.addresses``). A bind that fails becomes a ``StartupError`` naming the cause and
the fix, down to the PID that holds the port.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass

from aiohttp import web

from xswarm.errors import StartupError
from xswarm.ports import describe_owner
from xswarm.sdnotify import listen_fds


@dataclass(frozen=True)
class Endpoint:
    """Where a daemon listens unless systemd passes sockets, and how an operator moves it."""

    host: str
    port: int
    setting: str  # the config section holding host and port, e.g. "[voice.bridge]"
    flags: str  # the command-line options that override them, e.g. "--port"
    backlog: int = 128
    # Seconds a connection may take to send a request's headers, and may idle between
    # requests: the AppRunner's ``keepalive_timeout``. aiohttp arms that timer when a
    # connection is made and re-arms it only after a response, and closes a connection still
    # waiting for a whole request when it fires, so it is the header-read deadline too (bytes
    # trickled in do not extend it). aiohttp's own default would let a connection that never
    # finishes its headers hold its socket for an hour.
    header_timeout: float = 10.0
    # Set when the daemon terminates TLS itself; the daemon may load a renewed certificate
    # into this same object, and new handshakes use it.
    ssl_context: ssl.SSLContext | None = None


@dataclass(frozen=True)
class Address:
    """One socket being served; ``fd`` is set when systemd passed it."""

    host: str
    port: int
    fd: int | None = None

    @property
    def where(self) -> str:
        """host:port, as in a URL."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.where if self.fd is None else f"fd {self.fd} ({self.where})"


@dataclass(frozen=True)
class Listening:
    """What ``listen`` opened; ``activated`` when the sockets are systemd's, not ours."""

    sites: list[web.BaseSite]
    addresses: list[Address]

    @property
    def activated(self) -> bool:
        return any(address.fd is not None for address in self.addresses)

    async def stop(self) -> None:
        """Stop accepting; on systemd's sockets, new connections then wait for the next process."""
        for site in self.sites:
            await site.stop()


async def listen(runner: web.AppRunner, endpoint: Endpoint) -> Listening:
    """Serve ``runner`` on systemd's sockets when it passed any, else on ``endpoint``."""
    fds = listen_fds()
    if fds:
        return await _serve_inherited(runner, fds, endpoint.ssl_context)
    site = web.TCPSite(
        runner,
        endpoint.host,
        endpoint.port,
        backlog=endpoint.backlog,
        reuse_address=True,
        ssl_context=endpoint.ssl_context,
    )
    try:
        await site.start()
    except OSError as exc:
        raise bind_error(exc, endpoint) from None
    addresses = [Address(*_host_port(name)) for name in runner.addresses]
    return Listening([site], addresses)


async def _serve_inherited(
    runner: web.AppRunner, fds: list[int], ssl_context: ssl.SSLContext | None
) -> Listening:
    sites: list[web.BaseSite] = []
    addresses = []
    for fd in fds:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        site = web.SockSite(runner, sock, ssl_context=ssl_context)
        await site.start()
        sites.append(site)
        addresses.append(Address(*_host_port(sock.getsockname()), fd=fd))
    return Listening(sites, addresses)


def _host_port(name: object) -> tuple[str, int]:
    """(host, port) of a socket name: an IP tuple, or a Unix socket's path with port 0."""
    if isinstance(name, tuple):
        return str(name[0]), int(name[1])
    return str(name), 0


def bind_error(exc: OSError, endpoint: Endpoint) -> StartupError:
    """The one line an operator reads when ``endpoint`` cannot be bound, with the fix."""
    where = f"{endpoint.host}:{endpoint.port}"
    if exc.errno == errno.EADDRINUSE:
        return StartupError(
            f"port {endpoint.port} is {describe_owner(endpoint.port)}; "
            f"set {endpoint.setting} port (or {endpoint.flags}) or stop it"
        )
    if exc.errno == errno.EACCES:
        return StartupError(f"no permission to listen on {where}; use a port above 1023")
    if exc.errno == errno.EADDRNOTAVAIL:
        return StartupError(
            f"{endpoint.host} is not an address of this machine; fix {endpoint.setting} host"
        )
    return StartupError(
        f"cannot listen on {where}: {exc.strerror}; set {endpoint.setting} host and port"
    )
