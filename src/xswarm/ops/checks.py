"""``xswarm doctor``'s judgement: facts in, findings out, no I/O.

``doctor.py`` gathers the facts (files, ports, units, the database); this module decides
what is wrong and how to fix it, so every rule is tested with plain data. The rules follow the
seed's troubleshooting section cause by cause.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from xswarm.tls import EXPIRY_WARNING_SECONDS

OK, WARN, FAIL = "ok", "warn", "fail"
EX_CONFIG = 78
# Matches ops.templates.MIN_TOKEN_CHARS (checks stays free of imports with I/O).
MIN_TOKEN_CHARS = 32


@dataclass(frozen=True)
class Finding:
    level: str
    topic: str
    message: str
    fix: str = ""


@dataclass(frozen=True)
class FileFacts:
    """A path root relies on, as ``lstat`` saw it. ``kind``: file, dir, symlink or other;
    ``role`` picks its rule in ``PATH_RULES``."""

    path: str
    exists: bool
    owner: str | None = None
    mode: int | None = None
    group: str | None = None
    kind: str = "file"
    role: str = ".env"


@dataclass(frozen=True)
class PathRule:
    """Who must own a path and which mode bits it must not have. ``owner``/``group`` are
    "root" or "service" (the service account); ``group`` None: any group."""

    kind: str
    owner: str
    group: str | None
    mode: int
    forbidden: int
    why: str


# Root never trusts what the service account can write: the application, its releases,
# config.toml, .env and backups are root's; state and logs are the service's.
PATH_RULES = {
    ".env": PathRule("file", "root", None, 0o600, 0o077, "other users can read the secrets in it"),
    "config": PathRule(
        "file", "root", "service", 0o640, 0o022, "someone besides root can change it"
    ),
    "application": PathRule(
        "dir", "root", None, 0o755, 0o022, "someone besides root can swap what is in it"
    ),
    "releases": PathRule(
        "dir", "root", None, 0o755, 0o022, "someone besides root can swap a release"
    ),
    "backup": PathRule(
        "dir", "root", None, 0o700, 0o077, "other users can read the copies of .env in it"
    ),
    "state": PathRule("dir", "service", None, 0o750, 0o002, "any user can write it"),
    "logs": PathRule("dir", "service", None, 0o750, 0o002, "any user can write it"),
    "haproxy state": PathRule(
        "file", "root", None, 0o644, 0o022, "someone besides root can change what HAProxy loads"
    ),
    "haproxy state dir": PathRule(
        "dir", "root", None, 0o755, 0o022, "someone besides root can plant what HAProxy loads"
    ),
}


@dataclass(frozen=True)
class TokenFacts:
    """One token the services need: its length (None: not set), where it came from, and why
    it could not be read, without the secret itself."""

    name: str
    length: int | None
    source: str = ""
    error: str | None = None


@dataclass(frozen=True)
class Holder:
    """Who listens on a port: ``pid`` None when the socket's owner could not be found."""

    pid: int | None
    process: str = ""


@dataclass(frozen=True)
class UnitFacts:
    name: str
    load_state: str = "not-found"
    active_state: str = "inactive"
    sub_state: str = "dead"
    main_pid: int = 0
    n_restarts: int = 0
    memory_current: int | None = None
    memory_max: int | None = None
    exec_main_status: int = 0
    result: str = "success"


@dataclass(frozen=True)
class DatabaseFacts:
    path: str
    exists: bool
    integrity: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class CertificateFacts:
    """A certificate a service serves, and how long it has left (None: it could not be read)."""

    path: str
    used_by: str  # "[voice.bridge] tls_cert" or "HAProxy"
    seconds_left: float | None = None
    expires: str = ""
    error: str | None = None


