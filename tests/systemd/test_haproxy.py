"""Three voice instances behind Debian's HAProxy; one is killed and calls still get through.

``xswarm install --instances 3`` writes the instance sockets and /etc/haproxy/haproxy.cfg;
HAProxy spreads calls by least connections and health-checks /readyz. While one instance is
SIGKILLed (and comes back 10 s later), a caller placing calls back to back through HAProxy
must see every call served, and calls on the other instances must go on. A drained instance
stays drained across `systemctl reload haproxy` (the drop-in saves the server states first).
"""

from __future__ import annotations

import time

import pytest

from tests.systemd.conftest import (
    PY,
    TEST_CONFIG,
    WH,
    XSWARM,
    add_release,
    bootstrap_install,
    call_result,
    configure,
    readyz,
    start_call,
    wait_until,
)
from tests.systemd.nspawn import Container

pytestmark = pytest.mark.systemd
INSTANCES = (1, 2, 3)
CONFIG = TEST_CONFIG + (
    "\n[dashboard]\ninstances = ["
    + ", ".join(f'"ws://127.0.0.1:{10000 + n}/control"' for n in INSTANCES)
    + "]\n"
)


def active_calls(box: Container, number: int) -> int:
    text = box.show(f"xswarm-voice@{number}.service", "StatusText")
    return int(text.split("(")[1].split()[0]) if text.startswith("Voice bridge running (") else -1


@pytest.fixture(scope="module")
def fleet(container: Container) -> Container:
    out = bootstrap_install(container, args="--instances 3")
    assert "wrote /etc/haproxy/haproxy.cfg" in out
    configure(container, CONFIG)
    units = " ".join(f"xswarm-voice@{n}.socket xswarm-voice@{n}" for n in INSTANCES)
    container.sh(f"systemctl enable --now {units} xswarm-dashboard.socket xswarm-dashboard")
    # haproxy.service already failed at boot (the fresh container had no haproxy.cfg).
    container.sh(
        "haproxy -c -f /etc/haproxy/haproxy.cfg && systemctl reset-failed haproxy && "
        "systemctl restart haproxy"
    )
    for number in INSTANCES:
        assert readyz(container, 10000 + number)[0] == 200
    wait_until(lambda: readyz(container, 9998)[0] == 200, 20, "HAProxy to route /readyz")
    return container


def test_instances_listen_where_config_says_and_doctor_agrees(fleet: Container) -> None:
    for number in INSTANCES:
        listen = fleet.show(f"xswarm-voice@{number}.socket", "Listen")
        assert f"127.0.0.1:{10000 + number}" in listen
    doctor = fleet.run([XSWARM, "doctor"], check=False)
    print(doctor.stdout)
    assert doctor.returncode == 0, doctor.stdout
    status = fleet.run([XSWARM, "status"]).stdout
    print(status)
    for number in INSTANCES:
        assert f"xswarm-voice@{number}.service" in status


def test_calls_spread_and_survive_a_killed_instance(fleet: Container) -> None:
    held = [start_call(fleet, f"held-{i}", 9998, seconds=30) for i in range(6)]
    for out in held:
        fleet.wait_for(out.replace(".json", ".started"), 30)
    wait_until(
        lambda: sum(active_calls(fleet, n) for n in INSTANCES) == 6,
        10,
        "the instances' status lines to count 6 calls",
    )
    spread = {n: active_calls(fleet, n) for n in INSTANCES}
    print(f"6 calls through HAProxy (leastconn): {spread}")
    assert all(count >= 1 for count in spread.values()), spread

    victim = fleet.show("xswarm-voice@2.service", "MainPID")
    fleet.run(["kill", "-9", victim])
    killed = time.monotonic()
    # New calls from the moment of the kill: those HAProxy sends to instance 2 wait in its
    # socket for the restart. (A call live on it at the kill dies with it, as held ones do;
    # started before the kill, the loop had one there or not depending on its start-up time.)
    loop = start_call(fleet, "through-haproxy", 9998, seconds=25, mode="loop")
    wait_until(
        lambda: (
            fleet.show("xswarm-voice@2.service", "MainPID") not in ("0", victim)
            and readyz(fleet, 10002)[0] == 200
        ),
        60,
        "instance 2 to come back",
    )
    print(f"instance 2 back and ready {time.monotonic() - killed:.1f} s after kill -9")
    assert fleet.show("xswarm-voice@2.service", "NRestarts") == "1"

    outcome = call_result(fleet, loop, 90)
    print(f"calls through HAProxy while instance 2 was killed: {outcome}")
    assert outcome["calls"] >= 5
    assert outcome["failed"] == 0, outcome
    results = [call_result(fleet, out, 60) for out in held]
    survivors = [r for r in results if r["ok"]]
    print(f"held calls: {len(survivors)} of 6 went on (those on instance 2 died with it)")
    assert len(survivors) >= 6 - spread[2]


