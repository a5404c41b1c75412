"""Remote instances over wss://: a real bridge serving TLS, a real supervisor checking it.

Certificates come from a CA made in the test (openssl). Each way a subscription can fail is
provoked for real and must show as its own state and failure code: verified (up), a CA we do
not trust (auth_refused, tls_untrusted), a wrong per-instance token (auth_refused,
token_refused), nothing listening (down), a socket that accepts but never speaks TLS
(unreachable, timeout), TLS against a plain HTTP port (auth_refused, tls_failed).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.supervisor.support import running_supervisor
from tests.support import certs
from tests.support.bridge import free_port
from tests.support.certs import Leaf, PrivateCa, TlsBridge, https_get, make_ca
from tests.support.waiting import eventually_sync
from xswarm.protocol.auth import REFUSAL_HEADER
from xswarm.supervisor.upstream import classify_failure

TOKEN = "remote-control-token-0123456789"
OPERATOR = "operator-token-0123456789"


def tls_bridge(
    folder: Path, leaf: Leaf, ca: PrivateCa, host: str = "127.0.0.1", extra: str = ""
) -> contextlib.AbstractContextManager[TlsBridge]:
    """xswarm-voice serving wss:// itself, with the shared control token."""
    return certs.tls_bridge(folder, leaf, ca, host, extra, {"XSWARM_CONTROL_TOKEN": TOKEN})


def by_name(instances: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in instances}


def settled(sup: Any, wanted: dict[str, tuple[str, str | None]]) -> dict[str, dict[str, Any]]:
    """/api/instances once every named instance shows its (state, failure)."""

    def probe() -> dict[str, dict[str, Any]]:
        status, body = sup.get("/api/instances", token=OPERATOR)
        assert status == 200, body
        return by_name(body)

    def done(seen: dict[str, dict[str, Any]]) -> bool:
        return all(
            (seen[name]["state"], seen[name]["failure"]) == want for name, want in wanted.items()
        )

    return eventually_sync(probe, done, within=30, detail=sup.log)