@dataclass
class Facts:
    env_file: FileFacts
    executables: dict[str, bool] = field(default_factory=dict)
    config_source: str = ""
    config_error: str | None = None
    # Which unit should listen where, from config.toml: {"xswarm-voice.service": 9998, ...}.
    ports: dict[str, int] = field(default_factory=dict)
    # ListenStream= of each installed socket unit, and what config.toml says it should be.
    socket_listen: dict[str, str] = field(default_factory=dict)
    expected_listen: dict[str, str] = field(default_factory=dict)
    listeners: dict[int, Holder] = field(default_factory=dict)
    # With template instances: HAProxy's server lines ({"voice1": "127.0.0.1:10001"}), None
    # when there is no haproxy.cfg of ours, and where the instances really listen.
    haproxy_servers: dict[str, str] | None = None
    instance_targets: dict[str, str] = field(default_factory=dict)
    # When our haproxy.cfg loads a server-state file: the ExecReload= lines of the drop-in
    # that saves it ([] without the drop-in), and those of Debian's haproxy.service, which
    # the drop-in repeats (None: no such unit here). None: no state file to keep.
    haproxy_state_reload: list[str] | None = None
    haproxy_debian_reload: list[str] | None = None
    ours: set[int] = field(default_factory=set)
    engine: str = "auto"
    device: str = "cuda"
    models_error: str | None = None
    # What a start would run and why (``engine.select.choice``); engine None: it would exit 78.
    engine_choice: str | None = None
    engine_choice_reason: str = ""
    # ``[voice.moshi] random_weights``: untrained weights, for speed measurement only.
    random_weights: bool = False
    gpu_present: bool = False
    database: DatabaseFacts | None = None
    units: dict[str, UnitFacts] = field(default_factory=dict)
    mem_total: int | None = None
    stale_units: list[str] = field(default_factory=list)
    units_release: str | None = None
    current_release: str | None = None
    service_user: str = "xswarm"
    service_group: str = "xswarm"
    # Paths root relies on besides .env (``FileFacts.role`` names each one's rule).
    paths: list[FileFacts] = field(default_factory=list)
    # The tokens .env provides; None when .env could not be read safely.
    tokens: list[TokenFacts] | None = None
    tokens_shared: bool = False
    certificates: list[CertificateFacts] = field(default_factory=list)


def diagnose(facts: Facts) -> list[Finding]:
    findings: list[Finding] = []
    findings += _env_file(facts)
    findings += _paths(facts)
    findings += _tokens(facts)
    findings += _executables(facts)
    findings += _config(facts)
    findings += _ports(facts)
    findings += _haproxy(facts)
    findings += _haproxy_state(facts)
    findings += _certificates(facts)
    findings += _engine(facts)
    findings += _database(facts)
    findings += _units(facts)
    findings += _release(facts)
    return findings


def failed(findings: list[Finding]) -> bool:
    return any(f.level == FAIL for f in findings)


def _env_file(facts: Facts) -> list[Finding]:
    env = facts.env_file
    if not env.exists:
        return [
            Finding(
                FAIL,
                ".env",
                f"{env.path} is missing; the units load it with "
                "EnvironmentFile= and will not start without it",
                f"sudo xswarm install (writes it with fresh tokens), or: sudo install "
                f"-m 600 -o root -g root deploy/env.example {env.path}",
            )
        ]
    out = path_findings(env, facts.service_user, facts.service_group, ".env")
    return out or [Finding(OK, ".env", f"{env.path}: owner root, mode 600")]


def _paths(facts: Facts) -> list[Finding]:
    out = []
    for path in facts.paths:
        if path.exists:
            out += path_findings(path, facts.service_user, facts.service_group, "permissions")
    if facts.paths and not out:
        out.append(
            Finding(OK, "permissions", f"{len(facts.paths)} paths owned and moded as expected")
        )
    return out


