"""Asking a running instance how it is: /healthz, /readyz and /metrics over loopback HTTP.

Synchronous and short on purpose: ops commands run once from a terminal or from systemd and
must never hang on an instance that accepted the connection but stopped answering.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass


@dataclass(frozen=True)
class Probe:
    """What one GET returned: status 0 means no HTTP answer at all (``error`` says why)."""

    status: int
    body: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200

    def json(self) -> dict[str, object]:
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


def local_host(host: str) -> str:
    """Where to reach a listener bound to ``host`` from this machine."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def url(host: str, port: int, path: str) -> str:
    host = local_host(host)
    return f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"


def get(target: str, timeout: float = 3.0, limit: int = 1 << 20) -> Probe:
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            return Probe(response.status, response.read(limit).decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        return Probe(exc.code, exc.read(limit).decode("utf-8", "replace"))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Probe(0, "", str(reason))


def metric(text: str, name: str) -> float | None:
    """The value of an unlabelled sample in Prometheus text format."""
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{}"):
            try:
                return float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                return None
    return None


def wait_ready(host: str, port: int, timeout: float, interval: float = 0.5) -> Probe:
    """Poll /readyz until it answers 200 or ``timeout`` passes; the last answer either way."""
    deadline = time.monotonic() + timeout
    probe = get(url(host, port, "/readyz"))
    while not probe.ok and time.monotonic() < deadline:
        time.sleep(interval)
        probe = get(url(host, port, "/readyz"))
    return probe
