"""What is installed and running on this server, read from the files, /proc and systemd.

Doctor judges these facts, status shows them, backup copies them and a rollout re-renders
from them; none of those commands asks another for them. Reading only: nothing here
changes the server.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
from pathlib import Path

from xswarm.config import Config
from xswarm.ops import checks, systemctl, units
from xswarm.ops.checks import CertificateFacts, DatabaseFacts, Holder, UnitFacts
from xswarm.ops.layout import Layout
from xswarm.tls import TlsError, read_certificate

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
    """Each program the installed services start or reload with -> whether it can run."""
    out = {}
    for name, text in files.items():
        if not name.endswith(".service"):
            continue
        for key in ("ExecStart", "ExecReload"):
            for value in units.parse(text).get("Service", {}).get(key, []):
                words = shlex.split(value)
                if words:
                    path = words[0].lstrip(_PREFIX_CHARS)
                    if "-" in words[0][: len(words[0]) - len(path)]:
                        # "-": systemd tolerates its failure (xswarm-nvidia's optional tool).
                        continue
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
    bridge = config.bridge
    override = config.instances.get(number, {})
    return int(override.get("port", bridge.instance_port_base + number))


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


def database_path(config: Config, layout: Layout) -> Path:
    """The supervisor's SQLite file: ``[paths] state_dir`` if set, else the layout's."""
    state_dir = config.paths.state_dir
    return Path(state_dir) / "xswarm.db" if state_dir else layout.database


def database(path: Path) -> DatabaseFacts:
    """Whether the database exists and passes SQLite's integrity check, opened read-only."""
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


def certificate(path: Path, used_by: str) -> CertificateFacts:
    """When a served certificate expires, read from its file."""
    try:
        cert = read_certificate(path)
    except TlsError as exc:
        return CertificateFacts(str(path), used_by, error=str(exc))
    return CertificateFacts(str(path), used_by, cert.seconds_left(), cert.expires)


def mem_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def unit_facts(names: list[str]) -> dict[str, UnitFacts]:
    """systemd's view of each unit; empty where systemd is not running."""
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
