"""``xswarm-dashboard``: the supervisor service in the foreground, for systemd ``Type=notify``.

Load the config (a bad one exits 78 with one line), open the history, then ``xswarm.runtime``
runs the supervisor: serve on systemd's socket or ``[dashboard] host:port``, subscribe to
every instance, READY=1. SIGHUP applies what can change live (the instance list, staleness,
history limit, log level, the CA and the control tokens); a bad file is refused and the
old config kept. SIGTERM closes the
operators with 1001 and the upstreams, checkpoints the history and exits 0.
"""

from __future__ import annotations

import faulthandler
import logging
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import click
from aiohttp import web

from xswarm import __version__, logs
from xswarm import config as config_mod
from xswarm.errors import ConfigError, XswarmError
from xswarm.protocol.auth import CONTROL_TOKEN_ENV, SUPERVISOR_TOKEN_ENV, is_loopback_bind
from xswarm.runtime.boundary import run_command
from xswarm.runtime.daemon import ReloadOutcome, run
from xswarm.runtime.listen import Address, Endpoint
from xswarm.supervisor.api import Access, build_app
from xswarm.supervisor.fleet import instance_names
from xswarm.supervisor.hub import OperatorHub
from xswarm.supervisor.store import DB_NAME, Store
from xswarm.tls import TlsError, client_context
from xswarm.tokens import (
    TokenError,
    read_instance_tokens,
    read_token,
    require_token_off_loopback,
)

log = logging.getLogger("xswarm.supervisor")

# Keys whose change a running supervisor reports as needing a restart.
RESTART_KEYS = ("[dashboard] host", "[dashboard] port", "[paths] state_dir")

# Operators and upstreams are closed before the HTTP server stops; this bounds the rest.
SHUTDOWN_TIMEOUT_SECONDS = 2.0


class SupervisorDaemon:
    """The supervisor as ``xswarm.runtime`` runs it (see ``xswarm.runtime.daemon.Daemon``)."""

    def __init__(self, cfg: config_mod.Config, config_path: str | None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.last_reload_failed = False
        self.stopping = False
        self._status_changed: Callable[[], None] = lambda: None
        token = read_token(SUPERVISOR_TOKEN_ENV)
        if token is None:
            log.warning(
                "%s is not set: only loopback peers can use the operator API (development mode)",
                SUPERVISOR_TOKEN_ENV,
            )
        self.store = Store(cfg.state_dir() / DB_NAME, cfg.dashboard.history_limit)
        self.hub = OperatorHub(
            self.store,
            cfg.dashboard.stale_after,
            token,
            on_change=lambda: self._status_changed(),
            control_token=read_token(CONTROL_TOKEN_ENV),
            batch_interval=cfg.dashboard.operator_batch_ms / 1000,
        )
        self.hub.instance_tokens = instance_tokens(cfg)
        self.hub.client_tls = client_tls(cfg)
        warn_plain_remote(cfg)
        self.access = Access(server_names(cfg))

    def app(self) -> web.Application:
        return build_app(self.hub, self.access)

    async def start(self, addresses: Sequence[Address], status_changed: Callable[[], None]) -> None:
        require_token_off_loopback(
            self.hub.token, SUPERVISOR_TOKEN_ENV, [address.host for address in addresses]
        )
        log.info("serving the operator API on %s", ", ".join(map(str, addresses)))
        self._status_changed = status_changed
        await self.hub.start(self.cfg.control_urls())
        log.info("supervising %s", ", ".join(self.hub.upstreams) or "no instances")

    def status_line(self) -> str:
        if self.stopping:
            return "Stopping"
        line = self.hub.status_line()
        if self.last_reload_failed:
            line += " [last reload FAILED]"
        return line

    async def reload(self) -> ReloadOutcome:
        try:
            new = config_mod.load(self.config_path)
            token = read_token(SUPERVISOR_TOKEN_ENV)
            control_token = read_token(CONTROL_TOKEN_ENV)
            tokens = instance_tokens(new)
            tls = client_tls(new)
            if token is None and self.hub.token is not None:
                raise TokenError(
                    f"{SUPERVISOR_TOKEN_ENV} can no longer be read; a running supervisor does "
                    "not fall back to development mode (restart it to do that)"
                )
        except XswarmError as exc:
            self.last_reload_failed = True
            message = f"reload refused, keeping the previous config: {exc}"
            log.error("%s", message)
            return ReloadOutcome(False, message)
        self.hub.token = token
        self.hub.control_token = control_token
        self.hub.instance_tokens = tokens
        self.hub.client_tls = tls
        warn_plain_remote(new)
        self.access.server_names = server_names(new)
        _, restart = config_mod.reload_changes(self.cfg, new)
        pending = [k for k in restart if k in RESTART_KEYS]
        logs.setup(new.logging.level)
        self.hub.set_stale_after(new.dashboard.stale_after)
        self.hub.batch_interval = new.dashboard.operator_batch_ms / 1000
        self.store.history_limit = new.dashboard.history_limit
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
        return ReloadOutcome(True, message)

    def begin_drain(self) -> float:
        """Nothing to let finish: the calls live in the bridges, which go on without us."""
        self.stopping = True
        log.info("stopping: closing operators and upstreams")
        return 0.0

    async def wait_idle(self) -> None:
        return

    async def end_drain(self) -> None:
        await self.hub.close()

    async def close(self) -> None:
        self.store.close()
        log.info("stopped")


def instance_tokens(cfg: config_mod.Config) -> dict[str, str | None]:
    """Each supervised instance's control token: its own, or the shared one (TokenError)."""
    return read_instance_tokens(CONTROL_TOKEN_ENV, instance_names(cfg.control_urls()))


def client_tls(cfg: config_mod.Config) -> ssl.SSLContext | None:
    """The context wss:// bridges are checked with; a bad ca_file is a config error (78)."""
    ca_file = cfg.dashboard.ca_file
    if not ca_file and not any(u.startswith("wss:") for u in cfg.control_urls()):
        return None
    try:
        return client_context(Path(ca_file) if ca_file else None)
    except TlsError as exc:
        raise ConfigError(cfg.source, "[dashboard] ca_file", str(exc)) from None


def warn_plain_remote(cfg: config_mod.Config) -> None:
    """A ws:// URL beyond loopback sends the control token and every caller's events in
    clear text: allowed (a private network, a tunnel), but never quietly."""
    for url in cfg.control_urls():
        host = urlsplit(url).hostname or ""
        if url.startswith("ws:") and not is_loopback_bind(host):
            log.warning(
                "INSECURE: [dashboard] instances has %s: plain ws:// to a host beyond "
                "loopback sends the control token and call events unencrypted; give that "
                "bridge [voice.bridge] tls_cert and use wss:// (docs/SECURITY.md)",
                url,
            )


def server_names(cfg: config_mod.Config) -> frozenset[str]:
    """Host names operators may reach the API by (besides IP literals and localhost)."""
    names = set(cfg.dashboard.server_names.replace(",", " ").split())
    names.add(cfg.dashboard.host)
    return frozenset(name.lower() for name in names if name)


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
    logs.setup(cfg.logging.level)
    endpoint = Endpoint(
        host or cfg.dashboard.host,
        port if port is not None else cfg.dashboard.port,
        setting="[dashboard]",
        flags="--port",
    )
    daemon = SupervisorDaemon(cfg, config_path)
    raise SystemExit(run(daemon, endpoint, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS))


def main() -> None:
    run_command(command, "xswarm-dashboard")
