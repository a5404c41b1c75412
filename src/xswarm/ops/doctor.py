"""What ``xswarm doctor`` looks at: the facts of this server, gathered for ``checks``.

The judgement lives in ``checks.diagnose`` (pure) and the reading in ``inventory``; this
module puts the facts together the way the checks want them and words the findings.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

from xswarm import config as config_module
from xswarm.config import Config, backend_addresses
from xswarm.errors import ConfigError, XswarmError
from xswarm.ops import checks, haproxy_state, health, releases, templates, units
from xswarm.ops.checks import Facts, FileFacts, TokenFacts
from xswarm.ops.files import UntrustedPathError, read_trusted
from xswarm.ops.haproxy import backend_server, tls_pem
from xswarm.ops.inventory import (
    certificate,
    database,
    database_path,
    deployed_single_voice,
    executables,
    installed_instances,
    installed_profiles,
    installed_units,
    listeners,
    mem_total,
    raw_instance_port,
    unit_environment,
    unit_facts,
)
from xswarm.ops.layout import Layout


def path_facts(path: Path, role: str) -> FileFacts:
    """How ``lstat`` sees a path (a symlink is reported as one, never followed)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return FileFacts(str(path), False, role=role)
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    if stat.S_ISLNK(st.st_mode):
        kind = "symlink"
    elif stat.S_ISDIR(st.st_mode):
        kind = "dir"
    elif stat.S_ISREG(st.st_mode):
        kind = "file"
    else:
        kind = "other"
    return FileFacts(str(path), True, owner, stat.S_IMODE(st.st_mode), group, kind, role)


def owned_paths(layout: Layout) -> list[FileFacts]:
    """Every path whose owner or mode decides whether root can trust it (.env apart)."""
    return [
        path_facts(layout.opt, "application"),
        path_facts(layout.releases, "releases"),
        path_facts(layout.config, "config"),
        path_facts(layout.backup, "backup"),
        path_facts(layout.state, "state"),
        path_facts(layout.dashboard_state, "state"),
        path_facts(layout.logs, "logs"),
    ]


