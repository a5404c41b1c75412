"""Unit files, sockets, drop-ins and the HAProxy config, rendered for one release. Pure.

The files in ``deploy/`` are the templates: valid as they stand for the default layout, with
``/opt/xswarm/current/`` where the release goes. Rendering pins them to one release
(``/opt/xswarm/releases/<version>/``), writes the listening addresses from config.toml, and
stamps the release, so that ``xswarm doctor`` can tell when the installed units are stale.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from xswarm.config import Config
from xswarm.ops.layout import OPT, Layout

UNIT_TEMPLATES = (
    "xswarm-voice.service",
    "xswarm-voice.socket",
    "xswarm-voice@.service",
    "xswarm-voice@.socket",
    "xswarm-dashboard.service",
    "xswarm-dashboard.socket",
)
PROFILES = ("gpu", "latency", "throughput")
VOICE_TEMPLATES = ("xswarm-voice.service", "xswarm-voice@.service")
STAMP = "# xswarm-release: "


def deploy_dir() -> Path:
    """The templates: packaged inside the wheel as xswarm/_deploy, or the checkout's deploy/."""
    packaged = Path(str(importlib.resources.files("xswarm"))) / "_deploy"
    if (packaged / "systemd").is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "deploy"


def template(relative: str) -> str:
    return (deploy_dir() / relative).read_text()


@dataclass(frozen=True)
class UnitPlan:
    """Everything install writes for one release: unit-dir-relative path -> file text."""

    version: str
    files: dict[str, str]


def listen_address(host: str, port: int) -> str:
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def instance_ports(config: Config, instances: list[int]) -> dict[int, tuple[str, int]]:
    """(host, port) of each template instance, as the service itself will compute it."""
    out = {}
    for number in instances:
        bridge = config.for_instance(number).bridge
        out[number] = (bridge.host, bridge.port)
    return out


def render(
    layout: Layout,
    version: str,
    config: Config,
    instances: list[int] = (),  # type: ignore[assignment]
    profiles: list[str] = (),  # type: ignore[assignment]
) -> UnitPlan:
    release = layout.release_dir(version)
    files: dict[str, str] = {}
    for name in UNIT_TEMPLATES:
        text = template(f"systemd/{name}")
        text = text.replace(f"{OPT}/current/", "\0release\0")
        text = text.replace(OPT, str(layout.opt)).replace("\0release\0", f"{release}/")
        files[name] = _stamp(text, version)
    bridge = config.bridge
    dashboard = config.dashboard
    files["xswarm-voice.socket"] = _set_listen(
        files["xswarm-voice.socket"], listen_address(bridge.host, bridge.port)
    )
    files["xswarm-dashboard.socket"] = _set_listen(
        files["xswarm-dashboard.socket"], listen_address(dashboard.host, dashboard.port)
    )
    for number, (host, port) in instance_ports(config, list(instances)).items():
        files[f"xswarm-voice@{number}.socket.d/listen.conf"] = (
            f"{STAMP}{version}\n# Written by `xswarm install` from config.toml.\n"
            f"[Socket]\nListenStream={listen_address(host, port)}\n"
        )
    if instances:
        names = " ".join(f"xswarm-voice@{n}.service" for n in instances)
        files["xswarm-dashboard.service"] = files["xswarm-dashboard.service"].replace(
            "Requires=xswarm-voice.service xswarm-dashboard.socket\n"
            "After=xswarm-voice.service xswarm-dashboard.socket",
            "Requires=xswarm-dashboard.socket\n"
            "# Several instances: a rolling restart of one must not bounce the supervisor.\n"
            f"Wants={names}\nAfter={names} xswarm-dashboard.socket",
        )
    for profile in profiles:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
        body = template(f"systemd/{profile}.conf")
        for unit in VOICE_TEMPLATES:
            files[f"{unit}.d/{profile}.conf"] = _stamp(body, version)
    return UnitPlan(version=version, files=files)


def _stamp(text: str, version: str) -> str:
    return f"{STAMP}{version}\n{text}"


def _set_listen(text: str, address: str) -> str:
    lines = [
        f"ListenStream={address}" if line.startswith("ListenStream=") else line
        for line in text.splitlines()
    ]
    return "\n".join(lines) + "\n"


def stamped_release(text: str) -> str | None:
    first = text.split("\n", 1)[0]
    return first[len(STAMP) :].strip() if first.startswith(STAMP) else None


def parse(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values in order]}}; continuation lines joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is not None and "=" in line:
            key, value = line.split("=", 1)
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def managed(name: str) -> bool:
    """Whether a path under the unit directory belongs to xswarm (ours to write and compare)."""
    return name.startswith("xswarm-")


def stale(installed: dict[str, str], plan: UnitPlan) -> list[str]:
    """Files whose installed text differs from what this release would install."""
    return sorted(name for name, text in plan.files.items() if installed.get(name) != text)


def render_haproxy(config: Config, instances: list[int]) -> str:
    bridge = config.bridge
    bind = f"bind {listen_address(bridge.host, bridge.port)}"
    servers = []
    for number, (host, port) in instance_ports(config, instances).items():
        target = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
        servers.append(f"server voice{number} {listen_address(target, port)} check")
    text = template("haproxy/haproxy.cfg")
    text = text.replace("@BIND@", bind, 1)
    return text.replace("@SERVERS@", "\n    ".join(servers), 1)
