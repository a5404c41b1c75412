"""``xswarm doctor``: gather the facts of this server and print every finding with its fix.

The judgement lives in ``checks.diagnose`` (pure); this module only looks: files, the config,
/proc for listening ports, systemd for unit state, SQLite for integrity.
"""

from __future__ import annotations

import os
import pwd
import shlex
import sqlite3
import stat
from pathlib import Path

import click

from xswarm import config as config_module
from xswarm.config import Config
from xswarm.errors import ConfigError
from xswarm.ops import checks, health, releases, systemctl, units
from xswarm.ops.checks import DatabaseFacts, Facts, FileFacts, Holder, UnitFacts
from xswarm.ops.layout import SERVICE_USER, Layout

_PREFIX_CHARS = "@-:+!"


def installed_units(layout: Layout) -> dict[str, str]:
    """Our files under the unit directory (drop-ins included): relative path -> text."""
    out: dict[str, str] = {}
    if not layout.unit_dir.is_dir():
        return out
    for path in sorted(layout.unit_dir.rglob("*")):
        if path.is_file() and units.managed(path.relative_to(layout.unit_dir).parts[0]):
            out[str(path.relative_to(layout.unit_dir))] = path.read_text()
    return out


def installed_instances(files: dict[str, str]) -> list[int]:
    numbers = []
    for name in files:
        head = name.split("/", 1)[0]
        if head.startswith("xswarm-voice@") and head.endswith(".socket.d"):
            number = head[len("xswarm-voice@") : -len(".socket.d")]
            if number.isdigit():
                numbers.append(int(number))
    return sorted(set(numbers))


def installed_profiles(files: dict[str, str]) -> list[str]:
    return [p for p in units.PROFILES if f"xswarm-voice.service.d/{p}.conf" in files]


def executables(files: dict[str, str]) -> dict[str, bool]:
    out = {}
    for name, text in files.items():
        if not name.endswith(".service"):
            continue
        for key in ("ExecStart", "ExecReload"):
            for value in units.parse(text).get("Service", {}).get(key, []):
                words = shlex.split(value)
                if words:
                    path = words[0].lstrip(_PREFIX_CHARS)
                    out[path] = os.access(path, os.X_OK)
    return out


def unit_environment(text: str) -> dict[str, str]:
    env = {}
    for value in units.parse(text).get("Service", {}).get("Environment", []):
        for word in shlex.split(value):
            key, sep, val = word.partition("=")
            if sep:
                env[key] = val
    return env


def raw_instance_port(config: Config, number: int) -> int:
    """The port instance N would ask for, without refusing collisions (doctor reports them)."""
    bridge = config.section("voice.bridge")
    override = config.instances.get(number, {})
    return int(override.get("port", bridge["instance_port_base"] + number))