def env_values(text: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (comments, quotes, export)."""
    out = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def token_facts(env: FileFacts) -> tuple[list[TokenFacts] | None, bool]:
    """The generated tokens as .env gives them (directly or through ``*_FILE``), and whether
    the operators' and the bridges' are the same; (None, False) when .env is not safe to read."""
    if not env.exists or env.kind != "file":
        return None, False
    try:
        values = env_values(read_trusted(Path(env.path)).decode("utf-8", "replace"))
    except (OSError, UntrustedPathError):
        return None, False
    out = []
    secrets: dict[str, str] = {}
    for name in templates.GENERATED_TOKENS:
        source = env.path
        value = values.get(name)
        pointer = values.get(f"{name}_FILE")
        if not value and pointer:
            source = pointer
            try:
                value = read_trusted(Path(pointer)).decode("utf-8", "replace").strip()
            except (OSError, UntrustedPathError) as exc:
                out.append(TokenFacts(name, None, source, str(exc)))
                continue
        if value:
            secrets[name] = value
        out.append(TokenFacts(name, len(value) if value else None, source))
    shared = len(secrets) == 2 and len(set(secrets.values())) == 1
    return out, shared


def service_group(user: str) -> str:
    """The service account's primary group (``useradd -U`` names it after the user)."""
    try:
        return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    except KeyError:
        return user


def gather(layout: Layout, config_path: Path) -> Facts:
    env_facts = path_facts(layout.env_file, ".env")
    files = installed_units(layout)
    facts = Facts(
        env_file=env_facts, executables=executables(files), service_user=layout.service_user
    )
    facts.service_group = service_group(layout.service_user)
    facts.paths = owned_paths(layout)
    facts.tokens, facts.tokens_shared = token_facts(env_facts)
    facts.config_source = str(config_path) if config_path.exists() else ""
    try:
        config = config_module.load(config_path if config_path.exists() else None)
    except ConfigError as exc:
        facts.config_error = str(exc)
        config = config_module.defaults()
    instances = installed_instances(files)
    bridge, dashboard = config.bridge, config.dashboard
    single = deployed_single_voice(files)
    if single:
        facts.ports["xswarm-voice.service"] = bridge.port
    for number in instances:
        facts.ports[f"xswarm-voice@{number}.service"] = raw_instance_port(config, number)
    if "xswarm-dashboard.service" in files:
        facts.ports["xswarm-dashboard.service"] = dashboard.port
    sockets = [("xswarm-voice.socket", "xswarm-voice.socket")] if single else []
    for socket_name, relative in [
        *sockets,
        ("xswarm-dashboard.socket", "xswarm-dashboard.socket"),
    ] + [(f"xswarm-voice@{n}.socket", f"xswarm-voice@{n}.socket.d/listen.conf") for n in instances]:
        if relative in files:
            listen = units.parse(files[relative]).get("Socket", {}).get("ListenStream", [])
            facts.socket_listen[socket_name] = listen[-1] if listen else "(nothing)"
    facts.expected_listen["xswarm-voice.socket"] = units.listen_address(bridge.host, bridge.port)
    facts.expected_listen["xswarm-dashboard.socket"] = units.listen_address(
        dashboard.host, dashboard.port
    )
    for number in instances:
        host = config.instances.get(number, {}).get("host", bridge.host)
        facts.expected_listen[f"xswarm-voice@{number}.socket"] = units.listen_address(
            host, raw_instance_port(config, number)
        )
    backends = backend_addresses(config.haproxy.backends)
    if (instances or backends) and layout.haproxy_config.exists():
        text = layout.haproxy_config.read_text()
        if "xswarm_voice_instances" in text:
            facts.haproxy_servers = checks.haproxy_servers(text)
            for number in instances:
                host = config.instances.get(number, {}).get("host", bridge.host)
                facts.instance_targets[f"voice{number}"] = units.listen_address(
                    health.local_host(host), raw_instance_port(config, number)
                )
            for host, port in backends:
                facts.instance_targets[backend_server(host, port)] = units.listen_address(
                    host, port
                )
            if "server-state-file" in text:
                _haproxy_state(layout, facts)
    if bridge.tls_cert:
        facts.certificates.append(certificate(Path(bridge.tls_cert), "[voice.bridge] tls_cert"))
    if tls_pem(layout).exists():
        facts.certificates.append(certificate(tls_pem(layout), "HAProxy"))
    facts.engine = bridge.engine
    facts.device = config.moshi.device
    facts.random_weights = config.moshi.random_weights
    facts.gpu_present = Path("/dev/nvidia0").exists()
    if facts.engine != "echo":
        facts.models_error = _probe_models(config, files, layout)
        from xswarm.engine.select import choice

        picked = choice(config)
        facts.engine_choice, facts.engine_choice_reason = picked.engine, picked.reason
    facts.database = database(database_path(config, layout))
    service_names = [n for n in facts.ports] + [s for s in facts.socket_listen]
    facts.units = unit_facts(service_names)
    facts.ours = {1} | {u.main_pid for u in facts.units.values() if u.main_pid}
    facts.listeners = listeners(set(facts.ports.values()))
    facts.mem_total = mem_total()
    facts.current_release = releases.current(layout)
    if facts.current_release is not None and files:
        plan = units.render(
            layout, facts.current_release, config, instances, installed_profiles(files)
        )
        facts.stale_units = units.stale(files, plan)
        facts.units_release = units.stamped_release(files.get("xswarm-voice.service", ""))
    return facts


def _haproxy_state(layout: Layout, facts: Facts) -> None:
    """The drop-in that saves HAProxy's server states before a reload, the unit it amends,
    and the saved file (root's alone: a reloading HAProxy loads it)."""
    dropin = layout.unit_dir / haproxy_state.DROPIN
    text = dropin.read_text() if dropin.is_file() else ""
    facts.haproxy_state_reload = units.parse(text).get("Service", {}).get("ExecReload", [])
    debian = layout.root / haproxy_state.DEBIAN_UNIT.lstrip("/")
    if debian.is_file():
        service = units.parse(debian.read_text()).get("Service", {})
        facts.haproxy_debian_reload = service.get("ExecReload", [])
    state = haproxy_state.state_file(layout)
    facts.paths.append(path_facts(state.parent, "haproxy state dir"))
    facts.paths.append(path_facts(state, "haproxy state"))


def _probe_models(config: Config, files: dict[str, str], layout: Layout) -> str | None:
    os.environ.setdefault("XSWARM_STATE_DIR", str(layout.state))
    for key, value in unit_environment(files.get("xswarm-voice.service", "")).items():
        if key in ("HF_HOME",):
            os.environ.setdefault(key, value)
    try:
        from xswarm.engine import moshi
    except ImportError as exc:
        return f"the MOSHI engine cannot be imported here ({exc})"
    try:
        return moshi.probe(config)
    except XswarmError as exc:
        return str(exc)


SYMBOL = {checks.OK: "ok  ", checks.WARN: "WARN", checks.FAIL: "FAIL"}


def format_findings(findings: list[checks.Finding]) -> str:
    lines = []
    for finding in findings:
        lines.append(f"{SYMBOL[finding.level]}  {finding.topic}: {finding.message}")
        if finding.fix and finding.level != checks.OK:
            lines.append(f"      fix: {finding.fix}")
    failures = sum(f.level == checks.FAIL for f in findings)
    warnings = sum(f.level == checks.WARN for f in findings)
    lines.append(
        f"{failures} failed, {warnings} warnings, {len(findings) - failures - warnings} ok"
    )
    return "\n".join(lines)
