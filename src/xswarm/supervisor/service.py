"""``xswarm-dashboard``: the supervisor service in the foreground, for systemd ``Type=notify``.

Lifecycle: load the config (a bad one exits 78 with one line), open the history, serve on the
socket systemd passed (socket activation) or bind ``[dashboard] host:port``, subscribe to every
instance, then READY=1. SIGHUP re-reads the config and applies what can change live (the
instance list, staleness, history limit, log level); a bad file is refused and the old config
kept. The outcome of every reload goes to ``reload.json`` in the runtime directory, which
``xswarm reloadctl`` waits on. SIGTERM: STOPPING=1, operators closed with 1001, upstreams
closed, the history checkpointed, exit 0.
"""

from __future__ import annotations

import asyncio
import errno
import faulthandler
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import click
from aiohttp import web

from xswarm import __version__, logs
from xswarm import config as config_mod
from xswarm.cli import run_command
from xswarm.errors import StartupError, XswarmError
from xswarm.ports import describe_owner
from xswarm.protocol.auth import TOKEN_ENV
from xswarm.sdnotify import Notifier, listen_fds, watchdog_interval
from xswarm.supervisor.api import build_app
from xswarm.supervisor.hub import OperatorHub
from xswarm.supervisor.store import DB_NAME, Store

log = logging.getLogger("xswarm.supervisor")

# Keys whose change a running supervisor reports as needing a restart.
RESTART_KEYS = ("[dashboard] host", "[dashboard] port", "[paths] state_dir")


def runtime_dir() -> Path | None:
    """Where reload.json goes: systemd's $RUNTIME_DIRECTORY, else $XSWARM_RUNTIME_DIR."""
    value = os.environ.get("RUNTIME_DIRECTORY") or os.environ.get("XSWARM_RUNTIME_DIR")
    return Path(value.split(":")[0]) if value else None


def write_reload_state(generation: int, ok: bool, message: str) -> None:
    """Atomically replace reload.json (temp file + rename), so readers never see half of it."""
    folder = runtime_dir()
    if folder is None:
        return
    body = {"generation": generation, "ok": ok, "message": message, "pid": os.getpid()}
    target = folder / "reload.json"
    temp = folder / f".reload.json.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temp.write_text(json.dumps(body) + "\n", encoding="utf-8")
        os.replace(temp, target)
    except OSError as exc:
        log.error("cannot write %s: %s; `xswarm reloadctl` will time out", target, exc.strerror)


class Service:
    """One running supervisor: owns the config, the hub, the listener and systemd notifications."""

    def __init__(
        self,
        cfg: config_mod.Config,
        config_path: str | None,
        host: str | None,
        port: int | None,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.host = host or cfg.get("dashboard", "host")
        self.port = port if port is not None else cfg.get("dashboard", "port")
        self.notifier = Notifier()
        self.generation = 0
        self.last_reload_failed = False
        self._status = ""
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        token = os.environ.get(TOKEN_ENV) or None
        if token is None:
            log.warning(
                "%s is not set: only loopback peers can use the operator API and the bridges "
                "must also run without a token (development mode)",
                TOKEN_ENV,
            )
        self.store = Store(cfg.state_dir() / DB_NAME, cfg.get("dashboard", "history_limit"))
        self.hub = OperatorHub(
            self.store, cfg.get("dashboard", "stale_after"), token, on_change=self.update_status
        )

    def update_status(self) -> None:
        line = self.hub.status_line()
        if self.last_reload_failed:
            line += " [last reload FAILED]"
        if line != self._status:
            self._status = line
            self.notifier.status(line)

    async def _listen(self, runner: web.AppRunner) -> list[str]:
        """Serve on systemd's sockets when given; else bind. Returns what we listen on."""
        fds = listen_fds()
        where: list[str] = []
        if fds:
            for fd in fds:
                sock = socket.socket(fileno=fd)
                sock.setblocking(False)
                await web.SockSite(runner, sock).start()
                where.append(f"fd {fd} ({sock.getsockname()})")
            return where
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {self.port} is {describe_owner(self.port)}; "
                    "set [dashboard] port (or --port) or stop it"
                ) from None
            raise StartupError(
                f"cannot listen on {self.host}:{self.port}: {exc.strerror}; "
                "set [dashboard] host and port"
            ) from None
        server = site._server
        for sock in getattr(server, "sockets", None) or []:
            host, port = sock.getsockname()[:2]
            where.append(f"{host}:{port}")
        return where

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        app = build_app(self.hub)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            where = await self._listen(runner)
        except BaseException:
            await runner.cleanup()
            raise
        log.info("serving the operator API on %s", ", ".join(where))
        await self.hub.start(self.cfg.control_urls())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._request_reload)
        write_reload_state(self.generation, True, "started")
        self.update_status()
        self.notifier.ready(self._status)
        log.info("supervising %s", ", ".join(self.hub.upstreams) or "no instances")
        interval = watchdog_interval()
        if interval:
            self._spawn(self._watchdog(interval))
        await self._stop.wait()
        log.info("stopping: closing operators and upstreams")
        self.notifier.stopping("Stopping")
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        for task in list(self._tasks):
            task.cancel()
        await self.hub.close()
        await runner.cleanup()
        self.store.close()
        self.notifier.close()
        log.info("stopped")
        return 0

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watchdog(self, interval: float) -> None:
        """Keep-alives from the event loop itself: a blocked loop stops them and systemd acts."""
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    def _request_reload(self) -> None:
        self._spawn(self.reload())

    async def reload(self) -> bool:
        """Re-read the config; apply what is live, refuse a bad file and keep the old one."""
        async with self._reload_lock:
            self.generation += 1
            self.notifier.reloading()
            try:
                new = config_mod.load(self.config_path)
            except XswarmError as exc:
                self.last_reload_failed = True
                message = f"reload refused, keeping the previous config: {exc}"
                log.error("%s", message)
                write_reload_state(self.generation, False, message)
                self.update_status()
                self.notifier.ready(self._status)
                return False
            _, restart = config_mod.reload_changes(self.cfg, new)
            pending = [k for k in restart if k in RESTART_KEYS]
            logs.setup(new.get("logging", "level"))
            self.hub.set_stale_after(new.get("dashboard", "stale_after"))
            self.store.history_limit = new.get("dashboard", "history_limit")
            self.store.prune()
            added, removed = await self.hub.set_instances(new.control_urls())
            self.cfg = new
            parts = [f"reloaded {new.source}"]
            if added:
                parts.append("now supervising " + ", ".join(added))
            if removed:
                parts.append("no longer supervising " + ", ".join(removed))
            if pending:
                parts.append("needs a restart to take effect: " + ", ".join(pending))
            message = "; ".join(parts)
            (log.warning if pending else log.info)("%s", message)
            self.last_reload_failed = False
            write_reload_state(self.generation, True, message)
            self.update_status()
            self.notifier.ready(self._status)
            return True


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="config.toml (default: $XSWARM_CONFIG, then /opt/xswarm/config.toml)",
)
@click.option("--host", default=None, help="override [dashboard] host")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="override [dashboard] port (0: any free port)",
)
@click.version_option(__version__, prog_name="xswarm-dashboard")
def command(config_path: str | None, host: str | None, port: int | None) -> None:
    """The xswarm supervisor: watches every voice instance and serves the operator API."""
    logs.setup("info")
    faulthandler.enable()
    cfg = config_mod.load(config_path)
    logs.setup(cfg.get("logging", "level"))
    service = Service(cfg, config_path, host, port)
    sys.exit(asyncio.run(service.run()))


def main() -> None:
    run_command(command, "xswarm-dashboard")