def test_wss_instances_show_why_they_are_away(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    leaf = ca.leaf("bridge", 7)
    # Accepts TCP (the kernel completes the handshake) and never answers the ClientHello.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    silent_port = silent.getsockname()[1]
    sup_port = free_port()
    with contextlib.ExitStack() as stack:
        stack.callback(silent.close)
        port = stack.enter_context(
            tls_bridge(tmp_path / "bridge", leaf, ca, extra='control_allow = ["10.77.0.0/24"]\n')
        ).port
        instances = [
            f"wss://127.0.0.1:{port}/control#good",
            f"wss://localhost:{port}/control#wrong-token",
            f"wss://127.0.0.1:{free_port()}/control#nothing",
            f"wss://127.0.0.1:{silent_port}/control#silent",
            f"wss://127.0.0.1:{sup_port}/control#plain",
        ]
        extra = f'ca_file = "{ca.cert}"\n'
        env = {
            "XSWARM_CONTROL_TOKEN": TOKEN,
            "XSWARM_SUPERVISOR_TOKEN": OPERATOR,
            # Its own token, wrong: overrides the shared one for this instance only.
            "XSWARM_CONTROL_TOKEN_FOR_WRONG_TOKEN": "not-the-bridge-token",
        }
        sup = stack.enter_context(
            running_supervisor(tmp_path, instances, env=env, extra_toml=extra, port=sup_port)
        )
        seen = settled(
            sup,
            {
                "good": ("up", None),
                "wrong-token": ("auth_refused", "token_refused"),
                "nothing": ("down", "connection_refused"),
                "silent": ("unreachable", "timeout"),
                "plain": ("auth_refused", "tls_failed"),
            },
        )
        assert seen["good"]["host"] == "127.0.0.1"
        assert "XSWARM_CONTROL_TOKEN" in seen["wrong-token"]["error"]
        assert "xswarm-voice running" in seen["nothing"]["error"]
        assert "did not answer within" in seen["silent"]["error"]
        assert "tls_cert" in seen["plain"]["error"]

        status, fleet = sup.get("/api/instances?totals=1", token=OPERATOR)
        assert status == 200
        assert [i["name"] for i in fleet["instances"]] == list(seen)
        hosts = {h["host"]: h for h in fleet["hosts"]}
        assert set(hosts) == {"127.0.0.1", "localhost"}
        assert (hosts["127.0.0.1"]["instances"], hosts["127.0.0.1"]["up"]) == (4, 1)
        assert hosts["127.0.0.1"]["slots"] == 300 and hosts["127.0.0.1"]["free"] == 300
        assert hosts["localhost"]["slots"] == 0
        assert fleet["total"]["slots"] == 300 and fleet["total"]["calls"] == 0

        status, metrics = sup.get("/metrics", token=OPERATOR)
        assert 'xswarm_supervisor_instance_state{instance="silent",state="unreachable"} 1' in (
            metrics
        )
        assert (
            'xswarm_supervisor_instance_failure{instance="wrong-token",failure="token_refused"} 1'
            in metrics
        )
        assert 'xswarm_supervisor_host_free{host="127.0.0.1"} 300' in metrics
        for secret in (TOKEN, "not-the-bridge-token"):
            assert secret not in sup.log() and secret not in str(fleet) + metrics


def test_a_ca_that_did_not_sign_the_bridge_is_refused_as_untrusted(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    stranger = make_ca(tmp_path / "other-pki")
    leaf = ca.leaf("bridge", 8)
    env = {"XSWARM_CONTROL_TOKEN": TOKEN, "XSWARM_SUPERVISOR_TOKEN": OPERATOR}
    with tls_bridge(tmp_path / "bridge", leaf, ca) as bridge:
        proc, port = bridge.proc, bridge.port
        url = f"wss://127.0.0.1:{port}/control#b"
        with running_supervisor(
            tmp_path, [url], env=env, extra_toml=f'ca_file = "{stranger.cert}"\n'
        ) as sup:
            seen = settled(sup, {"b": ("auth_refused", "tls_untrusted")})
            assert "set [dashboard] ca_file" in seen["b"]["error"]
            # The operator fixes the CA and reloads: the same instance comes up.
            sup.config_path.write_text(
                sup.config_path.read_text().replace(str(stranger.cert), str(ca.cert))
            )
            sup.signal(signal.SIGHUP)
            settled(sup, {"b": ("up", None)})
            # The bridge dies: the host answers, nothing listens there.
            proc.kill()
            proc.wait(10)
            seen = settled(sup, {"b": ("down", "connection_refused")})


def non_loopback_address() -> str | None:
    """An address of this machine beyond loopback, to connect from; None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for UDP connect
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


async def test_the_bridge_refuses_control_from_outside_control_allow(tmp_path: Path) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    ca = make_ca(tmp_path / "pki")
    leaf = ca.leaf("bridge", 9)
    extra = 'control_allow = ["10.77.0.0/24"]\n'
    if address.startswith("10.77.0."):
        extra = 'control_allow = ["192.0.2.0/24"]\n'
    with tls_bridge(tmp_path / "bridge", leaf, ca, host="0.0.0.0", extra=extra) as bridge:
        port = bridge.port
        context = ssl.create_default_context(cafile=str(ca.cert))
        context.check_hostname = False  # the certificate names 127.0.0.1, not this address
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(
                    f"wss://{address}:{port}/control", headers=headers, ssl=context
                )
            # From loopback, with the token, the same bridge lets us in.
            loopback = await session.ws_connect(
                f"wss://127.0.0.1:{port}/control", headers=headers, ssl=context
            )
            await loopback.close()
        assert refused.value.status == 403
        assert refused.value.headers is not None
        assert refused.value.headers[REFUSAL_HEADER] == "source"
        failure = classify_failure(f"wss://{address}:{port}/control", refused.value)
        assert (failure.state, failure.code) == ("auth_refused", "source_refused")
        assert "control_allow" in failure.reason
        assert f"source {address} is not in [voice.bridge] control_allow" in bridge.log()
        metrics = https_get(port, "/metrics", ca)
        assert 'xswarm_control_refused_total{reason="source"} 1' in metrics
