"""The bridge terminating TLS itself: wss:// calls, renewal on SIGHUP, bad pairs refused."""

from __future__ import annotations

import asyncio
import calendar
import json
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from tests.support.bridge import VENV_BIN
from tests.support.certs import (
    Leaf,
    PrivateCa,
    https_get,
    make_ca,
    not_after,
    start_tls_bridge,
    tls_bridge,
)
from xswarm.client.common import client_ssl
from xswarm.client.twilio_call import place_twilio_call
from xswarm.tls import PemPair, ServerTls, TlsError, check_pair, read_certificate

CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ca(tmp_path: Path) -> PrivateCa:
    return make_ca(tmp_path / "pki")


def client_context(ca: PrivateCa) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.cert))


def served_serial(port: int, ca: PrivateCa) -> int:
    """The serial of the certificate a new connection is given."""
    context = client_context(ca)
    context.set_alpn_protocols(["h2", "http/1.1"])  # the bridge speaks HTTP/1.1 only
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "http/1.1"
        return int(tls.getpeercert()["serialNumber"], 16)  # type: ignore[index, arg-type]


# -- xswarm.tls, on certificates openssl made ---------------------------------------------


def test_read_certificate_agrees_with_openssl(ca: PrivateCa) -> None:
    leaf = ca.leaf("server", 4242, days=9)
    cert = read_certificate(leaf.cert)
    assert cert.serial == 4242
    expected = calendar.timegm(time.strptime(not_after(leaf.cert), "%Y-%m-%d %H:%M:%SZ"))
    assert cert.not_after == expected
    assert 8.9 * 86400 < cert.seconds_left() <= 9 * 86400


def test_check_pair_names_each_problem_in_one_line(ca: PrivateCa, tmp_path: Path) -> None:
    good, other = ca.leaf("good", 1), ca.leaf("other", 2)
    assert check_pair(PemPair(good.cert, good.key)).serial == 1
    combined = tmp_path / "combined.pem"
    combined.write_bytes(good.cert.read_bytes() + good.key.read_bytes())
    assert check_pair(PemPair(combined)).serial == 1
    problems = {
        "does not belong": PemPair(good.cert, other.key),
        "holds no private key": PemPair(good.cert),
        "holds no PEM certificate": PemPair(good.key, good.key),
        "no such file": PemPair(good.cert, tmp_path / "missing.key"),
    }
    for words, pair in problems.items():
        with pytest.raises(TlsError, match=words) as caught:
            check_pair(pair)
        assert "\n" not in str(caught.value)
    with pytest.raises(TlsError, match="expired on"):
        check_pair(PemPair(good.cert, good.key), now=time.time() + 31 * 86400)


def test_a_bad_renewal_leaves_the_served_pair_in_place(ca: PrivateCa) -> None:
    first, second = ca.leaf("first", 1), ca.leaf("second", 2)
    served = ServerTls(PemPair(first.cert, first.key))
    shutil.copy(second.cert, first.cert)  # a new certificate, the old key: refused
    with pytest.raises(TlsError, match="does not belong"):
        served.reload()
    assert served.certificate.serial == 1


# -- the real bridge ----------------------------------------------------------------------


