"""The unit files: rendered per release, verified by systemd-analyze, scored for exposure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from xswarm import config as config_module
from xswarm.ops import units
from xswarm.ops.layout import Layout

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
CONFIG = config_module.from_mapping({"voice.bridge": {"host": "0.0.0.0", "port": 9000}})


def rendered_tree(tmp_path: Path, instances: list[int], profiles: list[str]) -> Path:
    """Render into a scratch root, with executable console scripts where the units expect them."""
    layout = Layout(tmp_path)
    bin_dir = layout.release_dir("1.2.3") / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("xswarm", "xswarm-voice", "xswarm-dashboard"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    plan = units.render(layout, "1.2.3", CONFIG, instances, profiles)
    for relative, text in plan.files.items():
        target = layout.unit_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return layout.unit_dir


def analyze(unit_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:"}
    return subprocess.run(
        [ANALYZE, *args], capture_output=True, text=True, env=env, cwd=unit_dir, check=False
    )


def test_render_pins_the_release_and_writes_addresses_from_config(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    plan = units.render(layout, "1.2.3", CONFIG, [1, 2], ["gpu"])
    voice = plan.files["xswarm-voice.service"]
    release = layout.release_dir("1.2.3")
    assert f"ExecStart={release}/venv/bin/xswarm-voice --config {layout.config}" in voice
    assert f"ExecReload={release}/venv/bin/xswarm reloadctl $MAINPID" in voice
    assert "/current/" not in voice
    assert units.stamped_release(voice) == "1.2.3"
    assert "ListenStream=0.0.0.0:9000" in plan.files["xswarm-voice.socket"]
    assert "ListenStream=127.0.0.1:9999" in plan.files["xswarm-dashboard.socket"]
    assert "ListenStream=0.0.0.0:10001" in plan.files["xswarm-voice@1.socket.d/listen.conf"]
    assert "ListenStream=0.0.0.0:10002" in plan.files["xswarm-voice@2.socket.d/listen.conf"]
    assert "xswarm-voice@.service.d/gpu.conf" in plan.files
    dashboard = units.parse(plan.files["xswarm-dashboard.service"])["Unit"]
    assert "xswarm-voice@1.service xswarm-voice@2.service" in dashboard["Wants"]
    assert dashboard["Requires"] == ["xswarm-dashboard.socket"]


def test_single_voice_dashboard_requires_the_voice_service(tmp_path: Path) -> None:
    plan = units.render(Layout(tmp_path), "1.0", CONFIG)
    section = units.parse(plan.files["xswarm-dashboard.service"])["Unit"]
    assert section["Requires"] == ["xswarm-voice.service xswarm-dashboard.socket"]
    assert "After" in section and "xswarm-voice.service" in section["After"][0]


def test_unknown_profile_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown profile 'turbo'"):
        units.render(Layout(tmp_path), "1.0", CONFIG, [], ["turbo"])


def test_the_seed_limits_and_lifecycle_are_set_without_inline_comments() -> None:
    voice = units.parse(units.template("systemd/xswarm-voice.service"))["Service"]
    dash = units.parse(units.template("systemd/xswarm-dashboard.service"))["Service"]
    for section, limits in (
        (voice, {"MemoryMax": "16G", "MemoryHigh": "14G", "CPUQuota": "400%", "TasksMax": "1024"}),
        (dash, {"MemoryMax": "1G", "MemoryHigh": "512M", "CPUQuota": "100%", "TasksMax": "256"}),
    ):
        for key, value in limits.items():
            assert section[key] == [value]
        for key, value in {
            "Restart": "always",
            "RestartSec": "10",
            "Type": "notify",
            "RestartPreventExitStatus": "78",
            "KillMode": "mixed",
            "TimeoutStopSec": "30s",
        }.items():
            assert section[key] == [value]
        assert "WatchdogSec" in section
    assert voice["ProcSubset"] == ["all"] and voice["MemoryDenyWriteExecute"] == ["no"]
    for name in units.UNIT_TEMPLATES + tuple(f"{p}.conf" for p in units.PROFILES):
        for line in units.template(f"systemd/{name}").splitlines():
            assert not re.search(r"^[A-Za-z]+=.*\s#", line), f"{name}: inline comment: {line}"


def test_parse_joins_continuations_and_keeps_repeats() -> None:
    parsed = units.parse(
        "[Service]\n# note\nExecStartPre=a \\\n  b\nDeviceAllow=x\nDeviceAllow=y\n"
    )
    assert parsed["Service"]["ExecStartPre"] == ["a b"]
    assert parsed["Service"]["DeviceAllow"] == ["x", "y"]


def test_stale_lists_changed_and_missing_files(tmp_path: Path) -> None:
    plan = units.render(Layout(tmp_path), "2.0", CONFIG)
    installed = dict(plan.files)
    assert units.stale(installed, plan) == []
    installed["xswarm-voice.service"] = installed["xswarm-voice.service"].replace("2.0", "1.0")
    del installed["xswarm-dashboard.socket"]
    assert units.stale(installed, plan) == ["xswarm-dashboard.socket", "xswarm-voice.service"]


def test_haproxy_config_lists_each_instance_and_checks_readyz() -> None:
    config = config_module.from_mapping({"voice.bridge.instances.2": {"port": 12002}})
    text = units.render_haproxy(config, [1, 2, 3])
    assert "bind 127.0.0.1:9998" in text
    assert "server voice1 127.0.0.1:10001 check" in text
    assert "server voice2 127.0.0.1:12002 check" in text
    assert "balance leastconn" in text and "option httpchk GET /readyz" in text
    assert "@" not in text.split("global", 1)[1]


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_rendered_config(tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(units.render_haproxy(CONFIG, [1, 2, 3]))
    done = subprocess.run(
        ["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_haproxy_keeps_server_states_across_a_reload() -> None:
    """A reload starts HAProxy from haproxy.cfg: it must load the states saved before it
    (global file, every backend) and resolve a named server afresh, not from that file."""
    text = units.render_haproxy(CONFIG, [1])
    global_section = text.split("\nglobal\n", 1)[1].split("\ndefaults\n", 1)[0]
    defaults = text.split("\ndefaults\n", 1)[1].split("\nfrontend ", 1)[0]
    assert "    server-state-file /var/lib/haproxy/xswarm-server-state\n" in global_section
    assert "    load-server-state-from-file global\n" in defaults
    default_server = next(line for line in text.splitlines() if "default-server" in line)
    assert default_server.endswith(" init-addr libc")


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_config_with_a_saved_state_file(tmp_path: Path) -> None:
    state = tmp_path / "server-state"
    state.write_text(
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
        "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
        "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
        "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr "
        "srv_agent_port\n"
        "3 xswarm_voice_instances 1 voice1 127.0.0.1 2 8 1 1 7 15 3 4 6 0 0 0 - 10001 - 0 0 - - 0\n"
    )
    path = tmp_path / "haproxy.cfg"
    text = units.render_haproxy(CONFIG, [1, 2])
    path.write_text(text.replace("/var/lib/haproxy/xswarm-server-state", str(state)))
    done = subprocess.run(
        ["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Server xswarm_voice_instances/voice1 remains in forced drain mode" in done.stderr
    assert "corrupted" not in done.stderr and "server-state" not in done.stderr


@needs_analyze
def test_systemd_analyze_verify_prints_nothing(tmp_path: Path) -> None:
    unit_dir = rendered_tree(tmp_path, [1, 3], ["gpu", "latency", "throughput"])
    done = analyze(
        unit_dir,
        "verify",
        "xswarm-voice.service",
        "xswarm-voice.socket",
        "xswarm-dashboard.service",
        "xswarm-dashboard.socket",
        "xswarm-voice@1.service",
        "xswarm-voice@3.socket",
        "xswarm-nvidia.service",
    )
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stderr


@needs_analyze
def test_verify_catches_the_reference_units_inline_comment(tmp_path: Path) -> None:
    unit_dir = rendered_tree(tmp_path, [], [])
    path = unit_dir / "xswarm-voice.service"
    path.write_text(path.read_text().replace("CPUQuota=400%", "CPUQuota=400%   # 4 CPU cores"))
    done = analyze(unit_dir, "verify", "xswarm-voice.service")
    assert "Invalid CPU quota" in done.stderr


@needs_analyze
@pytest.mark.parametrize(
    ("unit", "ceiling", "profiles"),
    [
        ("xswarm-voice.service", 1.5, []),
        ("xswarm-voice@2.service", 1.5, []),
        ("xswarm-voice.service", 1.5, ["gpu"]),
        ("xswarm-dashboard.service", 1.0, []),
    ],
)
def test_exposure_scores(tmp_path: Path, unit: str, ceiling: float, profiles: list[str]) -> None:
    unit_dir = rendered_tree(tmp_path, [2], profiles)
    done = analyze(unit_dir, "security", "--offline=true", "--no-pager", unit)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    print(f"{unit} {profiles}: {match.group(1)}")
    assert float(match.group(1)) <= ceiling


def test_haproxy_bounds_each_source_and_every_wait() -> None:
    config = config_module.from_mapping({"voice.bridge": {"max_calls_per_source": 7}})
    text = units.render_haproxy(config, [1])
    assert "tcp-request connection track-sc0 src" in text
    assert "tcp-request connection reject if { sc0_conn_cur gt 7 }" in text
    assert "http-request del-header X-Forwarded-For" in text and "option forwardfor" in text
    for timeout in ("http-request 10s", "http-keep-alive 10s", "client-fin 5s", "tunnel 2m"):
        assert f"timeout {timeout}" in text
