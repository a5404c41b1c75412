"""``xswarm-voice``: the voice bridge as a process under systemd (``Type=notify``).

Read the config (exit 78 on error), load and warm the engine, then ``xswarm.runtime`` runs
the bridge: listen, READY=1, SIGHUP reloads, SIGTERM drains. This module says what those
mean for calls: a reload applies what can change live and reports the rest; the drain
refuses new calls (/readyz 503), lets live ones finish until ``drain_timeout`` and closes the
rest with 1001.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web

from xswarm import __version__, logs
from xswarm.bridge import control
from xswarm.bridge.app import Bridge
from xswarm.config import Config, load, require_public_url
from xswarm.engine.select import build_engine
from xswarm.errors import ConfigError, XswarmError
from xswarm.runtime.boundary import exit_on_error
from xswarm.runtime.daemon import ReloadOutcome, run
from xswarm.runtime.listen import Address, Endpoint
from xswarm.tls import PemPair, ServerTls, TlsError
from xswarm.tokens import require_token_off_loopback

log = logging.getLogger("xswarm.voice")

# Room in the kernel's queue for a burst of calls arriving together.
LISTEN_BACKLOG = 1024
# How long a stopping bridge waits for its control subscribers to take their last events.
SUBSCRIBER_GOODBYE_SECONDS = 2.0


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
    require_public_url(config, os.environ.get("TWILIO_AUTH_TOKEN"))
    return config


def server_tls(config: Config) -> ServerTls | None:
    """The bridge's own TLS when ``tls_cert`` is set; a bad pair is a config error (exit 78)."""
    settings = config.bridge
    if not settings.tls_cert:
        return None
    pair = PemPair(Path(settings.tls_cert), Path(settings.tls_key) if settings.tls_key else None)
    try:
        return ServerTls(pair)
    except TlsError as exc:
        raise ConfigError(config.source, "[voice.bridge] tls_cert", str(exc)) from None


def configure_control(config: Config, hosts: Sequence[str]) -> None:
    """Read the control token (exit 78 when unsafe), and refuse to serve /control beyond
    loopback without one."""
    access = control.load_access(config)
    require_token_off_loopback(access.token, control.CONTROL_TOKEN_ENV, hosts)
    control.use(access)


class VoiceDaemon:
    """The bridge as ``xswarm.runtime`` runs it (see ``xswarm.runtime.daemon.Daemon``)."""

    def __init__(
        self, args: argparse.Namespace, bridge: Bridge, tls: ServerTls | None = None
    ) -> None:
        self.args = args
        self.bridge = bridge
        self.tls = tls
        self._note_certificate()

    def _note_certificate(self) -> None:
        if self.tls is not None:
            certificate = self.tls.certificate
            self.bridge.status.certificate_expiry[str(self.tls.pair.cert)] = certificate.not_after

    def endpoint(self) -> Endpoint:
        settings = self.bridge.config.bridge
        return Endpoint(
            settings.host,
            settings.port,
            setting="[voice.bridge]",
            flags="--port or --instance N",
            backlog=LISTEN_BACKLOG,
            header_timeout=settings.header_timeout,
            ssl_context=self.tls.context if self.tls is not None else None,
        )

    def app(self) -> web.Application:
        return self.bridge.app()

    async def start(self, addresses: Sequence[Address], status_changed: Callable[[], None]) -> None:
        configure_control(self.bridge.config, [address.host for address in addresses])
        await self.bridge.start()
        self.bridge.status_listeners.append(status_changed)
        url = f"{'wss' if self.tls else 'ws'}://{addresses[0].where}"
        log.info(
            "xswarm-voice %s listening on %s (engine %s, up to %d calls): "
            "/twilio /api/chat /control /healthz /readyz /metrics",
            __version__,
            url,
            self.bridge.engine.name,
            self.bridge.max_calls,
        )
        log.info("place a test call: xswarm call --wav samples/hello.wav --url %s", url)

    def status_line(self) -> str:
        return self.bridge.status_line()

    async def reload(self) -> ReloadOutcome:
        try:
            new = read_config(self.args)
            configure_control(new, [self.bridge.config.bridge.host])
            renewed = self._reload_certificate()
        except XswarmError as exc:
            self.bridge.reloads["failed"] += 1
            self.bridge.last_reload_error = str(exc)
            log.error("reload refused, keeping the running config: %s", exc)
            return ReloadOutcome(False, str(exc))
        message = self.bridge.apply_config(new)
        if renewed:
            message = renewed if message == "no changes" else f"{message}; {renewed}"
        log.info("config reloaded from %s: %s", new.source, message)
        if "needs a restart" in message:
            log.warning("reload: %s", message[message.index("needs a restart") :])
        return ReloadOutcome(True, message)

    def _reload_certificate(self) -> str:
        """Re-read the served certificate (a renewal): new handshakes get it, live calls keep
        their connections. A bad pair refuses the whole reload and the old one stays."""
        if self.tls is None:
            return ""
        before = self.tls.certificate.serial
        try:
            certificate = self.tls.reload()
        except TlsError as exc:
            raise TlsError(f"certificate not renewed, keeping the served one: {exc}") from None
        self._note_certificate()
        if certificate.serial == before:
            return ""
        return f"certificate {self.tls.pair.cert} renewed (expires {certificate.expires})"

    def begin_drain(self) -> float:
        bridge = self.bridge
        bridge.state = "draining"
        timeout = bridge.config.bridge.drain_timeout
        log.info("draining %d active calls (up to %g s)", bridge.active_calls, timeout)
        return timeout if bridge.active_calls else 0.0

    async def wait_idle(self) -> None:
        await self.bridge.wait_idle()

    async def end_drain(self) -> None:
        bridge = self.bridge
        if bridge.active_calls:
            log.warning("drain: closing %d calls still live", bridge.active_calls)
            await asyncio.gather(
                *(
                    session.hangup("drain_timeout", 1001, "server shutting down")
                    for session in list(bridge.sessions.values())
                ),
                return_exceptions=True,
            )
        try:
            async with asyncio.timeout(SUBSCRIBER_GOODBYE_SECONDS):
                await bridge.hub.close_all()
        except TimeoutError:
            log.warning("drain: a control subscriber did not take its last events in time")
        log.info("drained; exiting")

    async def close(self) -> None:
        await self.bridge.close()


def serve(args: argparse.Namespace) -> int:
    config = read_config(args)
    logs.setup(config.logging.level)
    configure_control(config, [] if os.environ.get("LISTEN_FDS") else [config.bridge.host])
    instance = f"voice@{args.instance}" if args.instance else "voice"
    tls = server_tls(config)
    daemon = VoiceDaemon(args, Bridge(config, build_engine(config), instance), tls)
    return run(daemon, daemon.endpoint())


def main(argv: list[str] | None = None) -> None:
    faulthandler.enable()
    logs.setup()
    args = parse_args(argv)
    with exit_on_error(lambda exc: log.error("%s", exc)):
        raise SystemExit(serve(args))
