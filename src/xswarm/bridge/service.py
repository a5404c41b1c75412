"""``xswarm-voice``: the voice bridge as a process under systemd (``Type=notify``).

Lifecycle, in order: read config (exit 78 on error) → load and warm the engine → listen (on
a socket-activated fd when systemd passes one) → READY=1. Then signals only record intent and
the main loop acts on it: SIGHUP reloads (RELOADING=1 … READY=1, a bad config is refused and
the old one kept), SIGTERM/SIGINT drains (STOPPING=1, /readyz 503, calls finish or are closed
at ``drain_timeout``, EXTEND_TIMEOUT_USEC while waiting), then exit 0. A second SIGTERM or
SIGINT during the drain closes the remaining calls at once.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import faulthandler
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from aiohttp import web

from xswarm import __version__, logs
from xswarm.bridge.app import Bridge
from xswarm.config import Config, load
from xswarm.engine.select import build_engine
from xswarm.errors import ConfigError, StartupError, XswarmError
from xswarm.ports import describe_owner
from xswarm.sdnotify import Notifier, listen_fds, watchdog_interval

log = logging.getLogger("xswarm.voice")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="xswarm-voice", description="The xswarm voice bridge (runs in the foreground)."
    )
    parser.add_argument(
        "--config", help="config file (default: $XSWARM_CONFIG, /opt/xswarm/config.toml)"
    )
    parser.add_argument(
        "--instance",
        type=_instance_number,
        help="template instance N: listens on instance_port_base + N",
    )
    parser.add_argument("--host", help="override [voice.bridge] host")
    parser.add_argument("--port", type=int, help="override [voice.bridge] port")
    parser.add_argument("--version", action="version", version=f"xswarm-voice {__version__}")
    return parser.parse_args(argv)


def _instance_number(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 999:
        raise argparse.ArgumentTypeError(f"expected an instance number from 1 to 999, got {text!r}")
    return int(text)


def read_config(args: argparse.Namespace) -> Config:
    config = load(args.config).for_instance(args.instance)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        if "port" in overrides and not 1 <= overrides["port"] <= 65535:
            raise ConfigError("--port", "port", f"expected 1 to 65535, got {overrides['port']}")
        config = config.with_bridge(**overrides)
    return config


class VoiceService:
    def __init__(self, args: argparse.Namespace, config: Config, bridge: Bridge) -> None:
        self.args = args
        self.config = config
        self.bridge = bridge
        self.notifier = Notifier()
        self.intents: asyncio.Queue[str] = asyncio.Queue()
        self.reload_generation = 0
        self._last_status = ""

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        runner = web.AppRunner(self.bridge.app(), handle_signals=False, access_log=None)
        await runner.setup()
        site = await self._listen(runner)
        listening = True
        await self.bridge.start()
        for sig, intent in (
            (signal.SIGHUP, "reload"),
            (signal.SIGTERM, "stop"),
            (signal.SIGINT, "stop"),
        ):
            loop.add_signal_handler(sig, self.intents.put_nowait, intent)
        self.bridge.status_listeners.append(self._update_status)
        watchdog = asyncio.create_task(self._watchdog())
        self.notifier.ready(self.bridge.status_line())
        self._announce(site)
        try:
            while (intent := await self.intents.get()) != "stop":
                if intent == "reload":
                    self._reload()
            if isinstance(site, web.SockSite):
                # Socket-activated: systemd keeps the listening socket open, so stop accepting
                # and let new calls wait in its backlog for the next process, not get a 503.
                await site.stop()
                listening = False
            await self._drain()
        finally:
            watchdog.cancel()
            if listening:
                await site.stop()
            await runner.cleanup()
            await self.bridge.close()
            self.notifier.close()

    async def _listen(self, runner: web.AppRunner) -> web.BaseSite:
        settings = self.config.section("voice.bridge")
        fds = listen_fds()
        if fds:
            sock = socket.socket(fileno=fds[0])
            sock.setblocking(False)
            site: web.BaseSite = web.SockSite(runner, sock)
        else:
            site = web.TCPSite(
                runner, settings["host"], settings["port"], backlog=1024, reuse_address=True
            )
        try:
            await site.start()
        except OSError as exc:
            where = f"{settings['host']}:{settings['port']}"
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {settings['port']} is {describe_owner(settings['port'])}; "
                    "set [voice.bridge] port (or --instance N) or stop that process"
                ) from None
            if exc.errno == errno.EACCES:
                raise StartupError(
                    f"no permission to listen on {where}; use a port above 1023"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise StartupError(
                    f"{settings['host']} is not an address of this machine; fix [voice.bridge] host"
                ) from None
            raise StartupError(f"cannot listen on {where}: {exc.strerror}") from None
        return site

    def _announce(self, site: web.BaseSite) -> None:
        settings = self.config.section("voice.bridge")
        url = f"ws://{settings['host']}:{settings['port']}"
        if isinstance(site, web.SockSite):
            url = f"ws://{site.name.removeprefix('http://')}"
        log.info(
            "xswarm-voice %s listening on %s (engine %s, up to %d calls): "
            "/twilio /api/chat /control /healthz /readyz /metrics",
            __version__,
            url,
            self.bridge.engine.name,
            self.bridge.max_calls,
        )
        log.info("place a test call: xswarm call --wav samples/hello.wav --url %s", url)

    def _update_status(self) -> None:
        line = self.bridge.status_line()
        if line != self._last_status:
            self._last_status = line
            self.notifier.status(line)

    async def _watchdog(self) -> None:
        # Sent from the event loop itself, so a blocked loop stops the keep-alives.
        interval = watchdog_interval()
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    def _reload(self) -> None:
        self.notifier.reloading()
        self.reload_generation += 1
        try:
            new = read_config(self.args)
        except XswarmError as exc:
            self.bridge.reloads["failed"] += 1
            self.bridge.last_reload_error = str(exc)
            log.error("reload refused, keeping the running config: %s", exc)
            ok, message = False, str(exc)
        else:
            message = self.bridge.apply_config(new)
            self.config = new
            log.info("config reloaded from %s: %s", new.source, message)
            if "needs a restart" in message:
                log.warning("reload: %s", message[message.index("needs a restart") :])
            ok = True
        self._write_reload_state(ok, message)
        self._last_status = ""
        self.notifier.ready(self.bridge.status_line())

    def _write_reload_state(self, ok: bool, message: str) -> None:
        """Tell `xswarm reloadctl` (systemd's ExecReload) how this reload ended."""
        directory = os.environ.get("RUNTIME_DIRECTORY") or os.environ.get("XSWARM_RUNTIME_DIR")
        if not directory:
            return
        path = Path(directory.split(":")[0]) / "reload.json"
        state = {
            "generation": self.reload_generation,
            "ok": ok,
            "message": message,
            "pid": os.getpid(),
        }
        try:
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(state))
            temporary.replace(path)
        except OSError as exc:
            log.error("cannot write %s: %s", path, exc.strerror)

    async def _drain(self) -> None:
        """Stop taking calls, let the live ones finish, close the rest at drain_timeout."""
        bridge = self.bridge
        bridge.state = "draining"
        timeout = bridge.bridge_settings["drain_timeout"]
        self.notifier.stopping(bridge.status_line())
        log.info("draining %d active calls (up to %g s)", bridge.active_calls, timeout)
        deadline = time.monotonic() + timeout
        extended_until = 0.0
        while bridge.active_calls and time.monotonic() < deadline:
            if not self.intents.empty() and self.intents.get_nowait() == "stop":
                log.warning("second stop signal: closing %d calls now", bridge.active_calls)
                break
            if time.monotonic() + 10 > extended_until:
                # Ask systemd for the rest of the drain plus a margin, so TimeoutStopSec
                # does not kill calls we promised to finish.
                remaining = deadline - time.monotonic()
                self.notifier.extend_timeout(remaining + 15)
                extended_until = time.monotonic() + remaining + 15
            self._update_status()
            await asyncio.sleep(0.1)
        if bridge.active_calls:
            log.warning("drain: closing %d calls still live", bridge.active_calls)
            await asyncio.gather(
                *(
                    session.hangup("drain_timeout", 1001, "server shutting down")
                    for session in list(bridge.sessions.values())
                ),
                return_exceptions=True,
            )
        # Let the control subscribers receive the last call_ended events.
        await asyncio.sleep(0.2)
        log.info("drained; exiting")


def main(argv: list[str] | None = None) -> None:
    faulthandler.enable()
    logs.setup()
    args = parse_args(argv)
    try:
        config = read_config(args)
        logs.setup(config.get("logging", "level"))
        instance = f"voice@{args.instance}" if args.instance else "voice"
        engine = build_engine(config)
        bridge = Bridge(config, engine, instance)
        asyncio.run(VoiceService(args, config, bridge).run())
    except XswarmError as exc:
        logging.getLogger("xswarm.voice").error("%s", exc)
        sys.exit(exc.exit_status)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)