def test_xswarm_call_over_wss_with_a_ca_file(ca: PrivateCa, tmp_path: Path) -> None:
    leaf = ca.leaf("server", 7001)
    with tls_bridge(tmp_path / "bridge", leaf, ca) as bridge:
        assert served_serial(bridge.port, ca) == 7001
        done = subprocess.run(
            [
                str(VENV_BIN / "xswarm"), "call", "--url", f"wss://localhost:{bridge.port}",
                "--ca-file", str(ca.cert), "--tail", "0.5", "--out", str(tmp_path / "reply.wav"),
            ],
            capture_output=True, text=True, timeout=60, cwd=CHECKOUT,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "calling wss://localhost" in done.stdout
        received = next(line for line in done.stdout.splitlines() if "frames received" in line)
        assert int(received.split()[2]) > 0
        metrics = https_get(bridge.port, "/metrics", ca)
        expiry = read_certificate(leaf.cert).not_after
        assert (
            f'xswarm_tls_certificate_expiry_timestamp_seconds{{certificate="{leaf.cert}"}} '
            f"{expiry:g}" in metrics.replace(f"{expiry:.1f}", f"{expiry:g}")
        ), metrics
        assert f"listening on wss://127.0.0.1:{bridge.port}" in bridge.log()
        # Without the CA the certificate is not trusted, and the caller says so.
        untrusted = subprocess.run(
            [str(VENV_BIN / "xswarm"), "call", "--url", f"wss://localhost:{bridge.port}"],
            capture_output=True, text=True, timeout=60, cwd=CHECKOUT,
        )  # fmt: skip
        assert untrusted.returncode != 0
        assert "certificate" in untrusted.stdout + untrusted.stderr


async def test_sighup_renews_the_certificate_while_a_call_goes_on(
    ca: PrivateCa, tmp_path: Path
) -> None:
    first, renewed, wrong = ca.leaf("first", 1), ca.leaf("renewed", 2), ca.leaf("wrong", 3)
    served = tmp_path / "served"
    served.mkdir()
    cert, key = served / "cert.pem", served / "key.pem"
    shutil.copy(first.cert, cert)
    shutil.copy(first.key, key)
    with tls_bridge(tmp_path / "bridge", Leaf(cert, key, 1), ca) as bridge:
        assert served_serial(bridge.port, ca) == 1
        voice = (0.3 * np.sin(np.arange(8000 * 4) * 2 * np.pi * 440 / 8000)).astype(np.float32)
        call = asyncio.create_task(
            place_twilio_call(
                f"wss://localhost:{bridge.port}/twilio", voice, 0.5, tls=client_ssl(ca.cert)
            )
        )
        await asyncio.sleep(1.0)
        assert not call.done()
        # The renewal: new files in place (cert and key change together), then SIGHUP.
        shutil.copy(renewed.cert, cert)
        shutil.copy(renewed.key, key)
        record = await asyncio.to_thread(bridge.sighup_and_wait, 1)
        assert record["ok"] is True, record
        assert "renewed" in str(record["message"])
        assert await asyncio.to_thread(served_serial, bridge.port, ca) == 2
        metrics = await asyncio.to_thread(https_get, bridge.port, "/metrics", ca)
        assert f"{read_certificate(renewed.cert).not_after:g}" in metrics.replace(".0\n", "\n")
        # A bad renewal (a key that is not the certificate's) is refused; the served pair stays.
        shutil.copy(wrong.key, key)
        record = await asyncio.to_thread(bridge.sighup_and_wait, 2)
        assert record["ok"] is False, record
        assert "does not belong" in str(record["message"])
        assert "keeping the served one" in str(record["message"])
        assert await asyncio.to_thread(served_serial, bridge.port, ca) == 2
        # The call placed before the renewal went on to its end.
        result = await asyncio.wait_for(call, 30)
        assert result.close_code in (None, 1000, 1001)
        assert not result.errors, result.errors
        assert len(result.received_at) >= 0.9 * len(result.sent_at)


def test_a_bad_pair_at_start_exits_78_with_one_line(ca: PrivateCa, tmp_path: Path) -> None:
    good, other = ca.leaf("good", 1), ca.leaf("other", 2)
    proc, _ = start_tls_bridge(tmp_path / "bridge", Leaf(good.cert, other.key, 1), ca)
    assert proc.wait(60) == 78
    log = (tmp_path / "bridge" / "stderr.log").read_text()
    errors = [line for line in log.splitlines() if "tls_cert" in line]
    assert len(errors) == 1, log
    assert f"the key {other.key} does not belong to the certificate {good.cert}" in errors[0]
    assert "Traceback" not in log


async def test_a_stopping_bridge_closes_its_subscribers_with_a_handshake(
    ca: PrivateCa, tmp_path: Path
) -> None:
    """SIGTERM with a supervisor subscribed over TLS: the subscriber gets every event queued
    before the stop, then a WebSocket close (1001), and the bridge exits. Without the close
    handshake the TLS socket waited for the peer's close_notify (30 s in asyncio), and the
    supervisor saw the bridge as up all that time."""
    with tls_bridge(tmp_path / "bridge", ca.leaf("server", 1), ca) as bridge:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"wss://localhost:{bridge.port}/control", ssl=client_context(ca)) as ws,
        ):
            hello = await ws.receive_json(timeout=10)
            assert hello["type"] == "hello"
            bridge.proc.send_signal(signal.SIGTERM)
            seen = []
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    seen.append(json.loads(message.data)["type"])
            assert ws.close_code == 1001, (ws.close_code, seen)
        assert await asyncio.to_thread(bridge.proc.wait, 20) == 0, bridge.log()
