"""Where everything lives on a server, in one place, relocatable under a root for tests.

The seed fixes the layout: ``/opt/xswarm`` (releases, ``current``, ``config.toml``, ``.env``,
``backup/``), ``/var/lib/xswarm`` (state), ``/var/log/xswarm`` and the unit files in
``/etc/systemd/system``. Every ops command takes ``--root`` so the same code runs against a
scratch directory in tests; on a server the root is ``/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SERVICE_USER = "xswarm"
OPT = "/opt/xswarm"
# The supervisor's own state directory (its unit's StateDirectory=): the bridge cannot write it.
DASHBOARD_STATE = "/var/lib/xswarm-dashboard"
# Where Prometheus reads its xswarm targets (deploy/prometheus/prometheus.yml).
PROMETHEUS_TARGETS = "/etc/prometheus/xswarm"


@dataclass(frozen=True)
class Layout:
    """``service_user`` is whose files state and logs are; on a server always ``xswarm`` (the
    units say so), in a staging tree any existing account, so tests can check real ownership."""

    root: Path = Path("/")
    service_user: str = SERVICE_USER

    def _at(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def opt(self) -> Path:
        return self._at(OPT)

    @property
    def releases(self) -> Path:
        return self.opt / "releases"

    @property
    def current(self) -> Path:
        return self.opt / "current"

    @property
    def config(self) -> Path:
        return self.opt / "config.toml"

    @property
    def env_file(self) -> Path:
        return self.opt / ".env"

    @property
    def backup(self) -> Path:
        return self.opt / "backup"

    @property
    def history(self) -> Path:
        """One release name per line, in the order they were made current."""
        return self.releases / "HISTORY"

    @property
    def state(self) -> Path:
        return self._at("/var/lib/xswarm")

    @property
    def logs(self) -> Path:
        return self._at("/var/log/xswarm")

    @property
    def dashboard_state(self) -> Path:
        return self._at(DASHBOARD_STATE)

    @property
    def database(self) -> Path:
        """The supervisor's call history, in its own state directory."""
        return self.dashboard_state / "xswarm.db"

    @property
    def legacy_database(self) -> Path:
        """Where releases before the services were separated kept the call history."""
        return self.state / "xswarm.db"

    @property
    def unit_dir(self) -> Path:
        return self._at("/etc/systemd/system")

    @property
    def prometheus_targets(self) -> Path:
        return self._at(PROMETHEUS_TARGETS)

    @property
    def haproxy_config(self) -> Path:
        return self._at("/etc/haproxy/haproxy.cfg")

    def release_dir(self, version: str) -> Path:
        return self.releases / version

    @property
    def is_live(self) -> bool:
        """True when this layout is the running system's, so systemctl and useradd apply."""
        return self.root == Path("/")