def path_findings(
    path: FileFacts, service_user: str, service_group: str, topic: str
) -> list[Finding]:
    """What is wrong with one path's owner, group, mode or kind, each with its fix."""
    rule = PATH_RULES[path.role]
    owner = service_user if rule.owner == "service" else "root"
    if rule.group:
        group = service_group if rule.group == "service" else "root"
    else:
        group = "root" if owner == "root" else service_group
    reinstall = "sudo xswarm install (sets the ownership it expects)"
    if path.kind == "symlink":
        return [
            Finding(
                FAIL,
                topic,
                f"{path.path} is a symbolic link where a {rule.kind} should be: root would "
                "read or write wherever it points",
                f"sudo rm {path.path}, then {reinstall}",
            )
        ]
    if path.kind != rule.kind:
        return [
            Finding(
                FAIL,
                topic,
                f"{path.path} is a {path.kind}, not a {rule.kind}",
                f"move it aside, then {reinstall}",
            )
        ]
    out = []
    if path.owner != owner:
        out.append(
            Finding(
                FAIL,
                topic,
                f"{path.path} is owned by {path.owner}, not {owner}",
                f"sudo chown {owner}:{group} {path.path}",
            )
        )
    elif rule.group and path.group != group:
        out.append(
            Finding(
                FAIL,
                topic,
                f"{path.path} has group {path.group}, not {group}: the services cannot read it",
                f"sudo chown {owner}:{group} {path.path}",
            )
        )
    if path.mode is not None and path.mode & rule.forbidden:
        out.append(
            Finding(
                FAIL,
                topic,
                f"{path.path} has mode {path.mode:03o}: {rule.why}",
                f"sudo chmod {rule.mode:o} {path.path}",
            )
        )
    return out


def _tokens(facts: Facts) -> list[Finding]:
    if facts.tokens is None:
        return []
    out = []
    make = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    for token in facts.tokens:
        if token.error:
            out.append(
                Finding(
                    FAIL,
                    "tokens",
                    f"{token.name} cannot be read from {token.source}: {token.error}",
                    f"make {token.source} a root-owned file holding the token, or set "
                    f"{token.name}= in .env",
                )
            )
        elif token.length is None:
            out.append(
                Finding(
                    FAIL,
                    "tokens",
                    f"{token.name} is not set in {facts.env_file.path}",
                    f"add a line {token.name}=<token> to {facts.env_file.path} (make one "
                    f"with: {make}), then restart xswarm-voice and xswarm-dashboard",
                )
            )
        elif token.length < MIN_TOKEN_CHARS:
            out.append(
                Finding(
                    FAIL,
                    "tokens",
                    f"{token.name} in {token.source} is weak: {token.length} characters, "
                    f"expected at least {MIN_TOKEN_CHARS}",
                    f"replace it with a random one ({make}), then restart the services",
                )
            )
    if facts.tokens_shared:
        out.append(
            Finding(
                FAIL,
                "tokens",
                "XSWARM_SUPERVISOR_TOKEN and XSWARM_CONTROL_TOKEN are the same: the "
                "internet-facing bridge would hold the operators' token",
                f"give XSWARM_CONTROL_TOKEN a value of its own ({make})",
            )
        )
    if facts.tokens and not out:
        names = ", ".join(t.name for t in facts.tokens)
        out.append(Finding(OK, "tokens", f"{names}: set, strong and distinct"))
    return out


def _executables(facts: Facts) -> list[Finding]:
    out = []
    for path, present in sorted(facts.executables.items()):
        if not present:
            out.append(
                Finding(
                    FAIL,
                    "executable",
                    f"{path} (the units' ExecStart) is missing or not executable",
                    "sudo xswarm install --wheelhouse DIR, or "
                    "sudo xswarm rollback to a release that is still installed",
                )
            )
    if facts.executables and not out:
        out.append(Finding(OK, "executable", f"{len(facts.executables)} unit executables present"))
    return out


def _config(facts: Facts) -> list[Finding]:
    if facts.config_error:
        return [
            Finding(
                FAIL,
                "config",
                facts.config_error,
                "fix that key (deploy/config.example.toml lists every key), then "
                "`sudo systemctl reload xswarm-voice`; the service exits 78 on start "
                "and is not restarted until the config is valid",
            )
        ]
    return [Finding(OK, "config", f"{facts.config_source or 'built-in defaults'} is valid")]


