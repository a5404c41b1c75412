"""Run the real ``xswarm-voice`` as a subprocess on a free loopback port, for tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.waiting import eventually_sync
from xswarm.client.common import metric_total

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServiceProcess:
    """One of our services running as a subprocess on a loopback port."""

    proc: subprocess.Popen[bytes]
    port: int
    config_path: Path
    stderr_path: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        """GET a path (with a bearer token if given); returns (status, parsed JSON or text)."""
        request = urllib.request.Request(self.http_url + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, body = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read().decode()
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@dataclass
class BridgeProcess(ServiceProcess):
    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def metric(bridge: BridgeProcess, name: str, **labels: str) -> float:
    """One series of the bridge's /metrics, or with no labels the sum of all the series of
    ``name`` (a counter's every reason, say); 0 when absent."""
    _, text = bridge.get("/metrics")
    if not labels:
        return metric_total(str(text), name) or 0.0
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{wanted}}} "
    return sum(
        float(line.split()[-1]) for line in str(text).splitlines() if line.startswith(series)
    )


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"xswarm-voice exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    eventually_sync(
        ready, within=timeout, detail=lambda: f"xswarm-voice not ready:\n{log.read_text()}"
    )


def start_bridge(
    tmp_path: Path,
    config_toml: str = "",
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    port: int | None = None,
    ready_timeout: float = 60,
    name: str = "bridge",
) -> BridgeProcess:
    port = port or free_port()
    workdir = tmp_path / name
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.toml"
    text = config_toml
    if "[voice.bridge]" in text:
        text = text.replace("[voice.bridge]", f"[voice.bridge]\nport = {port}", 1)
    else:
        text = f"[voice.bridge]\nport = {port}\n" + text
    if "[paths]" not in text:
        text += f'\n[paths]\nstate_dir = "{workdir / "state"}"\n'
    config_path.write_text(text)
    stderr_path = workdir / "stderr.log"
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XSWARM_", "TWILIO_", "NOTIFY_SOCKET", "LISTEN_"))
    }
    full_env.update(env or {})
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [str(VENV_BIN / "xswarm-voice"), "--config", str(config_path), *args],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            env=full_env,
            cwd=workdir,
        )
    bridge = BridgeProcess(proc, port, config_path, stderr_path)
    try:
        wait_ready(bridge.http_url, proc, ready_timeout, stderr_path)
    except Exception:
        bridge.stop(5)
        raise
    return bridge


@contextlib.contextmanager
def running_bridge(
    tmp_path: Path,
    config_toml: str = "",
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    **kwargs: object,
) -> Iterator[BridgeProcess]:
    """Start the real bridge, yield it, and stop it (SIGTERM, then SIGKILL) on exit."""
    bridge = start_bridge(tmp_path, config_toml, env, args, **kwargs)  # type: ignore[arg-type]
    try:
        yield bridge
    finally:
        bridge.stop()
