"""Every error xswarm raises on purpose, in one tree; the first five are defined here.

    XswarmError          base; its message names the cause and the fix            (exit 1)
    ├── ConfigError      bad config file, key or value                  (exit 78, EX_CONFIG)
    ├── EngineLoadError  engine cannot start: weights, device, memory             (exit 78)
    │   └── ModelAbsent  engine.moshi_loader: no package, model files or device (auto: echo)
    ├── StartupError     environment problem: port in use, no permission           (exit 1)
    ├── ProtocolError    a peer sent something we refuse (sans-I/O; carries a close code)
    │   ├── BadMessage   protocol.values: one field of a peer's JSON is wrong, named
    │   └── FormError    protocol.twilio: a webhook form refused, with its HTTP status
    ├── ClientError      client.common: a simulated call cannot be placed or go on (exit 1)
    ├── InstallError     ops.install: something install needs is missing or refused (exit 1)
    ├── GpuDiscoveryError ops.gpus: --instances auto finds no GPU, or one named is absent (exit 1)
    ├── TlsError         tls: a certificate or key is unreadable, mismatched or expired (exit 1)
    ├── TokenError       tokens: a token is missing off loopback, or its file is unsafe (exit 78)
    ├── ReleaseError     ops.releases: a release cannot be built, found or switched to (exit 1)
    ├── SystemctlError   ops.systemctl: systemctl refused or failed                 (exit 1)
    ├── UntrustedPathError ops.files: root will not act on a path others could have planted (exit 1)
    ├── BackupError      ops.backup: the database cannot be found or copied        (exit 1)
    ├── RolloutError     ops.rolling: an upgrade or rollback stopped; what runs is said (exit 1)
    ├── HaproxyError     ops.haproxy: no admin socket, a command refused, a drain unfinished
    │   └── NoAnswer     ops.haproxy_state: HAProxy is dead or hung (its saved states are kept)
    └── ReloadError      ops.reloadctl: the service refused or never answered a reload (exit 1)

Deep code raises these; the process boundary (a console script's ``main``) prints the
message once, as one line, and exits with ``exit_status``. Exceptions outside this tree are
internal signals that never reach a process boundary.
"""

from __future__ import annotations

EX_CONFIG = 78


class XswarmError(Exception):
    """Base class: ``str(error)`` is the one line an operator reads."""

    exit_status = 1


class ConfigError(XswarmError):
    """A configuration file, key or value is wrong; systemd must not restart us for it."""

    exit_status = EX_CONFIG

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}")


class EngineLoadError(XswarmError):
    """The engine cannot be made ready (missing weights, absent device, too little memory)."""

    exit_status = EX_CONFIG


class StartupError(XswarmError):
    """The environment refuses something we need (a port, a directory)."""


class ProtocolError(XswarmError):
    """A peer broke its protocol. ``close_code`` is the WebSocket close code to answer with."""

    def __init__(self, message: str, close_code: int = 1003) -> None:
        self.close_code = close_code
        super().__init__(message)
