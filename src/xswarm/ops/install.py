"""An installation: the seed's steps, done for real and idempotently.

User, directories and ownership; a release in its own venv built from a wheelhouse (offline);
``current`` flipped atomically; config.toml and .env written only when absent; units rendered
for the release and daemon-reload; with ``--instances N`` the template instances' sockets and
an HAProxy config. Running it twice changes nothing the second time.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from xswarm import config as config_module
from xswarm.errors import XswarmError
from xswarm.ops import releases, systemctl, templates, units
from xswarm.ops.layout import SERVICE_USER, Layout

DEFAULT_KEEP = 5


class InstallError(XswarmError):
    """Something install needs is missing or refused."""


@dataclass
class Report:
    """What install did, line by line: the operator sees every change and every no-op."""

    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def did(self, text: str) -> None:
        self.changed.append(text)

    def kept(self, text: str) -> None:
        self.unchanged.append(text)


def ensure_user(report: Report) -> None:
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        argv = ["useradd", "-r", "-U", "-s", "/bin/false", "-d", "/opt/xswarm", SERVICE_USER]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise InstallError(f"useradd failed: {done.stderr.strip()}") from None
        report.did(f"created system user {SERVICE_USER}")
        return
    report.kept(f"user {SERVICE_USER} exists")


def _owner_ids(owned: bool) -> tuple[int, int] | None:
    if not owned:
        return None
    return pwd.getpwnam(SERVICE_USER).pw_uid, grp.getgrnam(SERVICE_USER).gr_gid


def ensure_dir(path: Path, mode: int, ids: tuple[int, int] | None, report: Report) -> None:
    if not path.is_dir():
        path.mkdir(parents=True, mode=mode)
        os.chmod(path, mode)
        report.did(f"created {path}")
    if ids is not None:
        st = path.stat()
        if (st.st_uid, st.st_gid) != ids:
            os.chown(path, *ids)
            report.did(f"chown {SERVICE_USER}:{SERVICE_USER} {path}")


def write_if_absent(
    path: Path, text: str, mode: int, ids: tuple[int, int] | None, report: Report
) -> None:
    if path.exists():
        report.kept(f"{path} exists (left as it is)")
        return
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(staging, mode)
    if ids is not None:
        os.chown(staging, *ids)
    os.replace(staging, path)
    report.did(f"wrote {path} (mode {mode:03o})")


def write_if_changed(path: Path, text: str, report: Report) -> bool:
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(text)
    os.chmod(staging, 0o644)
    os.replace(staging, path)
    report.did(f"wrote {path}")
    return True


def initial_config(instances: list[int]) -> str:
    """The config.toml template; with instances, the supervisor is told where they are."""
    if not instances:
        return templates.config_example()
    defaults = config_module.defaults()
    urls = []
    for number in instances:
        bridge = defaults.for_instance(number).bridge
        urls.append(f'"ws://127.0.0.1:{bridge.port}/control"')
    extra = (
        "# Written by `xswarm install --instances`: the supervisor watches these instances.\n"
        "[dashboard]\n"
        f"instances = [{', '.join(urls)}]\n"
    )
    return templates.config_example(extra)


def install_units(layout: Layout, plan: units.UnitPlan, report: Report) -> bool:
    """Write the plan into the unit directory and keep a copy inside the release."""
    changed = False
    kept = layout.release_dir(plan.version) / "units"
    for relative, text in sorted(plan.files.items()):
        changed |= write_if_changed(layout.unit_dir / relative, text, report)
        target = kept / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    if not changed:
        report.kept(f"units in {layout.unit_dir} are up to date for {plan.version}")
    return changed


def restore_units(layout: Layout, version: str, report: Report) -> bool:
    """Put back the units a release was installed with (rollback)."""
    kept = layout.release_dir(version) / "units"
    if not kept.is_dir():
        raise InstallError(f"release {version} has no saved units in {kept}; reinstall it")
    files = {str(p.relative_to(kept)): p.read_text() for p in kept.rglob("*") if p.is_file()}
    return install_units(layout, units.UnitPlan(version, files), report)


def haproxy_config(layout: Layout, text: str, report: Report) -> bool:
    """Validate and write haproxy.cfg and its service drop-in; True when the drop-in changed."""
    binary = shutil.which("haproxy")
    if binary is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as fh:
            fh.write(text)
        try:
            done = subprocess.run(
                [binary, "-c", "-q", "-f", fh.name], capture_output=True, text=True, check=False
            )
        finally:
            os.unlink(fh.name)
        if done.returncode != 0:
            raise InstallError(f"the rendered HAProxy config is invalid: {done.stderr.strip()}")
    target = layout.haproxy_config
    if target.exists() and "xswarm" not in target.read_text():
        original = target.with_name(target.name + ".orig")
        if not original.exists():
            shutil.copy2(target, original)
            report.did(f"saved the previous {target} as {original}")
    write_if_changed(target, text, report)
    dropin = layout.unit_dir / "haproxy.service.d" / "xswarm-limits.conf"
    return write_if_changed(dropin, units.template("haproxy/limits.conf"), report)


def install(
    layout: Layout,
    wheel: Path,
    wheelhouse: Path | None,
    python: str,
    instances: list[int],
    profiles: list[str],
    haproxy: bool,
    manage_system: bool,
    keep: int = DEFAULT_KEEP,
) -> tuple[Report, str]:
    report = Report()
    if manage_system:
        ensure_user(report)
    ids = _owner_ids(manage_system)
    ensure_dir(layout.opt, 0o755, ids, report)
    ensure_dir(layout.releases, 0o755, None, report)
    ensure_dir(layout.backup, 0o750, ids, report)
    ensure_dir(layout.state, 0o750, ids, report)
    ensure_dir(layout.logs, 0o750, ids, report)
    write_if_absent(layout.config, initial_config(instances), 0o640, ids, report)
    write_if_absent(layout.env_file, templates.env_example(), 0o600, ids, report)
    config = config_module.load(layout.config)
    version, built = releases.build(layout, wheel, wheelhouse, python)
    (report.did if built else report.kept)(
        f"release {version} {'built' if built else 'already installed'} in "
        f"{layout.release_dir(version)}"
    )
    plan = units.render(layout, version, config, instances, profiles)
    changed = install_units(layout, plan, report)
    if releases.current(layout) != version:
        releases.switch(layout, version)
        report.did(f"{layout.current} -> releases/{version}")
    else:
        report.kept(f"{layout.current} already points at {version}")
    if instances and haproxy:
        changed |= haproxy_config(layout, units.render_haproxy(config, instances), report)
    if changed and manage_system and systemctl.available():
        systemctl.daemon_reload()
        report.did("systemctl daemon-reload")
    for name in releases.prune(layout, keep):
        report.did(f"removed old release {name} (keeping {keep})")
    return report, version


def next_steps(instances: list[int], haproxy: bool) -> str:
    if instances:
        names = " ".join(f"xswarm-voice@{n}.socket xswarm-voice@{n}" for n in instances)
        lines = [
            f"  sudo systemctl enable --now {names}",
            "  sudo systemctl enable --now xswarm-dashboard.socket xswarm-dashboard",
        ]
        if haproxy:
            lines += [
                "  sudo systemctl disable --now xswarm-voice.socket xswarm-voice"
                "   # HAProxy takes the voice port",
                "  sudo systemctl restart haproxy",
            ]
    else:
        lines = [
            "  sudo systemctl enable --now xswarm-voice.socket xswarm-voice",
            "  sudo systemctl enable --now xswarm-dashboard.socket xswarm-dashboard",
        ]
    return "\n".join(
        [
            "Next steps:",
            "  sudo nano /opt/xswarm/.env          # XSWARM_SUPERVISOR_TOKEN, TWILIO_AUTH_TOKEN",
            "  sudo nano /opt/xswarm/config.toml   # every key is listed, commented",
            "  sudo xswarm doctor",
            *lines,
            f"  sudo systemctl status xswarm-voice{'@1' if instances else ''}",
            "  sudo xswarm status",
        ]
    )
