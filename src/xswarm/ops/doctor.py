"""What ``xswarm doctor`` looks at: the facts of this server, gathered for ``checks``.

The judgement lives in ``checks.diagnose`` (pure) and the reading in ``inventory``; this
module puts the facts together the way the checks want them and words the findings.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from xswarm import config as config_module
from xswarm.config import Config
from xswarm.errors import ConfigError
from xswarm.ops import checks, health, releases, units
from xswarm.ops.checks import Facts, FileFacts
from xswarm.ops.inventory import (
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
from xswarm.ops.layout import SERVICE_USER, Layout


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
    if instances and layout.haproxy_config.exists():
        text = layout.haproxy_config.read_text()
        if "xswarm_voice_instances" in text:
            facts.haproxy_servers = checks.haproxy_servers(text)
            for number in instances:
                host = config.instances.get(number, {}).get("host", bridge.host)
                facts.instance_targets[f"voice{number}"] = units.listen_address(
                    health.local_host(host), raw_instance_port(config, number)
                )
    facts.engine = bridge.engine
    facts.device = config.moshi.device
    facts.gpu_present = Path("/dev/nvidia0").exists()
    if facts.engine != "echo":
        facts.models_error = _probe_models(config, files, layout)
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
