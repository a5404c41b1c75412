"""Unit files, sockets, drop-ins and the HAProxy config, rendered for one release. Pure.

The files in ``deploy/`` are the templates: valid as they stand for the default layout, with
``/opt/xswarm/current/`` where the release goes. Rendering pins them to one release
(``/opt/xswarm/releases/<version>/``), writes the listening addresses from config.toml, and
stamps the release, so that ``xswarm doctor`` can tell when the installed units are stale.
"""

from __future__ import annotations

import importlib.resources
import ipaddress
import re
import socket
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from xswarm.config import Config, backend_addresses, host_problem
from xswarm.errors import ConfigError
from xswarm.ops.haproxy import backend_server
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
# Units a profile brings along besides its drop-ins: the GPU's root-only device setup runs in
# its own unit, which never loads the service's EnvironmentFile.
PROFILE_UNITS = {"gpu": ("xswarm-nvidia.service",)}
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


# A value rendered into a unit or haproxy.cfg is checked again here, whatever config.py did:
# one newline in a host would let config.toml add a line, such as ExecStartPre=, to a unit
# that root installs.
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._+@/-]+$")
_SAFE_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+!_]*$")


def checked_host(host: str, key: str, source: str = "config.toml") -> str:
    problem = host_problem(host)
    if problem:
        raise ConfigError(source, key, problem)
    return host


def checked_port(port: object, key: str, source: str = "config.toml") -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(source, key, f"expected a port from 1 to 65535, got {port!r}")
    return port


def check_relative(name: str) -> None:
    """A unit-dir-relative name: ours (xswarm-*), no '..', nothing but safe characters."""
    parts = name.split("/")
    if not _SAFE_PATH.match(name) or ".." in parts or not managed(parts[0]) or len(parts) > 2:
        raise ValueError(f"refusing to write unit file {name!r}: not an xswarm unit name")


def listen_address(host: str, port: int) -> str:
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _listen(host: str, port: int, key: str, source: str) -> str:
    return listen_address(
        checked_host(host, f"{key} host", source), checked_port(port, f"{key} port", source)
    )


Resolver = Callable[[str], list[str]]