def _ports(facts: Facts) -> list[Finding]:
    out = []
    by_port: dict[int, list[str]] = defaultdict(list)
    for unit, port in facts.ports.items():
        by_port[port].append(unit)
    for port, units in sorted(by_port.items()):
        if len(units) > 1:
            out.append(
                Finding(
                    FAIL,
                    "ports",
                    f"port {port} is claimed by {' and '.join(units)}",
                    "give each instance its own port: [voice.bridge] "
                    "instance_port_base or [voice.bridge.instances.N] port, never the "
                    "supervisor's [dashboard] port; then sudo xswarm install",
                )
            )
    for unit, port in sorted(facts.ports.items(), key=lambda item: item[1]):
        holder = facts.listeners.get(port)
        if holder is None or holder.pid in facts.ours:
            continue
        who = f"PID {holder.pid} ({holder.process})" if holder.pid else "another process"
        out.append(
            Finding(
                FAIL,
                "ports",
                f"port {port}, needed by {unit}, is in use by {who}",
                f"stop that process, or move {unit} to another port in config.toml "
                "and rerun sudo xswarm install; see: sudo ss -ltnp "
                f"'sport = :{port}'",
            )
        )
    for socket, listen in sorted(facts.socket_listen.items()):
        expected = facts.expected_listen.get(socket)
        if expected is not None and listen != expected:
            out.append(
                Finding(
                    FAIL,
                    "ports",
                    f"{socket} listens on {listen} but config.toml says {expected}",
                    "sudo xswarm install (rewrites the socket "
                    "units from config.toml), then sudo systemctl restart the socket",
                )
            )
    if not out and facts.ports:
        listed = ", ".join(f"{u} {p}" for u, p in sorted(facts.ports.items(), key=lambda i: i[1]))
        out.append(Finding(OK, "ports", listed))
    return out


def _haproxy(facts: Facts) -> list[Finding]:
    if facts.haproxy_servers is None or not facts.instance_targets:
        return []
    out = []
    for server, target in sorted(facts.instance_targets.items()):
        routed = facts.haproxy_servers.get(server)
        if routed != target:
            out.append(
                Finding(
                    FAIL,
                    "haproxy",
                    f"HAProxy sends {server}'s calls to "
                    f"{routed or 'nowhere'}, but that instance listens on {target}",
                    "sudo xswarm install --instances N (rewrites haproxy.cfg from "
                    "config.toml), then sudo systemctl reload haproxy",
                )
            )
    for server in sorted(set(facts.haproxy_servers) - set(facts.instance_targets)):
        out.append(
            Finding(
                WARN,
                "haproxy",
                f"HAProxy routes to {server} "
                f"({facts.haproxy_servers[server]}), which is not an installed "
                "instance",
                "sudo xswarm install --instances N with the right N",
            )
        )
    return out or [
        Finding(OK, "haproxy", f"HAProxy routes to all {len(facts.instance_targets)} instances")
    ]


def _haproxy_state(facts: Facts) -> list[Finding]:
    """Whether a reload of HAProxy keeps drained servers drained (see ops.haproxy_state)."""
    ours = facts.haproxy_state_reload
    if ours is None:
        return []
    reinstall = (
        "sudo xswarm install with the same --instances/--backends (writes "
        "/etc/systemd/system/haproxy.service.d/xswarm-server-state.conf), then sudo "
        "systemctl daemon-reload"
    )
    if not any("haproxy save-state" in line for line in ours):
        return [
            Finding(
                WARN,
                "haproxy",
                "haproxy.cfg loads saved server states, but haproxy.service does not save them "
                "before a reload: a reload puts every drained server back in service",
                reinstall,
            )
        ]
    repeated = [line for line in ours if line and "haproxy save-state" not in line]
    debian = facts.haproxy_debian_reload
    if debian is not None and repeated != debian:
        return [
            Finding(
                WARN,
                "haproxy",
                f"haproxy.service's own ExecReload= is now {debian}, but "
                f"xswarm-server-state.conf replaces it with {repeated}: a reload runs the "
                "drop-in's copy",
                "install an xswarm release whose deploy/haproxy/server-state.conf repeats the "
                "packaged lines, or copy them into the drop-in around the save-state line",
            )
        ]
    return [
        Finding(OK, "haproxy", "a reload of HAProxy keeps drained servers drained (states saved)")
    ]


