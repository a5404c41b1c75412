"""A real systemd 252, booted in a throwaway container, for the end-to-end tests.

``systemd-nspawn -D / --volatile=yes`` boots the host's own /usr on an empty tmpfs root, with a
private network namespace (only loopback), so units, ports and users inside touch nothing
outside. Commands run inside through ``nsenter``; ``setsid`` keeps a stray signal in there
from reaching the test process's group. ``Container`` always powers off what it booted, and
kills only its own nspawn process, by PID, if the guest does not go down.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SYSTEMD = "/usr/lib/systemd/systemd"


def unavailable() -> str | None:
    """Why a container cannot be booted here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn boots a container)"
    if shutil.which("systemd-nspawn") is None:
        return "systemd-nspawn is missing (apt-get install systemd-container)"
    if not Path(SYSTEMD).exists():
        return f"{SYSTEMD} is missing (apt-get install systemd)"
    probe = subprocess.run(
        ["/usr/bin/python3", "-c", "import ensurepip, venv"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return "Debian's python3 cannot make venvs (apt-get install python3-venv)"
    return None


@dataclass
class Container:
    log_path: Path
    binds: list[tuple[Path, str]] = field(default_factory=list)
    name: str = field(default_factory=lambda: f"xsw-e2e-{uuid.uuid4().hex[:8]}")
    nspawn: subprocess.Popen[bytes] | None = None
    leader: int = 0

    def boot(self, timeout: float = 90.0) -> None:
        argv = [
            "systemd-nspawn",
            "-D",
            "/",
            "--volatile=yes",
            "-b",
            "--register=no",
            "--keep-unit",
            "--console=pipe",
            "--private-network",
            f"--machine={self.name}",
        ]
        # With only loopback, systemd-networkd-wait-online would hold the boot for 2 minutes.
        argv += ["--bind-ro=/dev/null:/etc/systemd/system/systemd-networkd-wait-online.service"]
        argv += [f"--bind-ro={source}:{target}" for source, target in self.binds]
        with self.log_path.open("wb") as log:
            self.nspawn = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.leader:
            if self.nspawn.poll() is not None:
                raise RuntimeError(
                    f"systemd-nspawn exited {self.nspawn.returncode}: "
                    f"{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError("the container's systemd did not appear")
            self.leader = self._find_leader()
            time.sleep(0.2)
        state = ""
        while time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the container did not finish booting (state {state!r})")

    def _find_leader(self) -> int:
        assert self.nspawn is not None
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_text()
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.nspawn.pid and cmdline == SYSTEMD:
                return int(proc.name)
        return 0

    def run(
        self,
        argv: list[str],
        check: bool = True,
        timeout: float = 180.0,
    ) -> subprocess.CompletedProcess[str]:
        full = ["setsid", "--wait", "nsenter", "-t", str(self.leader), "-a", *argv]
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(
                f"`{shlex.join(argv)}` exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def sh(
        self,
        script: str,
        check: bool = True,
        timeout: float = 180.0,
    ) -> subprocess.CompletedProcess[str]:
        return self.run(["/bin/sh", "-c", script], check=check, timeout=timeout)

    def read(self, path: str) -> str:
        return self.run(["cat", path]).stdout

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path], check=False).returncode == 0

    def wait_for(self, path: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exists(path):
                return self.read(path)
            time.sleep(0.3)
        raise AssertionError(f"{path} did not appear in the container within {timeout:.0f} s")

    def show(self, unit: str, prop: str) -> str:
        return self.run(["systemctl", "show", "--value", "-p", prop, unit]).stdout.strip()

    def poweroff(self, timeout: float = 60.0) -> None:
        if self.nspawn is None or self.nspawn.poll() is not None:
            return
        if self.leader:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                self.run(["systemctl", "poweroff", "--no-block"], check=False, timeout=20)
        try:
            self.nspawn.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.nspawn.send_signal(signal.SIGTERM)
            try:
                self.nspawn.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()
                self.nspawn.wait(timeout=15)


@contextlib.contextmanager
def booted(log_path: Path, binds: list[tuple[Path, str]]) -> Iterator[Container]:
    container = Container(log_path=log_path, binds=binds)
    try:
        container.boot()
        yield container
    finally:
        container.poweroff()
