"""``xswarm-dashboard`` as systemd runs it: exit codes, sd_notify, SIGHUP reloads, sockets.

systemd's side is played by real sockets: a datagram socket as ``$NOTIFY_SOCKET`` and a
listening TCP socket handed over as fd 3 with ``LISTEN_FDS``/``LISTEN_PID``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.supervisor.support import (
    operator,
    running_supervisor,
    start_supervisor,
    supervisor_config,
    twilio_call,
)
from tests.support.bridge import VENV_BIN, free_port, running_bridge
from tests.support.waiting import eventually, eventually_sync

BRIDGE_CONFIG = '[voice.bridge]\nengine = "echo"\nstatus_interval = 0.2\ndrain_timeout = 2\n'
TOKEN = "service-token-77a1"
CONTROL_TOKEN = "bridge-token-svc-5d20"
ENV = {"XSWARM_SUPERVISOR_TOKEN": TOKEN, "XSWARM_CONTROL_TOKEN": CONTROL_TOKEN}


class NotifyListener:
    """The receiving end of sd_notify: what systemd would read from ``$NOTIFY_SOCKET``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[dict[str, str]] = []

    def wait_for(
        self, match: Callable[[dict[str, str]], bool], within: float = 20
    ) -> dict[str, str]:
        deadline = time.monotonic() + within
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching notification; got {self.messages}")
            self.sock.settimeout(remaining)
            data = self.sock.recv(4096).decode()
            fields = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
            self.messages.append(fields)
            if match(fields):
                return fields

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()