def _certificates(facts: Facts) -> list[Finding]:
    out = []
    for cert in facts.certificates:
        where = f"{cert.used_by} {cert.path}"
        renew = (
            "renew it and put the new files in place, then: sudo systemctl reload xswarm-voice "
            "(no restart)"
            if cert.used_by != "HAProxy"
            else "renew it, then: sudo xswarm install ... --tls-cert NEW.pem --tls-key NEW.key "
            "and sudo systemctl reload haproxy"
        )
        if cert.error is not None or cert.seconds_left is None:
            out.append(Finding(FAIL, "tls", f"{where}: {cert.error}", renew))
        elif cert.seconds_left <= 0:
            out.append(Finding(FAIL, "tls", f"{where} expired on {cert.expires}", renew))
        elif cert.seconds_left < EXPIRY_WARNING_SECONDS:
            days = cert.seconds_left / 86400
            out.append(
                Finding(WARN, "tls", f"{where} expires in {days:.1f} days ({cert.expires})", renew)
            )
        else:
            out.append(Finding(OK, "tls", f"{where} valid until {cert.expires}"))
    return out


def haproxy_servers(config_text: str) -> dict[str, str]:
    """``server NAME ADDRESS ...`` lines of haproxy.cfg: {name: address}."""
    out = {}
    for line in config_text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "server":
            out[words[1]] = words[2]
    return out


def _engine(facts: Facts) -> list[Finding]:
    if facts.engine == "echo":
        return [Finding(OK, "engine", "echo engine: no models or GPU needed")]
    out = []
    if facts.random_weights:
        out.append(
            Finding(
                FAIL,
                "engine",
                "[voice.moshi] random_weights = true: MOSHI would serve UNTRAINED random "
                "weights and callers would hear noise (it exists for make gpu-check only)",
                "remove random_weights from config.toml",
            )
        )
    if facts.engine_choice_reason:
        if facts.engine_choice is None:
            out.append(
                Finding(
                    FAIL,
                    "engine",
                    f"a start would exit 78: {facts.engine_choice_reason}",
                    "fix what it names; `xswarm models check` shows the whole plan",
                )
            )
        else:
            out.append(
                Finding(
                    OK if facts.engine_choice == "moshi" else WARN,
                    "engine",
                    f"a start would run {facts.engine_choice}: {facts.engine_choice_reason}",
                )
            )
    required = facts.engine == "moshi"
    level = FAIL if required else WARN
    if facts.models_error:
        out.append(
            Finding(
                level,
                "models",
                f"MOSHI models are not usable: {facts.models_error}",
                "sudo -u xswarm xswarm models pull (or set [voice.moshi] "
                "moshi_weights/mimi_weights/tokenizer to local files)"
                + ("" if required else "; with engine=auto the bridge serves the echo engine"),
            )
        )
    if facts.device.startswith("cuda") and not facts.gpu_present:
        out.append(
            Finding(
                level,
                "gpu",
                "[voice.moshi] device is cuda but no NVIDIA GPU is "
                "visible (/dev/nvidia0 is absent)",
                "install the NVIDIA driver and "
                "sudo xswarm install --gpu (the gpu.conf drop-in), or set "
                '[voice.moshi] device = "cpu"',
            )
        )
    return out or [Finding(OK, "engine", f"engine {facts.engine}: models and device present")]


def _database(facts: Facts) -> list[Finding]:
    db = facts.database
    if db is None:
        return []
    if db.error:
        return [
            Finding(
                FAIL,
                "database",
                f"{db.path} cannot be opened: {db.error}",
                "check that its directory exists and is owned by xswarm "
                "(sudo xswarm install fixes both)",
            )
        ]
    if not db.exists:
        return [
            Finding(
                OK,
                "database",
                f"{db.path} does not exist yet; the supervisor creates it on first start",
            )
        ]
    if db.integrity != "ok":
        return [
            Finding(
                FAIL,
                "database",
                f"{db.path} is corrupt: integrity_check says {db.integrity}",
                "stop xswarm-dashboard, move the file aside and "
                "restore the newest copy from /opt/xswarm/backup/*/xswarm.db",
            )
        ]
    return [Finding(OK, "database", f"{db.path}: integrity ok")]