def resolve(host: str) -> list[str]:
    """The addresses a hostname has now (for IPAddressAllow=, which takes no names)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos})


def resolve_hosts(config: Config, resolver: Resolver = resolve) -> dict[str, list[str]]:
    """Each hostname (not IP literal) among the supervised instances -> its addresses."""
    out = {}
    for host in supervised_hosts(config):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            out[host] = resolver(host)
    return out


def require_resolved(config: Config, resolved: Mapping[str, list[str]]) -> None:
    """Refuse to install a supervisor unit that could never reach an instance: a hostname
    that does not resolve now would be left out of IPAddressAllow= (which takes addresses
    only), and the instance would show unreachable until the next install."""
    for host, addresses in resolved.items():
        if not addresses:
            raise ConfigError(
                config.source,
                "[dashboard] instances",
                f"{host} does not resolve, and the supervisor's unit allows addresses only "
                "(IPAddressAllow=): fix its DNS or /etc/hosts entry, or write the bridge's "
                "IP address in the URL (with a certificate for that address), then install again",
            )


def supervised_hosts(config: Config) -> list[str]:
    """Hosts named in ``[dashboard] instances``, each checked, in order, once."""
    hosts: list[str] = []
    for url in config.dashboard.instances:
        host = urllib.parse.urlsplit(url).hostname or ""
        checked_host(host, "[dashboard] instances", config.source)
        if host not in hosts:
            hosts.append(host)
    return hosts


def ip_allow(config: Config, resolved: Mapping[str, list[str]]) -> str:
    """IPAddressAllow= for the supervisor: localhost plus every instance it is told to watch.

    IPAddressAllow= takes addresses only, so a hostname is written as the addresses
    ``xswarm install`` resolved it to (``xswarm doctor`` reports the units stale when they
    change); one that did not resolve is left out.
    """
    allowed = ["localhost"]
    for host in supervised_hosts(config):
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            addresses = [
                str(ipaddress.ip_address(a.split("%", 1)[0])) for a in resolved.get(host, [])
            ]
        else:
            addresses = [] if address.is_loopback else [str(address)]
        for item in addresses:
            if item not in allowed:
                allowed.append(item)
    return " ".join(allowed)


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
    resolved: Mapping[str, list[str]] | None = None,
) -> UnitPlan:
    """``resolved``: hostnames of supervised instances -> addresses (``resolve_hosts``);
    None resolves them now."""
    if not _SAFE_VERSION.match(version):
        raise ValueError(f"refusing to render units for release {version!r}: not a version")
    if not _SAFE_PATH.match(str(layout.opt)):
        raise ValueError(f"refusing to render units for {layout.opt}: unsafe characters in path")
    if resolved is None:
        resolved = resolve_hosts(config)
    release = layout.release_dir(version)
    files: dict[str, str] = {}
    templates = list(UNIT_TEMPLATES)
    for profile in profiles:
        templates += PROFILE_UNITS.get(profile, ())
    for name in templates:
        text = template(f"systemd/{name}")
        text = text.replace(f"{OPT}/current/", "\0release\0")
        text = text.replace(OPT, str(layout.opt)).replace("\0release\0", f"{release}/")
        files[name] = _stamp(text, version)
    bridge = config.bridge
    dashboard = config.dashboard
    source = config.source
    files["xswarm-voice.socket"] = _set_listen(
        files["xswarm-voice.socket"], _listen(bridge.host, bridge.port, "[voice.bridge]", source)
    )
    files["xswarm-dashboard.socket"] = _set_listen(
        files["xswarm-dashboard.socket"],
        _listen(dashboard.host, dashboard.port, "[dashboard]", source),
    )
    files["xswarm-dashboard.service"] = _set_key(
        files["xswarm-dashboard.service"], "IPAddressAllow", ip_allow(config, resolved)
    )
    for number, (host, port) in instance_ports(config, list(instances)).items():
        address = _listen(host, port, f"[voice.bridge.instances.{number}]", source)
        files[f"xswarm-voice@{number}.socket.d/listen.conf"] = (
            f"{STAMP}{version}\n# Written by `xswarm install` from config.toml.\n"
            f"[Socket]\nListenStream={address}\n"
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
        if profile == "gpu":
            body = gpu_nodes(body, highest_gpu(config, list(instances)))
        for unit in VOICE_TEMPLATES:
            files[f"{unit}.d/{profile}.conf"] = _stamp(body, version)
    return UnitPlan(version=version, files=files)


def highest_gpu(config: Config, instances: list[int]) -> int:
    """The highest CUDA index the voice units run an engine on (0 when config names none)."""
    devices = [config.moshi.device] + [config.for_instance(n).moshi.device for n in instances]
    indices = [int(d.split(":", 1)[1]) for d in devices if re.fullmatch(r"cuda:[0-9]+", d)]
    return max(indices, default=0)


def gpu_nodes(body: str, highest: int) -> str:
    """The GPU drop-in with /dev/nvidia0 .. /dev/nvidia<highest> bound and allowed: CUDA
    numbers only the GPUs whose nodes it can open, so every one up to the highest in use is
    there, or cuda:N would name another card (or none)."""
    nodes = [f"/dev/nvidia{n}" for n in range(highest + 1)]
    body = body.replace("BindPaths=-/dev/nvidia0 ", "BindPaths=" + "".join(f"-{n} " for n in nodes))
    return body.replace(
        "DeviceAllow=/dev/nvidia0 rw\n", "".join(f"DeviceAllow={n} rw\n" for n in nodes)
    )


def _stamp(text: str, version: str) -> str:
    return f"{STAMP}{version}\n{text}"


def _set_listen(text: str, address: str) -> str:
    return _set_key(text, "ListenStream", address)


def _set_key(text: str, key: str, value: str) -> str:
    if any(not ch.isprintable() for ch in value):
        raise ValueError(f"refusing to render {key}={value!r}: control characters")
    lines = [f"{key}={value}" if line.startswith(f"{key}=") else line for line in text.splitlines()]
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


# The rules of a public (TLS) frontend; see deploy/haproxy/haproxy.cfg for why.
PUBLIC_RULES = (
    "http-request deny deny_status 404 if { path,url_dec -m reg -i (^|/)(control|metrics)(/|$) }",
    'http-response set-header Strict-Transport-Security "max-age=63072000"',
)


_PEM_PATH = re.compile(r"/[A-Za-z0-9_./-]+")


@dataclass(frozen=True)
class PublicTls:
    """HAProxy's TLS frontend: the combined PEM it serves and the address it binds."""

    pem: str
    port: int = 443
    host: str = ""  # every address