def run_dashboard(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("XSWARM_", "NOTIFY_"))}
    full_env.update(env or {})
    return subprocess.run(
        [str(VENV_BIN / "xswarm-dashboard"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
    )


def test_a_bad_config_exits_78_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[dashboard]\nstale_after = "soon"\n')
    result = run_dashboard(["--config", str(config)])
    assert result.returncode == 78
    assert result.stderr.strip().splitlines()[-1] == (
        f"xswarm-dashboard: {config}: [dashboard] stale_after: expected a number, got str 'soon'"
    )
    result = run_dashboard(["--config", str(tmp_path / "missing.toml")])
    assert result.returncode == 78
    assert "does not exist" in result.stderr


def test_a_port_in_use_names_its_owner(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        config = tmp_path / "config.toml"
        config.write_text(supervisor_config(tmp_path / "state", []))
        result = run_dashboard(["--config", str(config), "--port", str(port)])
    finally:
        holder.close()
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"xswarm-dashboard: port {port} is in use by PID {os.getpid()}")
    assert "set [dashboard] port (or --port) or stop it" in last


def test_an_unusable_state_dir_or_database_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config = tmp_path / "config.toml"
    config.write_text(supervisor_config(blocker / "state", []))
    result = run_dashboard(["--config", str(config), "--port", "0"])
    assert result.returncode == 1
    assert "cannot create the state directory" in result.stderr
    state = tmp_path / "state"
    state.mkdir()
    (state / "xswarm.db").write_bytes(b"this is not a database" * 100)
    config.write_text(supervisor_config(state, []))
    result = run_dashboard(["--config", str(config), "--port", "0"])
    assert result.returncode == 1
    assert "cannot open the call history" in result.stderr
    assert "restore it from a backup" in result.stderr


async def test_sd_notify_ready_status_watchdog_reload_and_stop(
    tmp_path: Path, notify: NotifyListener
) -> None:
    env = {**ENV, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    with running_bridge(tmp_path, BRIDGE_CONFIG, env=ENV) as bridge:
        sup = start_supervisor(tmp_path, [bridge.ws_url + "/control"], env=env)
        try:
            ready = await asyncio.to_thread(notify.wait_for, lambda m: "READY" in m)
            assert ready["STATUS"] == "Supervising 1 instances, 0 active calls"
            await asyncio.to_thread(notify.wait_for, lambda m: m.get("WATCHDOG") == "1")
            await asyncio.to_thread(notify.wait_for, lambda m: m.get("WATCHDOG") == "1")
            async with operator(sup.ws_url) as op:
                await op.send({"type": "auth", "token": TOKEN})
                await op.send({"type": "subscribe"})
                async with twilio_call(bridge.ws_url) as caller:
                    await asyncio.to_thread(
                        notify.wait_for,
                        lambda m: m.get("STATUS") == "Supervising 1 instances, 1 active calls",
                    )
                    await caller.hang_up()
            await asyncio.to_thread(
                notify.wait_for,
                lambda m: m.get("STATUS") == "Supervising 1 instances, 0 active calls",
            )
            sup.proc.send_signal(signal.SIGHUP)
            reloading = await asyncio.to_thread(notify.wait_for, lambda m: "RELOADING" in m)
            assert int(reloading["MONOTONIC_USEC"]) > 0
            await asyncio.to_thread(notify.wait_for, lambda m: "READY" in m)
            sup.proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(notify.wait_for, lambda m: "STOPPING" in m)
            assert sup.proc.wait(30) == 0
        finally:
            sup.stop()


async def test_sighup_applies_the_instance_list_and_refuses_a_bad_config(tmp_path: Path) -> None:
    with (
        running_bridge(tmp_path, BRIDGE_CONFIG, env=ENV, name="a") as first,
        running_bridge(tmp_path, BRIDGE_CONFIG, env=ENV, name="b") as second,
        running_supervisor(tmp_path, [first.ws_url + "/control"], env=ENV) as sup,
    ):
        assert sup.reload_state() == {
            "generation": 0,
            "ok": True,
            "message": "started",
            "pid": sup.proc.pid,
        }
        url_a, url_b = first.ws_url + "/control", second.ws_url + "/control#voice-b"
        async with operator(sup.ws_url) as op:
            await op.send({"type": "auth", "token": TOKEN})
            await op.send({"type": "subscribe"})
            await op.wait_for(lambda m: m["type"] == "snapshot")

            sup.config_path.write_text(supervisor_config(sup.state_dir, [url_a, url_b]))
            sup.proc.send_signal(signal.SIGHUP)
            up = await op.wait_for(
                lambda m: (
                    m["type"] == "instance_state"
                    and m["state"] == "up"
                    and m["instance"] == "voice-b"
                )
            )
            assert up["info"]["url"] == url_b
            state = sup.reload_state()
            assert state is not None and state["generation"] == 1 and state["ok"] is True
            assert "now supervising voice-b" in state["message"]

            sup.config_path.write_text(
                supervisor_config(sup.state_dir, [url_b], extra="port = 1\n")
            )
            sup.proc.send_signal(signal.SIGHUP)
            removed = await op.wait_for(lambda m: m["type"] == "instance_removed")
            assert removed["instance"] == url_a.split("/")[2]
            state = sup.reload_state()
            assert state is not None and state["generation"] == 2 and state["ok"] is True
            assert "needs a restart to take effect: [dashboard] port" in state["message"]

            sup.config_path.write_text("[dashboard]\ninstances = ['http://not-a-ws-url']\n")
            sup.proc.send_signal(signal.SIGHUP)
            state = await eventually(
                sup.reload_state, lambda s: (s or {}).get("generation") == 3, detail=sup.log
            )
            assert state is not None and state["ok"] is False
            assert "reload refused, keeping the previous config" in state["message"]
            assert "[dashboard] instances: expected ws:// or wss:// URLs" in state["message"]
            await op.send({"type": "ping"})
            await op.wait_for(lambda m: m["type"] == "pong")
        status, instances = sup.get("/api/instances", token=TOKEN)
        assert [i["name"] for i in instances] == ["voice-b"]
        assert "reload refused" in sup.log()


def test_socket_activation_serves_on_the_inherited_socket(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    config = tmp_path / "config.toml"
    # The configured port is taken by nobody and must not be used: fd 3 is.
    unused = free_port()
    config.write_text(supervisor_config(tmp_path / "state", [], extra=f"port = {unused}\n"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XSWARM_", "LISTEN_"))}
    env["LISTEN_FDS"] = "1"
    high = os.dup(listener.fileno())

    def as_fd_3() -> None:
        os.dup2(high, 3)

    proc = subprocess.Popen(
        [
            "/bin/sh",
            "-c",
            'LISTEN_PID=$$ exec "$0" "$@"',
            str(VENV_BIN / "xswarm-dashboard"),
            "--config",
            str(config),
        ],
        env=env,
        pass_fds=(3,),
        preexec_fn=as_fd_3,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    os.close(high)
    listener.close()
    try:

        def healthz() -> object:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    return json.loads(r.read())
            except OSError:
                assert proc.poll() is None, "xswarm-dashboard exited before serving"
                return None

        assert eventually_sync(healthz, within=30) == {"status": "ok"}
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", unused), timeout=2).close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "serving the operator API on fd 3" in err.decode()


def test_xswarm_reloadctl_waits_for_the_supervisors_verdict(tmp_path: Path) -> None:
    nowhere = f"ws://127.0.0.1:{free_port()}/control"
    with running_supervisor(tmp_path, [nowhere]) as sup:
        env = {**os.environ, "XSWARM_RUNTIME_DIR": str(sup.runtime_dir)}

        def reloadctl() -> subprocess.CompletedProcess:
            return subprocess.run(
                [str(VENV_BIN / "xswarm"), "reloadctl", str(sup.proc.pid), "--timeout", "30"],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
            )

        done = reloadctl()
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"reloaded: reloaded {sup.config_path}")
        sup.config_path.write_text("[dashboard]\nstale_after = -1\n")
        refused = reloadctl()
        assert refused.returncode == 1
        assert "reload refused" in refused.stderr and "stale_after" in refused.stderr
        assert sup.get("/healthz") == (200, {"status": "ok"})