def test_rolling_upgrade_behind_haproxy_serves_every_call(
    fleet: Container, wheelhouses: object
) -> None:
    add_release(wheelhouses, "0.1.1")  # type: ignore[arg-type]
    loop = start_call(fleet, "during-upgrade", 9998, seconds=30, mode="loop")
    time.sleep(1)  # calls in flight before the upgrade; loop mode writes no .started
    done = fleet.run([XSWARM, "upgrade", "--wheelhouse", f"{WH}/0.1.1"], check=False)
    print(done.stdout, done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    order = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("restarting ")]
    assert order == [
        "xswarm-voice@1.service",
        "xswarm-voice@2.service",
        "xswarm-voice@3.service",
        "xswarm-dashboard.service",
    ]
    for number in INSTANCES:
        pid = fleet.show(f"xswarm-voice@{number}.service", "MainPID")
        assert "/opt/xswarm/releases/0.1.1/" in fleet.read(f"/proc/{pid}/cmdline")
    outcome = call_result(fleet, loop, 90)
    print(f"calls through HAProxy during a rolling upgrade of 3 instances: {outcome}")
    assert outcome["calls"] >= 5
    assert outcome["failed"] == 0, outcome


ADMIN = (
    "import sys\nfrom pathlib import Path\nfrom xswarm.ops import haproxy\n"
    "print(haproxy.send(Path(haproxy.ADMIN_SOCKET), sys.argv[1] + '\\n'))"
)
STATE_FILE = "/var/lib/haproxy/xswarm-server-state"


def haproxy_admin(box: Container, line: str) -> str:
    """One command on HAProxy's admin socket, through the release's own client; "" while
    the socket does not answer (a reload moves it to the new worker)."""
    done = box.run([PY, "-c", ADMIN, line], check=False)
    return done.stdout if done.returncode == 0 else ""


def admin_state(box: Container, server: str) -> int | None:
    """srv_admin_state in `show servers state` (8: drained, 0: ready)."""
    for line in haproxy_admin(box, "show servers state xswarm_voice_instances").splitlines():
        fields = line.split()
        if len(fields) > 6 and fields[3] == server:
            return int(fields[6])
    return None


def worker(box: Container) -> str:
    for line in haproxy_admin(box, "show info").splitlines():
        if line.startswith("Pid:"):
            return line.split()[1]
    return ""


def reload_haproxy(box: Container) -> None:
    before = worker(box)
    box.run(["systemctl", "reload", "haproxy"])
    wait_until(lambda: worker(box) not in ("", before), 30, "HAProxy's new worker")


def test_a_drained_instance_stays_drained_across_a_reload(fleet: Container) -> None:
    # What a rolling upgrade does before it restarts an instance.
    haproxy_admin(fleet, "set server xswarm_voice_instances/voice2 state drain")
    try:
        assert admin_state(fleet, "voice2") == 8
        reload_haproxy(fleet)
        assert admin_state(fleet, "voice2") == 8
        journal = fleet.run(["journalctl", "-u", "haproxy", "--no-pager", "-n", "100"]).stdout
        assert f"saved HAProxy's server states to {STATE_FILE}:" in journal, journal
        assert "voice2 drain" in journal
        owner = fleet.run(["stat", "-c", "%U %a", STATE_FILE]).stdout.split()
        assert owner == ["root", "644"]
        # The new worker sends the drained instance no new call.
        held = [start_call(fleet, f"after-reload-{i}", 9998, seconds=10) for i in range(3)]
        for out in held:
            fleet.wait_for(out.replace(".json", ".started"), 30)
        wait_until(
            lambda: active_calls(fleet, 1) + active_calls(fleet, 3) == 3,
            10,
            "instances 1 and 3 to count the 3 calls",
        )
        assert active_calls(fleet, 2) == 0
        for out in held:
            assert call_result(fleet, out, 60)["ok"]
    finally:
        haproxy_admin(fleet, "set server xswarm_voice_instances/voice2 state ready")
    # Back to ready, it stays ready across the next reload.
    reload_haproxy(fleet)
    assert admin_state(fleet, "voice2") == 0