def listeners(ports: set[int]) -> dict[int, Holder]:
    """Who holds each listening port among ``ports``: /proc/net/tcp{,6} inodes -> /proc/*/fd."""
    inodes: dict[int, int] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            found = checks.listening_inodes(Path(name).read_text())
        except OSError:
            continue
        for port, inode in found.items():
            if port in ports:
                inodes.setdefault(port, inode)
    wanted = {f"socket:[{inode}]": port for port, inode in inodes.items()}
    holders: dict[int, Holder] = {port: Holder(None) for port in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or not wanted:
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            held = wanted.get(target)
            if held is not None and holders[held].pid is None:
                try:
                    comm = (proc / "comm").read_text().strip()
                except OSError:
                    comm = "?"
                holders[held] = Holder(int(proc.name), comm)
    return holders


def database(path: Path) -> DatabaseFacts:
    if not path.exists():
        return DatabaseFacts(str(path), exists=False)
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        return DatabaseFacts(str(path), exists=True, error=str(exc))
    try:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
        verdict = "ok" if rows == [("ok",)] else "; ".join(str(r[0]) for r in rows[:3])
    except sqlite3.DatabaseError as exc:
        verdict = str(exc)
    finally:
        connection.close()
    return DatabaseFacts(str(path), exists=True, integrity=verdict)


def mem_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def deployed_single_voice(files: dict[str, str]) -> bool:
    """Whether the single xswarm-voice (port 9998) is in use, not just installed beside the
    template instances (where HAProxy may hold 9998 in its place)."""
    if "xswarm-voice.service" not in files:
        return False
    if not installed_instances(files) or not systemctl.available():
        return True
    names = ["xswarm-voice.service", "xswarm-voice.socket"]
    shown = systemctl.show(names, ("Id", "ActiveState", "UnitFileState"))
    return any(
        props.get("ActiveState") in ("active", "activating", "reloading")
        or props.get("UnitFileState") == "enabled"
        for props in shown.values()
    )


def unit_facts(names: list[str]) -> dict[str, UnitFacts]:
    if not names or not systemctl.available():
        return {}
    out = {}
    for name, props in systemctl.show(names).items():
        out[name] = UnitFacts(
            name=name,
            load_state=props.get("LoadState", "not-found"),
            active_state=props.get("ActiveState", "inactive"),
            sub_state=props.get("SubState", "dead"),
            main_pid=systemctl.number(props.get("MainPID")) or 0,
            n_restarts=systemctl.number(props.get("NRestarts")) or 0,
            memory_current=systemctl.number(props.get("MemoryCurrent")),
            memory_max=systemctl.number(props.get("MemoryMax")),
            exec_main_status=systemctl.number(props.get("ExecMainStatus")) or 0,
            result=props.get("Result", "success"),
        )
    return out


def gather(layout: Layout, config_path: Path) -> Facts:
    env = layout.env_file
    try:
        st = env.stat()
        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = str(st.st_uid)
        env_facts = FileFacts(str(env), True, owner, stat.S_IMODE(st.st_mode))
    except FileNotFoundError:
        env_facts = FileFacts(str(env), False)
    files = installed_units(layout)
    facts = Facts(env_file=env_facts, executables=executables(files), service_user=SERVICE_USER)
    facts.config_source = str(config_path) if config_path.exists() else ""
    try:
        config = config_module.load(config_path if config_path.exists() else None)
    except ConfigError as exc:
        facts.config_error = str(exc)
        config = config_module.defaults()
    instances = installed_instances(files)
    bridge, dashboard = config.section("voice.bridge"), config.section("dashboard")
    single = deployed_single_voice(files)
    if single:
        facts.ports["xswarm-voice.service"] = bridge["port"]
    for number in instances:
        facts.ports[f"xswarm-voice@{number}.service"] = raw_instance_port(config, number)
    if "xswarm-dashboard.service" in files:
        facts.ports["xswarm-dashboard.service"] = dashboard["port"]
    sockets = [("xswarm-voice.socket", "xswarm-voice.socket")] if single else []
    for socket_name, relative in [
        *sockets,
        ("xswarm-dashboard.socket", "xswarm-dashboard.socket"),
    ] + [(f"xswarm-voice@{n}.socket", f"xswarm-voice@{n}.socket.d/listen.conf") for n in instances]:
        if relative in files:
            listen = units.parse(files[relative]).get("Socket", {}).get("ListenStream", [])
            facts.socket_listen[socket_name] = listen[-1] if listen else "(nothing)"
    facts.expected_listen["xswarm-voice.socket"] = units.listen_address(
        bridge["host"], bridge["port"]
    )
    facts.expected_listen["xswarm-dashboard.socket"] = units.listen_address(
        dashboard["host"], dashboard["port"]
    )
    for number in instances:
        host = config.instances.get(number, {}).get("host", bridge["host"])
        facts.expected_listen[f"xswarm-voice@{number}.socket"] = units.listen_address(
            host, raw_instance_port(config, number)
        )
    if instances and layout.haproxy_config.exists():
        text = layout.haproxy_config.read_text()
        if "xswarm_voice_instances" in text:
            facts.haproxy_servers = checks.haproxy_servers(text)
            for number in instances:
                host = config.instances.get(number, {}).get("host", bridge["host"])
                facts.instance_targets[f"voice{number}"] = units.listen_address(
                    health.local_host(host), raw_instance_port(config, number)
                )
    facts.engine = bridge["engine"]
    facts.device = config.get("voice.moshi", "device")
    facts.gpu_present = Path("/dev/nvidia0").exists()
    if facts.engine != "echo":
        facts.models_error = _probe_models(config, files, layout)
    state_dir = config.get("paths", "state_dir")
    facts.database = database(Path(state_dir) / "xswarm.db" if state_dir else layout.database)
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


def _probe_models(config: Config, files: dict[str, str], layout: Layout) -> str | None:
    os.environ.setdefault("XSWARM_STATE_DIR", str(layout.state))
    for key, value in unit_environment(files.get("xswarm-voice.service", "")).items():
        if key in ("HF_HOME",):
            os.environ.setdefault(key, value)
    try:
        from xswarm.engine import moshi
    except ImportError as exc:
        return f"the MOSHI engine cannot be imported here ({exc})"
    return moshi.probe(config)


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


@click.command(name="doctor")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="filesystem root of the installation (tests)",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="config file (default: /opt/xswarm/config.toml)",
)
def command(root: Path, config_path: Path | None) -> None:
    """Check this server for every known cause of a failing xswarm, with the fix for each."""
    layout = Layout(root)
    findings = checks.diagnose(gather(layout, config_path or layout.config))
    click.echo(format_findings(findings))
    if checks.failed(findings):
        raise SystemExit(1)
