"""The process under a (stand-in) systemd: sd_notify, SIGHUP reload, SIGTERM drain, exit codes.

NOTIFY_SOCKET is a real datagram socket this test owns, so what it reads is exactly what
systemd would receive. The end-to-end tests under a real systemd live in tests/systemd/.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.support.bridge import VENV_BIN, free_port, start_bridge
from tests.support.calls import ControlClient, TwilioCaller, tone
from tests.support.waiting import eventually, eventually_sync


class NotifyListener:
    def __init__(self, tmp_path: Path) -> None:
        self.path = str(tmp_path / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def wait_for(self, needle: str, timeout: float = 15) -> str:
        def found() -> str:
            return next((m for m in self.drain() if needle in m), "")

        return eventually_sync(
            found, within=timeout, detail=lambda: f"no {needle!r} in {self.messages}"
        )


@pytest.fixture
def notify(tmp_path: Path) -> NotifyListener:
    listener = NotifyListener(tmp_path)
    yield listener
    listener.sock.close()


def _env(notify: NotifyListener, tmp_path: Path, **extra: str) -> dict[str, str]:
    runtime = tmp_path / "run"
    runtime.mkdir(exist_ok=True)
    return {"NOTIFY_SOCKET": notify.path, "RUNTIME_DIRECTORY": str(runtime), **extra}


CONFIG = '[voice.bridge]\nengine = "echo"\ndrain_timeout = 20\n'


async def test_ready_status_and_watchdog(tmp_path, notify) -> None:
    bridge = start_bridge(tmp_path, CONFIG, env=_env(notify, tmp_path, WATCHDOG_USEC="400000"))
    try:
        ready = notify.wait_for("READY=1")
        assert "STATUS=Voice bridge running (0 active calls)" in ready
        notify.messages.clear()
        notify.wait_for("WATCHDOG=1")
        async with aiohttp.ClientSession() as http:
            caller = TwilioCaller(http, bridge.ws_url)
            await caller.connect()
            await asyncio.to_thread(notify.wait_for, "STATUS=Voice bridge running (1 active calls)")
            await caller.close()
    finally:
        assert bridge.stop() == 0


async def test_sighup_during_calls_drops_none_and_a_bad_config_is_refused(tmp_path, notify) -> None:
    bridge = start_bridge(tmp_path, CONFIG, env=_env(notify, tmp_path))
    reload_state = tmp_path / "run" / "reload.json"

    def reload_record() -> dict:
        return json.loads(reload_state.read_text())

    try:
        notify.wait_for("READY=1")
        async with aiohttp.ClientSession() as http, ControlClient(http, bridge.ws_url) as control:
            callers = [TwilioCaller(http, bridge.ws_url) for _ in range(3)]
            for caller in callers:
                await caller.connect()
            talking = [asyncio.create_task(c.send_audio(tone(3.0))) for c in callers]
            for caller in callers:
                await control.wait_for("call_started", stream_sid=caller.stream_sid)
            # A good reload that changes a live key and a restart-only key.
            bridge.config_path.write_text(
                bridge.config_path.read_text().replace(
                    "drain_timeout = 20", 'drain_timeout = 25\nhost = "127.0.0.2"'
                )
            )
            notify.messages.clear()
            bridge.signal(signal.SIGHUP)
            reloading = await asyncio.to_thread(notify.wait_for, "RELOADING=1")
            assert "MONOTONIC_USEC=" in reloading
            await asyncio.to_thread(notify.wait_for, "READY=1")
            state = reload_record()
            assert state["ok"] and state["generation"] == 1
            assert "applied [voice.bridge] drain_timeout" in state["message"]
            assert "needs a restart to change [voice.bridge] host" in state["message"]
            # A broken config: refused, old one kept, calls untouched.
            good = bridge.config_path.read_text()
            bridge.config_path.write_text(good + "\n[voice.bridge.bogus\n")
            bridge.signal(signal.SIGHUP)
            state = await eventually(reload_record, lambda s: s["generation"] >= 2)
            assert (
                not state["ok"] and state["generation"] == 2 and "invalid TOML" in state["message"]
            )
            bridge.config_path.write_text(
                good.replace("max_concurrent_calls", "max_concurrent_calls")
                + '\n[voice.echo]\ndelay_ms = "soon"\n'
            )
            bridge.signal(signal.SIGHUP)
            state = await eventually(reload_record, lambda s: s["generation"] >= 3)
            assert (
                not state["ok"]
                and "[voice.echo] delay_ms: expected a whole number" in state["message"]
            )
            sent = await asyncio.gather(*talking)
            # Every frame comes back: none was lost to the reloads.
            await asyncio.gather(*(c.hears_back(n) for c, n in zip(callers, sent, strict=True)))
            for caller in callers:
                await caller.stop()
            ended = await eventually(lambda: control.of_type("call_ended"), lambda e: len(e) >= 3)
            assert sorted(e["reason"] for e in ended) == ["caller_hangup"] * 3
        log = bridge.log()
        assert "<3>" in log and "reload refused, keeping the running config" in log
        metrics = bridge.get("/metrics")[1]
        assert 'xswarm_config_reloads_total{result="ok"} 1' in metrics
        assert 'xswarm_config_reloads_total{result="failed"} 2' in metrics
    finally:
        assert bridge.stop() == 0


async def test_sigterm_drains_live_calls_and_refuses_new_ones(tmp_path, notify) -> None:
    bridge = start_bridge(tmp_path, CONFIG, env=_env(notify, tmp_path))
    notify.wait_for("READY=1")
    async with aiohttp.ClientSession() as http, ControlClient(http, bridge.ws_url) as control:
        caller = TwilioCaller(http, bridge.ws_url)
        await caller.connect()
        talking = asyncio.create_task(caller.send_audio(tone(2.0)))
        await control.wait_for("call_started")
        bridge.signal(signal.SIGTERM)
        stopping = await asyncio.to_thread(notify.wait_for, "STOPPING=1")
        assert "STATUS=Draining 1 active calls" in stopping
        assert "EXTEND_TIMEOUT_USEC=" in "".join(notify.drain())
        status, body = bridge.get("/readyz")
        assert status == 503 and body["reason"] == "draining"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(bridge.ws_url + "/twilio")
        assert refused.value.status == 503
        sent = await talking
        await caller.hears_back(sent)
        assert bridge.proc.poll() is None, "the bridge must wait for the live call"
        await caller.stop()
        ended = await control.wait_for("call_ended")
        assert ended["reason"] == "caller_hangup"
    assert await asyncio.to_thread(bridge.proc.wait, 10) == 0


async def test_drain_timeout_closes_remaining_calls_with_1001(tmp_path, notify) -> None:
    config = '[voice.bridge]\nengine = "echo"\ndrain_timeout = 1\n'
    bridge = start_bridge(tmp_path, config, env=_env(notify, tmp_path))
    async with aiohttp.ClientSession() as http, ControlClient(http, bridge.ws_url) as control:
        caller = TwilioCaller(http, bridge.ws_url)
        await caller.connect()
        await control.wait_for("call_started")
        bridge.signal(signal.SIGTERM)
        ended = await control.wait_for("call_ended", timeout=10)
        assert ended["reason"] == "drain_timeout"
        assert await caller.wait_closed() == 1001
    assert await asyncio.to_thread(bridge.proc.wait, 10) == 0


def _run_voice(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("XSWARM_")}
    return subprocess.run(
        [str(VENV_BIN / "xswarm-voice"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (
            "[voice.bridge]\nport = 99999\n",
            "[voice.bridge] port: expected a whole number from 1 to 65535, got 99999",
        ),
        ("[voice.bridge]\nprot = 1\n", "[voice.bridge] prot: unknown key; expected one of"),
        ("[voice.bridge\n", "invalid TOML"),
        (
            '[voice.bridge]\nengine = "gpt"\n',
            "[voice.bridge] engine: expected one of auto, echo, moshi, got 'gpt'",
        ),
        ("[voice.bridge]\nport = 9999\n", "9999 is also [dashboard] port"),
    ],
)
def test_config_errors_exit_78_with_one_line_naming_file_and_key(tmp_path, config, words) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(config)
    result = _run_voice("--config", str(path))
    assert result.returncode == 78
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and words in lines[0]
    assert lines[0].startswith("<3>")


def test_missing_config_file_exits_78(tmp_path) -> None:
    result = _run_voice("--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 78 and "does not exist" in result.stderr


def test_instance_listens_on_base_plus_n_and_never_on_the_supervisor_port(tmp_path) -> None:
    base = free_port() - 3
    config = tmp_path / "c.toml"
    config.write_text(
        f'[voice.bridge]\nengine = "echo"\ninstance_port_base = {base}\n[paths]\nstate_dir = "{tmp_path}"\n'
    )
    proc = subprocess.Popen(
        [str(VENV_BIN / "xswarm-voice"), "--config", str(config), "--instance", "3"],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", base + 3), timeout=0.5).close()
        except OSError:
            return False
        return True

    try:
        eventually_sync(
            listening, within=30, detail=lambda: "instance 3 is not listening on base + 3"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    config.write_text("[voice.bridge]\ninstance_port_base = 9990\n")
    result = _run_voice("--config", str(config), "--instance", "9")
    assert result.returncode == 78
    assert "instance 9 would listen on 9999, the supervisor's port" in result.stderr


def test_port_in_use_names_the_process_holding_it(tmp_path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        config = tmp_path / "c.toml"
        config.write_text(
            f'[voice.bridge]\nengine = "echo"\nport = {port}\n[paths]\nstate_dir = "{tmp_path}"\n'
        )
        result = _run_voice("--config", str(config))
    finally:
        holder.close()
    assert result.returncode == 1
    assert f"port {port} is in use by PID {os.getpid()}" in result.stderr
    assert "set [voice.bridge] port" in result.stderr
