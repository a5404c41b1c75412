"""Backup, then upgrade, then a broken upgrade that rolls itself back, with calls throughout.

A caller places one-second calls back to back on port 9998 for the whole scenario; every one
of them must be served, across two rolling restarts and an automatic rollback.
"""

from __future__ import annotations

import re

import pytest

from tests.systemd.conftest import (
    WH,
    XSWARM,
    add_release,
    bootstrap_install,
    call_result,
    configure,
    readyz,
    start_call,
)
from tests.systemd.nspawn import Container

pytestmark = pytest.mark.systemd
VOICE = "xswarm-voice.service"


def running_release(box: Container, unit: str) -> str:
    pid = box.show(unit, "MainPID")
    cmdline = box.read(f"/proc/{pid}/cmdline").replace("\0", " ")
    match = re.search(r"/opt/xswarm/releases/([^/]+)/", cmdline)
    assert match, cmdline
    return match.group(1)


@pytest.fixture(scope="module")
def server(container: Container, wheelhouses: object) -> Container:
    bootstrap_install(container)
    configure(container)
    container.sh("systemctl enable --now xswarm-voice xswarm-dashboard")
    assert readyz(container, 9998)[0] == 200
    return container


def test_upgrade_then_broken_upgrade_rolls_back_while_calls_go_on(
    server: Container, wheelhouses: object
) -> None:
    add_release(wheelhouses, "0.1.1")  # type: ignore[arg-type]
    add_release(wheelhouses, "0.1.2", broken=True)  # type: ignore[arg-type]
    backup = server.run([XSWARM, "backup"]).stdout
    assert "release 0.1.0" in backup

    calls = start_call(server, "caller-loop", 9998, seconds=75, mode="loop", call_seconds=1.0)

    good = server.run([XSWARM, "upgrade", "--wheelhouse", f"{WH}/0.1.1"], check=False)
    print(good.stdout, good.stderr)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "upgraded 0.1.0 -> 0.1.1" in good.stdout
    assert server.sh("readlink /opt/xswarm/current").stdout.strip() == "releases/0.1.1"
    assert running_release(server, VOICE) == "0.1.1"
    assert running_release(server, "xswarm-dashboard.service") == "0.1.1"
    assert "/opt/xswarm/releases/0.1.1/venv/bin/xswarm-voice" in server.read(
        "/etc/systemd/system/xswarm-voice.service"
    )

    broken = server.run([XSWARM, "upgrade", "--wheelhouse", f"{WH}/0.1.2"], check=False)
    print(broken.stdout, broken.stderr)
    assert broken.returncode == 1
    assert "ROLLING BACK to 0.1.1" in broken.stderr
    assert "rolled back to 0.1.1" in broken.stderr
    assert server.sh("readlink /opt/xswarm/current").stdout.strip() == "releases/0.1.1"
    assert running_release(server, VOICE) == "0.1.1"
    assert server.show("xswarm-dashboard.service", "ActiveState") == "active"
    assert "/opt/xswarm/releases/0.1.1/venv/bin/xswarm-voice" in server.read(
        "/etc/systemd/system/xswarm-voice.service"
    )
    journal = server.sh("journalctl -u xswarm-voice --no-pager -o cat").stdout
    assert "built broken on purpose" in journal
    assert readyz(server, 9998)[0] == 200

    outcome = call_result(server, calls, 120)
    print(f"calls during backup, upgrade and rollback: {outcome}")
    assert outcome["calls"] >= 10
    assert outcome["failed"] == 0, outcome


def test_rollback_to_the_first_release(server: Container) -> None:
    done = server.run([XSWARM, "rollback", "0.1.0"], check=False)
    print(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    assert running_release(server, VOICE) == "0.1.0"
    assert "/opt/xswarm/releases/0.1.0/venv/bin/xswarm-voice" in server.read(
        "/etc/systemd/system/xswarm-voice.service"
    )
    doctor = server.run(["/opt/xswarm/current/venv/bin/xswarm", "doctor"], check=False)
    assert doctor.returncode == 0, doctor.stdout
