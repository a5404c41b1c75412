"""Certificates made in the test with the openssl CLI: a private CA and leaves it signs."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


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

    def leaf(self, name: str, serial: int, days: int = 30, host: str = "localhost") -> Leaf:
        key = self.folder / f"{name}.key"
        csr = self.folder / f"{name}.csr"
        cert = self.folder / f"{name}.pem"
        ext = self.folder / f"{name}.ext"
        ext.write_text(f"subjectAltName=DNS:{host},IP:127.0.0.1\n")
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
