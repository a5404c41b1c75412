"""Hosts made of Linux network namespaces, joined by a bridge that lives in a namespace too.

A test that must show something working *across machines* (TLS between hosts, a front door
on one host balancing over others, a supervisor watching remote bridges) builds them here:
one namespace per host, each with its own ``lo`` and one ``eth0`` on a shared /24, and the
Linux bridge joining them in a further "switch" namespace. Nothing is added to the root
namespace, so no test traffic can reach the machine's own network or anything on it.

Processes run in a host with ``ip netns exec`` (which execs the program: the PID we hold is
the service's own). The test itself talks to a host through :class:`HostLoop`, an event loop
on a thread that has entered the host's namespace with ``setns(2)``: a socket is created in
the network namespace of the thread that creates it, so every connection that loop opens
starts inside that host. Blocking calls made from the loop's default executor would run on
other threads, outside it; the loop's coroutines use only non-blocking sockets.

Creating namespaces needs root (CI runs as root); :func:`unavailable` says why not otherwise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
TLS_CLOSE_SECONDS = 0.25
T = TypeVar("T")


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


def unavailable() -> str | None:
    """Why this machine cannot build namespace hosts, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs the suite as root)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed; deploy/ci/system-deps.sh installs it"
    probe = f"xswarm-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except RuntimeError as exc:
        return f"`ip netns add` does not work here: {exc}"
    with contextlib.suppress(RuntimeError):
        _ip("netns", "del", probe)
    return None


def enter(netns: str) -> None:
    """Move the calling thread (only it) into the network namespace ``netns``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {netns}: {os.strerror(errno)}")
    finally:
        os.close(fd)


class HostLoop:
    """An asyncio loop running on its own thread inside one host's network namespace."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._loop = asyncio.new_event_loop()
        entered: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._serve, args=(entered,), name=f"netns {netns}", daemon=True
        )
        self._thread.start()
        entered.result(10)

    def _serve(self, entered: concurrent.futures.Future[None]) -> None:
        try:
            enter(self.netns)
        except OSError as exc:
            entered.set_exception(exc)
            return
        entered.set_result(None)
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the host's loop; the future is the test thread's handle on it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run ``coro`` inside the host and wait for its result."""
        return self.submit(coro).result(timeout)

    def close(self) -> None:
        """Cancel what still runs there, stop the loop and join its thread."""
        if not self._thread.is_alive():
            self._loop.close()
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # A TLS connection closes over a few more turns of the loop (close_notify), after
            # its session has returned: aiohttp's "graceful shutdown" asks for this pause.
            await asyncio.sleep(TLS_CLOSE_SECONDS)

        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self.run(cancel_all(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()


@dataclass
class Host:
    """One machine of the test network: its namespace and its address on the shared /24."""

    name: str
    netns: str
    address: str
    _loop: HostLoop | None = None

    @property
    def loop(self) -> HostLoop:
        """The test's own event loop inside this host (made on first use)."""
        if self._loop is None:
            self._loop = HostLoop(self.netns)
        return self._loop


@dataclass
class Network:
    """The hosts, the switch joining them, and every process the test started in them."""

    prefix: str
    hosts: dict[str, Host] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{self.prefix}-switch"

    def add_host(self, name: str, address: str, prefix_len: int = 24) -> Host:
        """A namespace with ``lo`` up and ``eth0`` at ``address``, cabled to the switch."""
        host = Host(name, f"{self.prefix}-{name}", address)
        _ip("netns", "add", host.netns)
        self.hosts[name] = host
        port = f"p{len(self.hosts)}"
        _ip(
            "-n", self.switch, "link", "add", "name", port,
            "type", "veth", "peer", "name", "eth0", "netns", host.netns,
        )  # fmt: skip
        _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        _ip("-n", host.netns, "link", "set", "lo", "up")
        _ip("-n", host.netns, "addr", "add", f"{address}/{prefix_len}", "dev", "eth0")
        _ip("-n", host.netns, "link", "set", "eth0", "up")
        return host

    def spawn(
        self,
        host: Host,
        argv: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host``; its output goes to ``log`` (appended)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
            )
        self.processes.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
        """SIGTERM one of our processes (by its PID), SIGKILL if it does not go."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def teardown(self) -> None:
        """Our loops closed (their connections first), our processes stopped, our namespaces
        deleted: best effort, all of it."""
        for host in self.hosts.values():
            if host._loop is not None:
                host._loop.close()
        # All at once: no service then waits out a peer's connection that is still to stop.
        running = [proc for proc in self.processes if proc.poll() is None]
        for proc in running:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGTERM)
        for proc in running:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self.stop(proc)
        for netns in [h.netns for h in self.hosts.values()] + [self.switch]:
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", netns)


@contextlib.contextmanager
def network(prefix: str, addresses: Mapping[str, str]) -> Iterator[Network]:
    """Hosts named by ``addresses`` (name -> IPv4 on one /24), torn down on exit.

    ``prefix`` makes the namespace names unique to this run (put the test's PID in it).
    """
    net = Network(prefix)
    try:
        _ip("netns", "add", net.switch)
        _ip("-n", net.switch, "link", "add", "name", "br0", "type", "bridge")
        _ip("-n", net.switch, "link", "set", "br0", "up")
        for name, address in addresses.items():
            net.add_host(name, address)
        yield net
    finally:
        net.teardown()
