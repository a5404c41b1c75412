"""Root never trusts what the service account can write: values rendered into units and
haproxy.cfg, files root creates, paths root reads, and what the root-run unit parts see."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from xswarm import config as config_module
from xswarm.errors import ConfigError
from xswarm.ops import files, units
from xswarm.ops.layout import Layout

INJECTED = "0.0.0.0\nExecStartPre=/bin/sh -c 'id > /tmp/pwned'\nListenStream=127.0.0.1"


def test_a_newline_in_a_host_is_refused_when_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[voice.bridge]\nhost = "0.0.0.0\\nExecStartPre=/bin/sh -c x"\n')
    with pytest.raises(ConfigError) as caught:
        config_module.load(path)
    assert caught.value.exit_status == 78
    assert caught.value.key == "[voice.bridge] host"
    assert "\n" not in str(caught.value)
    for mapping, key in (
        ({"dashboard": {"host": "a b"}}, "[dashboard] host"),
        ({"voice.bridge.instances.1": {"host": "x;y"}}, "[voice.bridge.instances.1] host"),
        ({"dashboard": {"instances": ["ws://h\tx:1/control"]}}, "[dashboard] instances"),
        ({"voice.bridge": {"host": ""}}, "[voice.bridge] host"),
    ):
        with pytest.raises(ConfigError) as caught:
            config_module.from_mapping(mapping)
        assert caught.value.key == key
    for good in ("127.0.0.1", "::", "fe80::1%eth0", "voice-1.example.com", "localhost"):
        config_module.from_mapping({"voice.bridge": {"host": good}})


def unvalidated(**bridge: object) -> config_module.Config:
    """A Config that skipped load-time validation: what render must refuse on its own."""
    config = config_module.defaults()
    return dataclasses.replace(config, bridge=dataclasses.replace(config.bridge, **bridge))


def test_render_refuses_a_newline_in_a_host_on_its_own(tmp_path: Path) -> None:
    hostile = unvalidated(host=INJECTED)
    with pytest.raises(ConfigError, match=r"\[voice\.bridge\] host: expected an IP"):
        units.render(Layout(tmp_path), "1.0", hostile, [], [], {})
    with pytest.raises(ConfigError, match=r"\[voice\.bridge\] host"):
        units.render_haproxy(hostile, [1])
    with pytest.raises(ConfigError, match=r"\[voice\.bridge\] port"):
        units.render(Layout(tmp_path), "1.0", unvalidated(port="9998\nUser=root"), [], [], {})
    with pytest.raises(ValueError, match="not a version"):
        units.render(Layout(tmp_path), "1.0\nUser=root", config_module.defaults(), [], [], {})
    with pytest.raises(ValueError, match="not an xswarm unit name"):
        units.check_relative("../../cron.d/evil")


def test_the_dashboard_may_reach_the_remote_instances_it_watches(tmp_path: Path) -> None:
    config = config_module.from_mapping(
        {
            "dashboard": {
                "instances": [
                    "ws://127.0.0.1:10001/control",
                    "ws://10.0.0.5:10001/control",
                    "wss://[2001:db8::7]:443/control",
                    "wss://bridge-2.example.com/control",
                    "ws://10.0.0.5:10002/control",
                ]
            }
        }
    )
    resolved = units.resolve_hosts(config, lambda host: ["192.0.2.9"])
    assert resolved == {"bridge-2.example.com": ["192.0.2.9"]}
    plan = units.render(Layout(tmp_path), "1.0", config, [], [], resolved)
    service = units.parse(plan.files["xswarm-dashboard.service"])["Service"]
    assert service["IPAddressDeny"] == ["any"]
    assert service["IPAddressAllow"] == ["localhost 10.0.0.5 2001:db8::7 192.0.2.9"]
    local = units.render(Layout(tmp_path), "1.0", config_module.defaults(), [], [], {})
    allow = units.parse(local.files["xswarm-dashboard.service"])["Service"]["IPAddressAllow"]
    assert allow == ["localhost"]


def test_no_root_command_runs_with_the_services_environment(tmp_path: Path) -> None:
    plan = units.render(
        Layout(tmp_path), "1.0", config_module.defaults(), [1], list(units.PROFILES), {}
    )
    merged: dict[str, str] = {}
    for name, text in plan.files.items():
        merged.setdefault(name.split(".d/", 1)[0], "")
        merged[name.split(".d/", 1)[0]] += text
    for name, text in merged.items():
        service = units.parse(text).get("Service", {})
        if "EnvironmentFile" not in service:
            continue
        for key, values in service.items():
            if key.startswith("Exec"):
                for value in values:
                    prefix = value[: len(value) - len(value.lstrip("@-:+!"))]
                    assert "+" not in prefix and "!" not in prefix, f"{name}: {key}={value}"
    nvidia = units.parse(plan.files["xswarm-nvidia.service"])
    assert "EnvironmentFile" not in nvidia["Service"]
    assert (
        "xswarm-nvidia.service"
        in units.parse(plan.files["xswarm-voice.service.d/gpu.conf"])["Unit"]["Wants"][0]
    )


def test_the_bridge_never_holds_the_operators_token_nor_the_supervisors_state() -> None:
    for name in ("xswarm-voice.service", "xswarm-voice@.service"):
        service = units.parse(units.template(f"systemd/{name}"))["Service"]
        assert "XSWARM_SUPERVISOR_TOKEN" in service["UnsetEnvironment"][0].split()
        assert service["InaccessiblePaths"] == ["-/var/lib/xswarm-dashboard"]
    dashboard = units.parse(units.template("systemd/xswarm-dashboard.service"))["Service"]
    assert dashboard["StateDirectory"] == ["xswarm-dashboard"]
    assert "/var/lib/xswarm" not in dashboard["ReadWritePaths"][0].split()


def test_the_latency_profile_is_bounded() -> None:
    latency = units.parse(units.template("systemd/latency.conf"))["Service"]
    assert latency["CPUSchedulingPolicy"] == ["rr"]
    assert int(latency["CPUSchedulingPriority"][0]) < 50, "below the kernel's RT threads"
    assert latency["LimitRTPRIO"] == ["0"]
    assert latency["LimitRTTIME"], "a runaway real-time loop is killed, not left to spin"


def test_write_file_never_writes_through_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("root's")
    planted = tmp_path / ".env"
    planted.symlink_to(victim)
    with pytest.raises(FileExistsError):
        files.write_file(planted, "X=1\n", 0o600, replace=False)
    dangling = tmp_path / "config.toml"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        files.write_file(dangling, "x", 0o640, replace=False)
    assert not (tmp_path / "nowhere").exists()
    files.write_file(planted, "X=1\n", 0o600)
    assert victim.read_text() == "root's", "replace swaps the link itself"
    assert not planted.is_symlink() and (planted.stat().st_mode & 0o777) == 0o600
    with pytest.raises(files.UntrustedPathError, match="symbolic link"):
        files.secure_file(dangling, 0o640, None)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_check_trusted_refuses_what_others_could_change(tmp_path: Path) -> None:
    top = tmp_path / "opt"
    inner = top / "releases" / "1.0"
    inner.mkdir(parents=True)
    files.check_trusted(inner, tmp_path)
    (top / "releases").chmod(0o775)
    with pytest.raises(files.UntrustedPathError, match="writable by group or others"):
        files.check_trusted(inner, tmp_path)
    (top / "releases").chmod(0o755)
    if os.geteuid() == 0:
        os.chown(top, 65534, 65534)
        with pytest.raises(files.UntrustedPathError, match="owned by uid 65534"):
            files.check_trusted(inner, tmp_path)
        os.chown(top, 0, 0)
