"""The rules behind remote supervision, without sockets: who may open /control, which token
each instance gets, how an instance's state follows its failures, and the fleet's capacity."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.certs import make_ca
from xswarm import config as config_module
from xswarm.errors import ConfigError
from xswarm.ops import units
from xswarm.ops.layout import Layout
from xswarm.protocol.auth import source_refusal
from xswarm.protocol.capacity import fleet_capacity
from xswarm.protocol.operator import InstanceInfo
from xswarm.supervisor.fleet import Fleet
from xswarm.supervisor.service import client_tls
from xswarm.tokens import (
    TokenError,
    instance_token_file_name,
    instance_token_variable,
    read_instance_tokens,
)

LAB = [ipaddress.ip_network("10.77.0.0/24")]


def test_control_allow_admits_its_networks_and_loopback_only() -> None:
    assert source_refusal("10.77.0.9", {}, LAB) is None
    assert source_refusal("::ffff:10.77.0.9", {}, LAB) is None
    assert source_refusal("127.0.0.2", {}, LAB) is None, "loopback is always allowed"
    assert source_refusal("::1", {}, LAB) is None
    assert source_refusal("203.0.113.5", {}, []) is None, "empty: any source (token still due)"
    refused = source_refusal("10.78.0.9", {}, LAB)
    assert refused is not None
    assert "source 10.78.0.9 is not in [voice.bridge] control_allow (10.77.0.0/24)" in refused
    # A proxy on loopback forwarding someone else is not loopback, nor an allowed source.
    forwarded = source_refusal("127.0.0.1", {"X-Forwarded-For": "10.77.0.9"}, LAB)
    assert forwarded is not None and "proxy" in forwarded
    assert source_refusal(None, {}, LAB) is not None


def test_control_allow_entries_are_checked_at_load() -> None:
    with pytest.raises(ConfigError, match=r"control_allow.*10\.77\.0\.0/33"):
        config_module.from_mapping({"voice": {"bridge": {"control_allow": ["10.77.0.0/33"]}}})
    loaded = config_module.from_mapping(
        {"voice": {"bridge": {"control_allow": ["10.77.0.0/24", "192.0.2.7"]}}}
    )
    assert loaded.bridge.control_allow == ("10.77.0.0/24", "192.0.2.7")


def private(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def test_each_instance_gets_its_own_token_or_the_shared_one(tmp_path: Path) -> None:
    assert instance_token_variable("XSWARM_CONTROL_TOKEN", "voice-b") == (
        "XSWARM_CONTROL_TOKEN_FOR_VOICE_B"
    )
    assert instance_token_file_name("10.0.0.5:10001") == "10.0.0.5_10001"
    folder = tmp_path / "credentials"
    folder.mkdir()
    private(folder / "10.0.0.5_10001", "from-the-directory")
    env = {
        "XSWARM_CONTROL_TOKEN": "shared",
        "XSWARM_CONTROL_TOKEN_FOR_VOICE_B": "from-the-variable",
        "XSWARM_CONTROL_TOKEN_DIR": str(folder),
    }
    names = ["voice-a", "voice-b", "10.0.0.5:10001"]
    assert read_instance_tokens("XSWARM_CONTROL_TOKEN", names, env) == {
        "voice-a": "shared",
        "voice-b": "from-the-variable",
        "10.0.0.5:10001": "from-the-directory",
    }
    # Rotated on disk: the next read (a reload) has the new one.
    private(folder / "10.0.0.5_10001", "rotated")
    assert read_instance_tokens("XSWARM_CONTROL_TOKEN", names, env)["10.0.0.5:10001"] == ("rotated")


def test_instance_token_files_follow_the_token_file_rules(tmp_path: Path) -> None:
    folder = tmp_path / "credentials"
    folder.mkdir()
    loose = private(folder / "voice-b", "token")
    os.chmod(loose, 0o644)
    env = {"XSWARM_CONTROL_TOKEN_DIR": str(folder)}
    with pytest.raises(TokenError, match=r"voice-b: is readable or writable by group"):
        read_instance_tokens("XSWARM_CONTROL_TOKEN", ["voice-b"], env)
    os.chmod(loose, 0o600)
    both = env | {"XSWARM_CONTROL_TOKEN_FOR_VOICE_B": "again"}
    with pytest.raises(TokenError, match="keep only one of them"):
        read_instance_tokens("XSWARM_CONTROL_TOKEN", ["voice-b"], both)
    missing = {"XSWARM_CONTROL_TOKEN_DIR": str(tmp_path / "nowhere")}
    with pytest.raises(TokenError, match="is not a directory"):
        read_instance_tokens("XSWARM_CONTROL_TOKEN", ["voice-b"], missing)
    assert read_instance_tokens("XSWARM_CONTROL_TOKEN", ["voice-a"], env) == {"voice-a": None}


def test_a_bad_ca_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    remote = ["wss://10.77.0.2:10001/control"]

    def cfg(ca_file: str) -> config_module.Config:
        return config_module.from_mapping({"dashboard": {"instances": remote, "ca_file": ca_file}})

    context = client_tls(cfg(str(ca.cert)))
    assert context is not None and context.check_hostname
    assert client_tls(cfg("")) is not None, "wss:// without ca_file: the system's CAs"
    assert client_tls(config_module.defaults()) is None, "nothing to verify locally"
    with pytest.raises(ConfigError, match=r"\[dashboard\] ca_file.*no PEM certificate"):
        client_tls(cfg(str(ca.key)))
    with pytest.raises(ConfigError, match=r"\[dashboard\] ca_file.*cannot read"):
        client_tls(cfg(str(tmp_path / "missing.pem")))


def test_instance_state_follows_the_failure_and_speaks_only_on_change() -> None:
    fleet = Fleet(stale_after=2.0, monotonic=lambda: 0.0, wall=lambda: 0.0)
    fleet.add_instance("b", "wss://10.77.0.2:10001/control")
    first = fleet.disconnected("b", "timed out", "unreachable", "timeout")
    assert [e["state"] for e in first.events] == ["unreachable"]
    assert fleet.disconnected("b", "timed out", "unreachable", "timeout").events == []
    refused = fleet.disconnected("b", "untrusted", "auth_refused", "tls_untrusted")
    assert refused.events[0]["info"]["failure"] == "tls_untrusted"
    info = fleet.instances["b"].info()
    assert (info.state, info.host, info.error) == ("auth_refused", "10.77.0.2", "untrusted")
    fleet.connected("b")
    fleet.apply("b", {"type": "hello", "pid": 5, "engine": "echo", "max_concurrent_calls": 8})
    assert (fleet.instances["b"].state, fleet.instances["b"].failure) == ("up", None)


def test_capacity_is_summed_per_host_and_in_total() -> None:
    def inst(url: str, state: str, calls: int, slots: int, refused: int | None = None) -> Any:
        return InstanceInfo(
            name=url,
            url=url,
            state=state,
            active_calls=calls,
            max_concurrent_calls=slots,
            refusals_last_minute=refused,
        )

    fleet = fleet_capacity(
        [
            inst("wss://gpu-a:10001/control", "up", 70, 80, 3),
            inst("wss://gpu-a:10002/control", "up", 80, 80, 5),
            inst("wss://gpu-b:10001/control", "draining", 10, 80),
            inst("wss://gpu-c:10001/control", "unreachable", 0, 80),
        ]
    )
    a, b, c = (fleet.hosts[h] for h in ("gpu-a", "gpu-b", "gpu-c"))
    assert (a.slots, a.calls, a.free, a.full, a.refusals_last_minute) == (160, 150, 10, 1, 8)
    assert (b.slots, b.free, b.up) == (80, 0, 1), "draining: its slots, none free"
    assert (c.slots, c.up, c.refusals_last_minute) == (0, 0, None)
    total = fleet.total
    assert (total.instances, total.up, total.slots, total.calls, total.free) == (
        4,
        3,
        240,
        160,
        10,
    )
    assert fleet.encode()["hosts"][0] == {"host": "gpu-a"} | a.encode()


def test_install_refuses_a_hostname_that_does_not_resolve(tmp_path: Path) -> None:
    config = config_module.from_mapping(
        {"dashboard": {"instances": ["wss://gpu-b.internal:10001/control"]}}
    )
    resolved = units.resolve_hosts(config, lambda host: [])
    with pytest.raises(ConfigError, match="gpu-b.internal does not resolve.*IPAddressAllow"):
        units.require_resolved(config, resolved)
    good = units.resolve_hosts(config, lambda host: ["10.77.0.3"])
    units.require_resolved(config, good)
    plan = units.render(Layout(tmp_path), "1.0", config, [], [], good)
    allow = units.parse(plan.files["xswarm-dashboard.service"])["Service"]["IPAddressAllow"]
    assert allow == ["localhost 10.77.0.3"]
