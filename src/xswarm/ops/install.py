"""An installation: the seed's steps, done for real and idempotently.

User, directories and ownership; a release in its own venv built from a wheelhouse (offline);
``current`` flipped atomically; config.toml and .env written only when absent; units rendered
for the release and daemon-reload; with ``--instances N`` the template instances' sockets and
an HAProxy config. Running it twice changes nothing the second time.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xswarm import config as config_module
from xswarm.errors import XswarmError
from xswarm.ops import (
    files,
    haproxy_state,
    releases,
    scrape_targets,
    systemctl,
    templates,
    units,
)
from xswarm.ops.gpus import Gpu
from xswarm.ops.haproxy import TLS_PEM, tls_pem
from xswarm.ops.layout import PROMETHEUS_TARGETS, SERVICE_USER, Layout
from xswarm.tls import PemPair, TlsError, check_pair

DEFAULT_KEEP = 5


class InstallError(XswarmError):
    """Something install needs is missing or refused."""


@dataclass
class Report:
    """What install did, line by line: the operator sees every change and every no-op."""

    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def did(self, text: str) -> None:
        self.changed.append(text)

    def warn(self, text: str) -> None:
        self.warnings.append(text)

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


# Who owns what. Root never trusts what the service account can write: the application, its
# releases, config.toml and .env are root's (config.toml readable by the service group, .env
# read only by systemd, as root, for EnvironmentFile=); only state and logs are the service's.
ROOT_DIR_MODE = 0o755
BACKUP_MODE = 0o700
SERVICE_DIR_MODE = 0o750
CONFIG_MODE = 0o640
ENV_MODE = 0o600
UNIT_MODE = 0o644
# HAProxy's certificate and key: root's alone. Debian's haproxy.service starts HAProxy as
# root, and the config we render has no `user` line, so it reads them as root.
TLS_DIR_MODE = 0o700
TLS_PEM_MODE = 0o600
TARGETS_DIR_MODE = 0o755
# Drop-ins for Debian's haproxy.service (deploy/haproxy/ -> haproxy.service.d/): its file
# descriptor limit, and the server-state dump before a reload or stop.
HAPROXY_DROPINS = {
    "limits.conf": "haproxy.service.d/xswarm-limits.conf",
    "server-state.conf": haproxy_state.DROPIN,
}


@dataclass(frozen=True)
class Owners:
    """The numeric owners install gives its files; None where it must not chown (a staging
    tree built by an ordinary user keeps that user's files)."""

    root: files.Owner | None
    config: files.Owner | None
    service: files.Owner | None


def owners(layout: Layout, manage_system: bool) -> Owners:
    """Root's and the service account's ids: always on a server, and in a staging tree
    whenever install runs as root and the account exists (so tests see the real ownership)."""
    if not manage_system and os.geteuid() != 0:
        return Owners(None, None, None)
    try:
        account = pwd.getpwnam(layout.service_user)
    except KeyError:
        if manage_system:
            raise
        return Owners(None, None, None)
    group = account.pw_gid
    return Owners((0, 0), (0, group), (account.pw_uid, group))


def ensure_dir(path: Path, mode: int, ids: files.Owner | None, report: Report) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for line in files.secure_dir(path, mode, ids):
        report.did(line)


def write_if_absent(
    path: Path, text: str, mode: int, ids: files.Owner | None, report: Report
) -> None:
    """Create ``path`` unless something is there; an existing file gets owner and mode fixed
    through its own descriptor (a symlink is refused, never followed)."""
    try:
        files.write_file(path, text, mode, ids, replace=False)
    except FileExistsError:
        changes = files.secure_file(path, mode, ids)
        for line in changes:
            report.did(line)
        if not changes:
            report.kept(f"{path} exists (left as it is)")
        return
    report.did(f"wrote {path} (mode {mode:03o})")


def write_if_changed(
    path: Path, text: str, report: Report, ids: files.Owner | None = None, mode: int = UNIT_MODE
) -> bool:
    try:
        if files.read_trusted(path).decode() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_file(path, text, mode, ids)
    report.did(f"wrote {path}")
    return True


def move_legacy_database(layout: Layout, report: Report) -> None:
    """Earlier releases kept the call history in the bridge's writable /var/lib/xswarm;
    move it (and its WAL) into the supervisor's own directory once, never over a newer one."""
    old, new = layout.legacy_database, layout.database
    if os.path.lexists(new) or not old.is_file() or old.is_symlink():
        return
    for suffix in ("", "-wal", "-shm"):
        source = old.with_name(old.name + suffix)
        if source.is_file() and not source.is_symlink():
            os.rename(source, new.with_name(new.name + suffix))
    files.fsync_dir(new.parent)
    report.did(f"moved the call history {old} -> {new}")


def initial_config(
    instances: list[int], backends: tuple[str, ...] = (), gpus: Sequence[Gpu] = ()
) -> str:
    """The config.toml template; with instances, the supervisor is told where they are; with
    ``--backends``, HAProxy's list of them is kept, so that a later install renders it again;
    with ``gpus`` (``--instances auto --gpu``) instance N runs on the N-th of them."""
    front = ""
    if backends:
        listed = ", ".join(f'"{entry}"' for entry in backends)
        front = (
            "# Written by `xswarm install --backends`: HAProxy on this host balances calls over\n"
            "# these bridges on other hosts too.\n"
            f"[haproxy]\nbackends = [{listed}]\n\n"
        )
    if not instances:
        return templates.config_example(front)
    defaults = config_module.defaults()
    urls = []
    for number in instances:
        bridge = defaults.for_instance(number).bridge
        urls.append(f'"ws://127.0.0.1:{bridge.port}/control"')
    extra = (
        "# Written by `xswarm install --instances`: the supervisor watches these instances.\n"
        "[dashboard]\n"
        f"instances = [{', '.join(urls)}]\n"
        "\n"
        "# Written by `xswarm install --instances`: HAProxy on this host names the caller in\n"
        "# X-Forwarded-For, so max_calls_per_source counts callers, not the proxy.\n"
        "[voice.bridge]\n"
        'trusted_proxies = ["127.0.0.1", "::1"]\n'
    )
    for number, gpu in zip(instances, gpus, strict=False):
        extra += (
            f"\n# Written by `xswarm install --instances auto --gpu`: {gpu.describe()}.\n"
            f"[voice.bridge.instances.{number}]\n"
            f'device = "{gpu.device}"\n'
        )
    return templates.config_example(front + extra)


def check_gpu_pins(
    config: config_module.Config, instances: list[int], gpus: Sequence[Gpu], report: Report
) -> None:
    """An operator's config.toml is kept as it is; say where it does not pin an instance to
    the GPU discovery gave it, and the line that would."""
    for number, gpu in zip(instances, gpus, strict=False):
        have = config.for_instance(number).moshi.device
        if have == gpu.device:
            report.kept(f"xswarm-voice@{number} runs on {gpu.describe()}")
            continue
        report.kept(
            f"{config.source} keeps xswarm-voice@{number} on device {have!r}, not on "
            f"{gpu.describe()}; to pin it, add [voice.bridge.instances.{number}] "
            f'device = "{gpu.device}"'
        )


def write_scrape_targets(
    layout: Layout, config: config_module.Config, instances: list[int], report: Report
) -> None:
    """This host's Prometheus target files, where Prometheus runs beside it; elsewhere, the
    command that prints them for the Prometheus host."""
    host = socket.gethostname().split(".")[0]
    found = scrape_targets.host_targets(config, instances, socket.getfqdn(), host)
    folder = layout.prometheus_targets
    if not folder.parent.is_dir():
        report.kept(
            f"Prometheus is not on this host ({folder.parent} is absent): on the Prometheus "
            f"host, put the two files `xswarm targets` prints into {PROMETHEUS_TARGETS}"
        )
        return
    ensure_dir(folder, TARGETS_DIR_MODE, None, report)
    for name, text in ((found.voice_name, found.voice), (found.dashboard_name, found.dashboard)):
        if not write_if_changed(folder / name, text, report, mode=scrape_targets.TARGET_MODE):
            report.kept(f"{folder / name} is up to date")


def install_units(layout: Layout, plan: units.UnitPlan, report: Report) -> bool:
    """Write the plan into the unit directory and keep a copy inside the release."""
    changed = False
    kept = layout.release_dir(plan.version) / "units"
    files.check_trusted(layout.release_dir(plan.version), layout.root)
    for relative, text in sorted(plan.files.items()):
        units.check_relative(relative)
        changed |= write_if_changed(layout.unit_dir / relative, text, report)
        target = kept / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        files.write_file(target, text, UNIT_MODE)
    if not changed:
        report.kept(f"units in {layout.unit_dir} are up to date for {plan.version}")
    return changed


def restore_units(layout: Layout, version: str, report: Report) -> bool:
    """Put back the units a release was installed with (rollback)."""
    kept = layout.release_dir(version) / "units"
    if not kept.is_dir():
        raise InstallError(f"release {version} has no saved units in {kept}; reinstall it")
    saved = {}
    for path in sorted(kept.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        files.check_trusted(path, layout.root)
        saved[str(path.relative_to(kept))] = files.read_trusted(path).decode()
    return install_units(layout, units.UnitPlan(version, saved), report)


def install_tls_pem(
    layout: Layout, pair: PemPair, owner: files.Owner | None, report: Report
) -> str:
    """Check the pair (it parses, the key is the certificate's, it has not expired) and copy
    it as the one PEM HAProxy serves; returns the path haproxy.cfg names."""
    try:
        certificate = check_pair(pair)
        blob = pair.cert.read_bytes()
        if pair.key is not None:
            blob = blob.rstrip(b"\n") + b"\n" + pair.key.read_bytes()
    except TlsError as exc:
        raise InstallError(f"--tls-cert: {exc}") from None
    except OSError as exc:
        raise InstallError(f"--tls-cert: cannot read {exc.filename}: {exc.strerror}") from None
    target = tls_pem(layout)
    ensure_dir(target.parent, TLS_DIR_MODE, owner, report)
    if write_if_changed(target, blob.decode("ascii", "replace"), report, owner, TLS_PEM_MODE):
        report.did(
            f"certificate {pair.cert} (serial {certificate.serial:x}) expires {certificate.expires}"
        )
    return TLS_PEM


def haproxy_config(layout: Layout, text: str, report: Report) -> bool:
    """Validate and write haproxy.cfg and its service drop-ins; True when a drop-in changed."""
    binary = shutil.which("haproxy")
    if binary is not None:
        # A staging tree's certificate is not yet where the rendered config names it.
        checked = text.replace(TLS_PEM, str(tls_pem(layout)))
        with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as fh:
            fh.write(checked)
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
    changed = False
    for template, name in HAPROXY_DROPINS.items():
        dropin = layout.unit_dir / name
        changed |= write_if_changed(dropin, units.template(f"haproxy/{template}"), report)
    return changed


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
    tls: PemPair | None = None,
    tls_port: int = 443,
    backends: tuple[str, ...] | None = None,
    gpus: Sequence[Gpu] = (),
) -> tuple[Report, str]:
    """``backends``: ``--backends``, checked, which replaces ``[haproxy] backends``; ``gpus``:
    with ``--instances auto --gpu``, the GPU of each instance, in order."""
    report = Report()
    if manage_system:
        ensure_user(report)
    ids = owners(layout, manage_system)
    ensure_dir(layout.opt, ROOT_DIR_MODE, ids.root, report)
    ensure_dir(layout.releases, ROOT_DIR_MODE, ids.root, report)
    ensure_dir(layout.backup, BACKUP_MODE, ids.root, report)
    ensure_dir(layout.state, SERVICE_DIR_MODE, ids.service, report)
    ensure_dir(layout.dashboard_state, SERVICE_DIR_MODE, ids.service, report)
    ensure_dir(layout.logs, SERVICE_DIR_MODE, ids.service, report)
    move_legacy_database(layout, report)
    write_if_absent(
        layout.config,
        initial_config(instances, backends or (), gpus),
        CONFIG_MODE,
        ids.config,
        report,
    )
    write_if_absent(layout.env_file, templates.new_env_file(), ENV_MODE, ids.root, report)
    config = config_module.load(layout.config)
    if backends is not None:
        config = dataclasses.replace(
            config, haproxy=dataclasses.replace(config.haproxy, backends=backends)
        )
    check_gpu_pins(config, instances, gpus, report)
    version, built = releases.build(layout, wheel, wheelhouse, python)
    (report.did if built else report.kept)(
        f"release {version} {'built' if built else 'already installed'} in "
        f"{layout.release_dir(version)}"
    )
    resolved = units.resolve_hosts(config)
    units.require_resolved(config, resolved)
    plan = units.render(layout, version, config, instances, profiles, resolved)
    changed = install_units(layout, plan, report)
    if releases.current(layout) != version:
        releases.switch(layout, version)
        report.did(f"{layout.current} -> releases/{version}")
    else:
        report.kept(f"{layout.current} already points at {version}")
    if haproxy and (instances or config.haproxy.backends):
        public = None
        if tls is not None:
            public = units.PublicTls(install_tls_pem(layout, tls, ids.root, report), tls_port)
        rendered = units.render_haproxy(config, instances, public)
        changed |= haproxy_config(layout, rendered, report)
        _warn_plain_backends(config, report)
    write_scrape_targets(layout, config, instances, report)
    if changed and manage_system and systemctl.available():
        systemctl.daemon_reload()
        report.did("systemctl daemon-reload")
    for name in releases.prune(layout, keep):
        report.did(f"removed old release {name} (keeping {keep})")
    return report, version


def _warn_plain_backends(config: config_module.Config, report: Report) -> None:
    if config.haproxy.backends and not config.haproxy.backend_ca_file:
        report.warn(
            f"HAProxy reaches {', '.join(config.haproxy.backends)} over plain TCP: calls cross "
            "the network in clear. Give each bridge [voice.bridge] tls_cert and tls_key, and set "
            "[haproxy] backend_ca_file in config.toml to the CA that signed them"
        )


def next_steps(instances: list[int], haproxy: bool, backends: bool = False) -> str:
    lines = []
    if instances:
        names = " ".join(f"xswarm-voice@{n}.socket xswarm-voice@{n}" for n in instances)
        lines.append(f"  sudo systemctl enable --now {names}")
    elif not (haproxy and backends):
        lines.append("  sudo systemctl enable --now xswarm-voice.socket xswarm-voice")
    lines.append("  sudo systemctl enable --now xswarm-dashboard.socket xswarm-dashboard")
    if haproxy and (instances or backends):
        lines += [
            "  sudo systemctl disable --now xswarm-voice.socket xswarm-voice"
            "   # HAProxy takes the voice port",
            "  sudo systemctl restart haproxy",
        ]
    if haproxy and backends:
        lines += [
            "  # each backend host: [voice.bridge] host it is reached on, trusted_proxies with",
            "  #   this host's address, tls_cert and tls_key (see [haproxy] backend_ca_file)",
            "  sudo xswarm drain --backend HOST:PORT   # before that host upgrades, then undrain",
        ]
    return "\n".join(
        [
            "Next steps:",
            "  sudo nano /opt/xswarm/.env          # TWILIO_AUTH_TOKEN (the xswarm tokens are"
            " generated)",
            "  sudo nano /opt/xswarm/config.toml   # every key is listed, commented",
            "  sudo xswarm doctor",
            *lines,
            f"  sudo systemctl status xswarm-voice{'@1' if instances else ''}",
            "  sudo xswarm status",
        ]
    )
