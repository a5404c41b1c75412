"""HAProxy's public TLS frontend: rendered, checked by haproxy itself, and carrying a real
Twilio-shaped wss:// call to a real bridge; plus install's certificate copy and doctor."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import numpy as np
import pytest

from tests.support import haproxy as staged_haproxy
from tests.support.bridge import BridgeProcess, free_port, running_bridge
from tests.support.certs import Leaf, PrivateCa, make_ca
from tests.support.waiting import eventually_sync
from xswarm.client.common import client_ssl
from xswarm.client.twilio_call import place_twilio_call
from xswarm.config import load
from xswarm.ops import checks, units
from xswarm.ops.checks import CertificateFacts, Facts, FileFacts
from xswarm.ops.haproxy import TLS_PEM, tls_pem
from xswarm.ops.install import InstallError, Report, install_tls_pem
from xswarm.ops.inventory import certificate
from xswarm.ops.layout import Layout
from xswarm.tls import PemPair


def haproxy_or_skip() -> str:
    path = shutil.which("haproxy")
    if path is None:
        pytest.skip("haproxy is not installed (`sudo bash deploy/ci/system-deps.sh`)")
    return path


@pytest.fixture
def ca(tmp_path: Path) -> PrivateCa:
    return make_ca(tmp_path / "pki")


def combined(leaf: Leaf, folder: Path) -> Path:
    pem = folder / "haproxy.pem"
    pem.write_bytes(leaf.cert.read_bytes() + leaf.key.read_bytes())
    return pem


def render(config_path: Path, pem: Path, port: int = 443, host: str = "") -> str:
    config = load(config_path)
    return units.render_haproxy(config, [1], units.PublicTls(str(pem), port, host))


def test_the_tls_frontend_renders_and_haproxy_accepts_it(ca: PrivateCa, tmp_path: Path) -> None:
    haproxy = haproxy_or_skip()
    config = tmp_path / "config.toml"
    config.write_text("[voice.bridge]\n")
    pem = combined(ca.leaf("server", 1), tmp_path)
    text = render(config, pem)
    assert f"    bind :443 ssl crt {pem} alpn http/1.1\n" in text
    assert "deny deny_status 404 if { path,url_dec -m reg -i (^|/)(control|metrics)(/|$) }" in text
    assert 'set-header Strict-Transport-Security "max-age=63072000"' in text
    assert "@" not in text.split("global", 1)[1]
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    done = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # Without TLS the frontend is what it always was: the bridge's own address, every path.
    plain = units.render_haproxy(load(config), [1]).split("\nglobal", 1)[1]
    assert "bind 127.0.0.1:9998\n" in plain
    assert "ssl" not in plain and "deny" not in plain and "Strict-Transport" not in plain


def test_a_certificate_path_that_would_inject_config_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[voice.bridge]\n")
    for bad in ("relative.pem", "/etc/x.pem\n    server evil 1.2.3.4:80", "/etc/../x.pem"):
        with pytest.raises(ValueError, match="certificate path"):
            render(config, Path(bad) if "\n" not in bad else bad)  # type: ignore[arg-type]


# -- install's copy of the pair -------------------------------------------------------------


def test_install_copies_the_pair_as_one_root_only_pem(ca: PrivateCa, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")
    leaf = ca.leaf("server", 1)
    report = Report()
    assert install_tls_pem(layout, PemPair(leaf.cert, leaf.key), None, report) == TLS_PEM
    target = tls_pem(layout)
    assert target.read_bytes().startswith(leaf.cert.read_bytes().rstrip(b"\n"))
    assert target.read_bytes().endswith(leaf.key.read_bytes())
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert any("expires" in line for line in report.changed)
    again = Report()
    install_tls_pem(layout, PemPair(leaf.cert, leaf.key), None, again)
    assert not again.changed


def test_install_refuses_a_bad_pair_in_one_line(ca: PrivateCa, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")
    leaf, other = ca.leaf("server", 1), ca.leaf("other", 2)
    with pytest.raises(InstallError, match="does not belong") as caught:
        install_tls_pem(layout, PemPair(leaf.cert, other.key), None, Report())
    assert str(caught.value).startswith("--tls-cert: ")
    assert "\n" not in str(caught.value)
    assert not tls_pem(layout).exists()


def test_the_install_command_checks_the_flags_before_installing(
    ca: PrivateCa, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from xswarm.commands.install import command

    leaf, other = ca.leaf("server", 1), ca.leaf("other", 2)
    wheel = tmp_path / "xswarm-0-py3-none-any.whl"
    wheel.write_bytes(b"")
    base = ["--root", str(tmp_path / "root"), "--wheel", str(wheel)]
    cases = {
        "does not belong": ["--instances", "2", "--tls-cert", str(leaf.cert), "--tls-key", str(other.key)],
        "[voice.bridge] tls_cert": ["--tls-cert", str(leaf.cert), "--tls-key", str(leaf.key)],
        "--tls-key needs --tls-cert": ["--instances", "2", "--tls-key", str(leaf.key)],
    }  # fmt: skip
    for words, flags in cases.items():
        result = CliRunner().invoke(command, [*base, *flags])
        assert result.exit_code == 1, result.output
        assert words in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "root").exists()


# -- doctor ----------------------------------------------------------------------------------


def diagnose_certificates(*certs: CertificateFacts) -> list[checks.Finding]:
    facts = Facts(FileFacts("/opt/xswarm/.env", exists=False), certificates=list(certs))
    return [f for f in checks.diagnose(facts) if f.topic == "tls"]


def test_doctor_warns_within_14_days_and_fails_when_expired(ca: PrivateCa, tmp_path: Path) -> None:
    soon, later = ca.leaf("soon", 1, days=5), ca.leaf("later", 2, days=30)
    found = diagnose_certificates(
        certificate(soon.cert, "[voice.bridge] tls_cert"),
        certificate(later.cert, "HAProxy"),
        CertificateFacts("/x.pem", "HAProxy", -60.0, "2020-01-01 00:00 UTC"),
        certificate(tmp_path / "missing.pem", "HAProxy"),
    )
    assert [f.level for f in found] == [checks.WARN, checks.OK, checks.FAIL, checks.FAIL]
    assert "expires in 5.0 days" in found[0].message or "expires in 4.9 days" in found[0].message
    assert "systemctl reload xswarm-voice" in found[0].fix
    assert "--tls-cert" in found[2].fix
    assert "expired on 2020-01-01" in found[2].message
    assert "cannot read certificate" in found[3].message


# -- a real HAProxy in front of a real bridge -----------------------------------------------


@pytest.fixture
def fronted(ca: PrivateCa, tmp_path: Path) -> Iterator[tuple[int, BridgeProcess]]:
    """A bridge, and HAProxy serving TLS on a loopback port in front of it (as instance 1)."""
    haproxy = haproxy_or_skip()
    bridge_port = free_port()
    config_toml = (
        f'[voice.bridge]\nengine = "echo"\ninstance_port_base = {bridge_port - 1}\n'
        'trusted_proxies = ["127.0.0.1"]\n'
    )
    with running_bridge(tmp_path, config_toml, port=bridge_port) as bridge:
        tls_port = free_port()
        pem = combined(ca.leaf("public", 1), tmp_path)
        text = render(bridge.config_path, pem, tls_port, "127.0.0.1")
        text = staged_haproxy.for_test(text, Layout(tmp_path / "front"))
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(text)
        log = (tmp_path / "haproxy.log").open("wb")
        proc = subprocess.Popen(
            [haproxy, "-f", str(cfg), "-db"], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        try:

            def up() -> bool:
                assert proc.poll() is None, (tmp_path / "haproxy.log").read_text()
                try:
                    status, _, _ = https(tls_port, "/readyz", ca)
                except OSError:
                    return False
                return status == 200

            eventually_sync(up, within=20, detail=lambda: (tmp_path / "haproxy.log").read_text())
            yield tls_port, bridge
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
            log.close()


def https(port: int, path: str, ca: PrivateCa) -> tuple[int, Message, str]:
    """Status, headers (case-insensitive: HAProxy sends names in lower case) and body."""
    context = ssl.create_default_context(cafile=str(ca.cert))
    request = urllib.request.Request(f"https://localhost:{port}{path}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


async def test_a_twilio_call_over_wss_through_haproxy(
    fronted: tuple[int, BridgeProcess], ca: PrivateCa
) -> None:
    port, bridge = fronted
    voice = (0.3 * np.sin(np.arange(8000 * 2) * 2 * np.pi * 440 / 8000)).astype(np.float32)
    result = await place_twilio_call(
        f"wss://localhost:{port}/twilio", voice, 0.5, tls=client_ssl(ca.cert)
    )
    assert result.close_code in (None, 1000, 1001), result.close_reason
    assert not result.errors, result.errors
    assert len(result.received_at) >= 0.9 * len(result.sent_at) > 0


def test_the_public_frontend_refuses_control_and_metrics(
    fronted: tuple[int, BridgeProcess], ca: PrivateCa
) -> None:
    port, bridge = fronted
    status, headers, _ = https(port, "/healthz", ca)
    assert status == 200
    assert headers["Strict-Transport-Security"] == "max-age=63072000"
    for path in (
        "/control", "/metrics", "/control?x=1", "//metrics", "/./control", "/x/../metrics",
        "/%63ontrol", "/%6Detrics", "/%2Fcontrol", "/METRICS", "/control/",
    ):  # fmt: skip
        status, _, body = https(port, path, ca)
        assert status == 404, (path, status, body)
    # The same paths answer on the instance's own port, where the supervisor reaches them.
    assert bridge.get("/metrics")[0] == 200


def test_plain_connections_to_the_tls_port_get_no_http(
    fronted: tuple[int, BridgeProcess],
) -> None:
    port, _ = fronted
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(4096)
    assert b"xswarm_" not in answer
