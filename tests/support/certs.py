"""Certificates made in the test with the openssl CLI: a private CA and leaves it signs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.bridge import VENV_BIN, free_port
from tests.support.waiting import eventually_sync


def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.skip("the openssl command is needed to make test certificates")
    return path


def _run(*args: str) -> None:
    subprocess.run([openssl(), *args], check=True, capture_output=True)


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path
    serial: int


@dataclass(frozen=True)
class PrivateCa:
    """A CA clients are told to trust (``--ca-file``); ``leaf`` issues server certificates."""

    cert: Path
    key: Path
    folder: Path

    def leaf(
        self,
        name: str,
        serial: int,
        days: int = 30,
        host: str = "localhost",
        ips: Sequence[str] = ("127.0.0.1",),
    ) -> Leaf:
        key = self.folder / f"{name}.key"
        csr = self.folder / f"{name}.csr"
        cert = self.folder / f"{name}.pem"
        ext = self.folder / f"{name}.ext"
        names = ",".join([f"DNS:{host}", *(f"IP:{ip}" for ip in ips)])
        ext.write_text(f"subjectAltName={names}\n")
        _run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
        _run("req", "-new", "-key", str(key), "-subj", f"/CN={host}", "-out", str(csr))
        _run(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-set_serial", str(serial), "-days", str(days), "-extfile", str(ext),
            "-out", str(cert),
        )  # fmt: skip
        return Leaf(cert, key, serial)


def make_ca(folder: Path) -> PrivateCa:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "ca.pem", folder / "ca.key"
    _run(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", "/CN=xswarm test CA",
    )  # fmt: skip
    return PrivateCa(cert, key, folder)


def not_after(cert: Path) -> str:
    """openssl's own reading of notAfter, to check ours against."""
    done = subprocess.run(
        [openssl(), "x509", "-in", str(cert), "-noout", "-enddate", "-dateopt", "iso_8601"],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip().split("=", 1)[1]


# -- a bridge that serves TLS itself ([voice.bridge] tls_cert) ------------------------------


def https_get(port: int, path: str, ca: PrivateCa) -> str:
    url = f"https://localhost:{port}{path}"
    with urllib.request.urlopen(
        url, timeout=5, context=ssl.create_default_context(cafile=str(ca.cert))
    ) as response:
        return str(response.read().decode())


class TlsBridge:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, folder: Path) -> None:
        self.proc, self.port, self.folder = proc, port, folder

    def log(self) -> str:
        return (self.folder / "stderr.log").read_text(errors="replace")

    def reload_record(self) -> dict[str, object]:
        path = self.folder / "run" / "reload.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def sighup_and_wait(self, generation: int) -> dict[str, object]:
        self.proc.send_signal(signal.SIGHUP)
        return eventually_sync(
            self.reload_record,
            lambda record: record.get("generation") == generation,
            within=15,
            detail=self.log,
        )


def start_tls_bridge(
    folder: Path,
    leaf: Leaf,
    ca: PrivateCa,
    host: str = "127.0.0.1",
    extra: str = "",
    env_extra: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """xswarm-voice serving wss:// itself; ``extra``: more ``[voice.bridge]`` lines."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = folder / "config.toml"
    config.write_text(
        f'[voice.bridge]\nhost = "{host}"\nport = {port}\nengine = "echo"\n'
        f'tls_cert = "{leaf.cert}"\ntls_key = "{leaf.key}"\n{extra}'
        f'[paths]\nstate_dir = "{folder / "state"}"\n'
    )
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("XSWARM_", "TWILIO_", "LISTEN_"))
    }
    env["XSWARM_RUNTIME_DIR"] = str(folder / "run")
    env.pop("NOTIFY_SOCKET", None)
    env |= env_extra or {}
    with (folder / "stderr.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(VENV_BIN / "xswarm-voice"), "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            cwd=folder,
        )
    return proc, port


@contextlib.contextmanager
def tls_bridge(
    folder: Path,
    leaf: Leaf,
    ca: PrivateCa,
    host: str = "127.0.0.1",
    extra: str = "",
    env_extra: dict[str, str] | None = None,
) -> Iterator[TlsBridge]:
    proc, port = start_tls_bridge(folder, leaf, ca, host, extra, env_extra)
    bridge = TlsBridge(proc, port, folder)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"xswarm-voice exited with {proc.returncode}:\n{bridge.log()}")
        try:
            return "ready" in https_get(port, "/readyz", ca)
        except OSError:
            return False

    try:
        eventually_sync(ready, within=60, detail=bridge.log)
        yield bridge
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
