"""Draining an instance in a real HAProxy through its admin socket, as upgrade/rollback do."""

from __future__ import annotations

import errno
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support import haproxy as staged_haproxy
from tests.support.bridge import free_port
from tests.support.waiting import eventually_sync
from xswarm import config as config_module
from xswarm.ops import haproxy, rolling, units
from xswarm.ops.layout import Layout

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")


def admin_states(layout: Layout) -> dict[str, int]:
    text = haproxy.send(haproxy.admin_socket(layout), f"show servers state {haproxy.BACKEND}\n")
    rows = [line.split() for line in text.splitlines()[1:] if line and not line.startswith("#")]
    return {row[3]: int(row[6]) for row in rows}


def test_drain_and_ready_reach_the_right_server(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    config = config_module.from_mapping({"voice.bridge": {"port": free_port()}})
    text = staged_haproxy.for_test(units.render_haproxy(config, [1, 2]), layout)
    (tmp_path / "haproxy.cfg").write_text(text)
    proc = subprocess.Popen(
        ["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        eventually_sync(lambda: staged_haproxy.answers(haproxy.admin_socket(layout)), within=10)
        assert admin_states(layout) == {"voice1": 0, "voice2": 0}
        assert haproxy.set_state(layout, "xswarm-voice@2.service", "drain") is None
        assert admin_states(layout) == {"voice1": 0, "voice2": 8}
        assert haproxy.set_state(layout, "xswarm-voice@2.service", "ready") is None
        assert admin_states(layout) == {"voice1": 0, "voice2": 0}
        assert haproxy.set_state(layout, "xswarm-voice@7.service", "drain") == "No such server."
        said: list[str] = []
        assert not rolling._set_in_haproxy(layout, "xswarm-voice@7.service", "drain", said.append)
        assert said == [
            "  HAProxy did not set xswarm-voice@7.service to drain: No such server; "
            "the restart goes on"
        ]
        assert haproxy.set_state(layout, "xswarm-voice.service", "drain") is None
    finally:
        proc.terminate()
        proc.wait(10)


def test_names_and_commands() -> None:
    assert haproxy.server_for("xswarm-voice@12.service") == "voice12"
    assert haproxy.server_for("xswarm-dashboard.service") is None
    assert haproxy.state_command("voice1", "drain") == (
        "set server xswarm_voice_instances/voice1 state drain\n"
    )
    with pytest.raises(ValueError):
        haproxy.state_command("voice1", "off; shutdown")


def test_no_socket_means_nothing_to_do(tmp_path: Path) -> None:
    assert haproxy.set_state(Layout(tmp_path), "xswarm-voice@1.service", "drain") is None


def test_each_way_the_admin_socket_fails_names_its_cause_and_fix(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    path = haproxy.admin_socket(layout)
    path.parent.mkdir(parents=True)
    with pytest.raises(haproxy.HaproxyError) as missing:
        haproxy.ask(path, "show info\n")
    assert str(missing.value).startswith(f"no HAProxy admin socket at {path}: HAProxy is not")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))  # bound and not listening: what a killed HAProxy leaves behind
        with pytest.raises(haproxy.HaproxyError) as refused:
            haproxy.ask(path, "show info\n")
        restarting = haproxy.set_state(layout, "xswarm-voice@1.service", "drain")
        said: list[str] = []
        rolling._back_in_rotation(layout, "xswarm-voice@1.service", said.append)
    assert (
        str(refused.value)
        == restarting
        == (
            f"HAProxy admin socket {path}: connection refused, so HAProxy is not running; see "
            "`systemctl status haproxy` and `journalctl -u haproxy`"
        )
    )
    # A rolling restart tells the operator, and goes on.
    assert said == [f"  HAProxy did not set xswarm-voice@1.service to ready: {restarting}; "
                    "the restart goes on"]  # fmt: skip
    denied = haproxy.unreachable(path, PermissionError(errno.EACCES, "Permission denied"))
    assert denied == f"HAProxy admin socket {path}: permission denied; run as root"
    other = haproxy.unreachable(path, OSError(errno.EMFILE, "Too many open files"))
    assert other == f"HAProxy admin socket {path}: Too many open files"