def _units(facts: Facts) -> list[Finding]:
    out = []
    for name, unit in sorted(facts.units.items()):
        if unit.load_state == "not-found":
            continue
        if unit.exec_main_status == EX_CONFIG and unit.active_state in ("failed", "inactive"):
            out.append(
                Finding(
                    FAIL,
                    "restarts",
                    f"{name} stopped with exit 78: its config was "
                    "refused (not restarted, by RestartPreventExitStatus=78)",
                    f"sudo journalctl -u {name} -n 5 names the key; fix it, then "
                    f"sudo systemctl restart {name}",
                )
            )
        elif unit.n_restarts >= 3 or unit.sub_state == "auto-restart":
            out.append(
                Finding(
                    FAIL,
                    "restarts",
                    f"{name} has restarted {unit.n_restarts} times "
                    f"(now {unit.active_state}/{unit.sub_state}, last exit "
                    f"{unit.exec_main_status}, result {unit.result})",
                    f"sudo journalctl -u {name} --since '5 minutes ago'; to debug "
                    f"without restarts: sudo systemctl edit {name} and set "
                    "[Service] Restart=no",
                )
            )
        elif unit.active_state == "failed":
            out.append(
                Finding(
                    FAIL,
                    "restarts",
                    f"{name} failed (result {unit.result}, exit {unit.exec_main_status})",
                    f"sudo journalctl -u {name} -n 50",
                )
            )
        out += _memory(name, unit, facts.mem_total)
    return out


def _memory(name: str, unit: UnitFacts, mem_total: int | None) -> list[Finding]:
    out = []
    limit, used = unit.memory_max, unit.memory_current
    if limit and used is not None and unit.active_state == "active":
        share = used / limit
        if share >= 0.9:
            level = FAIL if share >= 0.95 else WARN
            out.append(
                Finding(
                    level,
                    "memory",
                    f"{name} uses {size_text(used)} of its "
                    f"MemoryMax={size_text(limit)} ({share:.0%})",
                    "lower [voice.bridge] max_concurrent_calls, raise MemoryMax "
                    f"(sudo systemctl edit {name}), or add an instance",
                )
            )
    if limit and mem_total and limit > mem_total:
        out.append(
            Finding(
                WARN,
                "memory",
                f"{name} has MemoryMax={size_text(limit)} but the "
                f"machine has {size_text(mem_total)}: the limit never binds and the "
                "kernel's OOM killer acts first",
                f"sudo systemctl edit {name}: MemoryMax= below physical memory",
            )
        )
    return out


def _release(facts: Facts) -> list[Finding]:
    if facts.current_release is None:
        return [
            Finding(
                FAIL,
                "release",
                "no release is installed (/opt/xswarm/current is missing)",
                "sudo xswarm install --wheelhouse DIR",
            )
        ]
    if facts.stale_units:
        return [
            Finding(
                FAIL,
                "units",
                f"installed units differ from release "
                f"{facts.current_release}'s: {', '.join(facts.stale_units)}"
                + (
                    f" (they are from {facts.units_release})"
                    if facts.units_release and facts.units_release != facts.current_release
                    else ""
                ),
                "sudo xswarm install (rewrites them), then sudo systemctl daemon-reload",
            )
        ]
    return [Finding(OK, "units", f"units match release {facts.current_release}")]


def size_text(value: int) -> str:
    size = float(value)
    for unit in ("B", "K", "M", "G", "T"):
        if size < 1024 or unit == "T":
            return f"{size:.1f}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1024
    return f"{size:.1f}T"


def listening_inodes(proc_net_tcp: str) -> dict[int, int]:
    """Ports in LISTEN state (0A) from /proc/net/tcp or tcp6 text: {port: socket inode}."""
    out: dict[int, int] = {}
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != "0A":
            continue
        try:
            port = int(fields[1].rsplit(":", 1)[1], 16)
            out.setdefault(port, int(fields[9]))
        except (IndexError, ValueError):
            continue
    return out
