"""Prometheus' file-based service discovery for one host: what it runs and where to scrape it.

deploy/prometheus/prometheus.yml lists no target; it reads ``voice-*.json`` and
``dashboard-*.json`` from /etc/prometheus/xswarm/. Each host's install writes its own two files
from the same config the services read, so a target can never name a port that nothing
listens on, and adding or removing a host is adding or removing its two files (Prometheus
rereads them without a reload). Pure: the caller decides where the text goes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from xswarm.config import Config

# A host label becomes part of a file name and a label value: DNS characters only.
_HOST_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")
_WILDCARDS = ("0.0.0.0", "::", "")
# Prometheus runs as its own user: the files are readable by all, writable by root.
TARGET_MODE = 0o644


class TargetError(ValueError):
    """A host name that cannot name a target file or be scraped."""


@dataclass(frozen=True)
class HostTargets:
    """The two file_sd files of one host, by file name."""

    voice_name: str
    voice: str
    dashboard_name: str
    dashboard: str


def host_targets(
    config: Config, instances: list[int], advertise: str, host_label: str
) -> HostTargets:
    """``advertise``: the name or address Prometheus reaches this host by, used for every
    service bound to a wildcard address; ``host_label``: the ``host`` label and file suffix."""
    if not _HOST_LABEL.fullmatch(host_label):
        raise TargetError(
            f"host label {host_label!r} is not a host name; give letters, digits, dots and "
            "dashes (--host-label)"
        )
    if not advertise or any(ch in advertise for ch in "/ \t\r\n[]@"):
        raise TargetError(
            f"advertised address {advertise!r} is not a host name or IP address (--advertise)"
        )
    numbers: list[int | None] = list(instances) or [None]
    voice = [_voice_group(config, number, advertise, host_label) for number in numbers]
    dashboard: list[dict[str, object]] = [
        {
            "targets": [_address(config.dashboard.host, config.dashboard.port, advertise)],
            "labels": {"host": host_label},
        }
    ]
    return HostTargets(
        voice_name=f"voice-{host_label}.json",
        voice=_dump(voice),
        dashboard_name=f"dashboard-{host_label}.json",
        dashboard=_dump(dashboard),
    )


def _voice_group(
    config: Config, number: int | None, advertise: str, host_label: str
) -> dict[str, object]:
    effective = config.for_instance(number)
    bridge = effective.bridge
    labels: dict[str, str] = {"host": host_label}
    device = effective.moshi.device
    if bridge.engine != "echo" and device.startswith("cuda"):
        labels["gpu"] = device
    if bridge.tls_cert:
        # The bridge terminates TLS itself, /metrics included.
        labels["__scheme__"] = "https"
    return {"targets": [_address(bridge.host, bridge.port, advertise)], "labels": labels}


def _address(host: str, port: int, advertise: str) -> str:
    name = advertise if host in _WILDCARDS else host
    if ":" in name:
        name = f"[{name}]"
    return f"{name}:{port}"


def _dump(groups: list[dict[str, object]]) -> str:
    return json.dumps(groups, indent=2) + "\n"