def render_haproxy(config: Config, instances: list[int], tls: PublicTls | None = None) -> str:
    """One HAProxy in front of this host's template ``instances`` and every bridge in
    ``[haproxy] backends`` (other hosts), over TLS to those when ``backend_ca_file`` is set."""
    bridge = config.bridge
    if tls is None:
        bind = f"bind {_listen(bridge.host, bridge.port, '[voice.bridge]', config.source)}"
        public = ""
    else:
        if not _PEM_PATH.fullmatch(tls.pem) or ".." in tls.pem.split("/"):
            raise ValueError(f"refusing to render HAProxy's certificate path {tls.pem!r}")
        port = checked_port(tls.port, "--tls-port", "xswarm install")
        host = checked_host(tls.host, "--tls-host", "xswarm install") if tls.host else ""
        bind = f"bind {listen_address(host, port)} ssl crt {tls.pem} alpn http/1.1"
        public = "".join(f"    {rule}\n" for rule in PUBLIC_RULES)
    servers = []
    taken: dict[tuple[str, int], str] = {}
    for number, (host, port) in instance_ports(config, instances).items():
        target = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
        address = _listen(target, port, f"[voice.bridge.instances.{number}]", config.source)
        taken[(target, port)] = f"local instance {number}"
        servers.append(f"server voice{number} {address} check")
    servers += _backend_servers(config, taken)
    if not servers:
        raise ConfigError(
            config.source,
            "[haproxy] backends",
            "HAProxy has no server to send calls to: give xswarm install --instances N (this "
            "host's instances) and/or --backends host:port,... (or set [haproxy] backends)",
        )
    text = template("haproxy/haproxy.cfg")
    text = text.replace("    @BIND@", f"    {bind}", 1)
    text = text.replace("    @PUBLIC@\n", public, 1)
    text = text.replace("@MAX_PER_SOURCE@", str(int(bridge.max_calls_per_source)), 1)
    return text.replace("@SERVERS@", "\n    ".join(servers), 1)


def _backend_servers(config: Config, taken: Mapping[tuple[str, int], str]) -> list[str]:
    """``server`` lines of the bridges on other hosts. With ``backend_ca_file`` each is
    reached over TLS (health checks too), its certificate checked against that CA and the
    host as written: by SNI for a name, by ``verifyhost`` alone for an IP (no SNI for IPs)."""
    key = "[haproxy] backends"
    try:
        addresses = backend_addresses(config.haproxy.backends)
    except ValueError as exc:
        raise ConfigError(config.source, key, str(exc)) from None
    ca_file = config.haproxy.backend_ca_file
    if ca_file and (not _PEM_PATH.fullmatch(ca_file) or ".." in ca_file.split("/")):
        raise ConfigError(
            config.source, "[haproxy] backend_ca_file", f"unsafe path {ca_file!r} for haproxy.cfg"
        )
    lines = []
    names: set[str] = set()
    for host, port in addresses:
        address = _listen(host, port, key, config.source)
        if (host, port) in taken:
            raise ConfigError(
                config.source,
                key,
                f"{address} is also {taken[(host, port)]}'s address; list each server once",
            )
        name = backend_server(host, port)
        if name in names:
            raise ConfigError(config.source, key, f"two backends share the server name {name}")
        names.add(name)
        line = f"server {name} {address} check"
        if ca_file:
            line += f" ssl verify required ca-file {ca_file} verifyhost {host}"
            try:
                ipaddress.ip_address(host)
            except ValueError:
                line += f" sni str({host}) check-sni {host}"
        lines.append(line)
    return lines
