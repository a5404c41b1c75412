"""The service runtime in-process: signal intents, the main loop, reload records, the drain.

The handlers are called directly (``Runtime.on_signal``), as the event loop would call them;
the subprocess tests in tests/bridge and tests/supervisor send real signals.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from aiohttp import web

from tests.support.waiting import eventually
from xswarm.errors import StartupError
from xswarm.runtime.daemon import ReloadOutcome, Runtime
from xswarm.runtime.listen import Address, Endpoint, bind_error
from xswarm.sdnotify import Notifier

ENDPOINT = Endpoint("127.0.0.1", 0, setting="[test]", flags="--port")


class RecordingNotifier(Notifier):
    """What would go to systemd, one list of lines per datagram."""

    def __init__(self) -> None:
        super().__init__("")
        self.sent: list[list[str]] = []

    def send(self, *lines: str) -> bool:
        self.sent.append(list(lines))
        return True

    def firsts(self) -> list[str]:
        return [lines[0] for lines in self.sent]


class FakeDaemon:
    def __init__(self, drain_timeout: float = 0.0) -> None:
        self.drain_timeout = drain_timeout
        self.idle = asyncio.Event()
        self.calls: list[str] = []
        self.reload_outcomes = [ReloadOutcome(True, "reloaded")]
        self.status = "running"
        self.addresses: Sequence[Address] = ()
        self.status_changed: Callable[[], None] = lambda: None
        self.on_start: Callable[[], None] = lambda: None

    def app(self) -> web.Application:
        async def healthz(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        return app

    async def start(self, addresses: Sequence[Address], status_changed: Callable[[], None]) -> None:
        self.calls.append("start")
        self.addresses = addresses
        self.status_changed = status_changed
        self.on_start()

    def status_line(self) -> str:
        return self.status

    async def reload(self) -> ReloadOutcome:
        self.calls.append("reload")
        outcome = self.reload_outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def begin_drain(self) -> float:
        self.calls.append("begin_drain")
        self.status = "draining"
        return self.drain_timeout

    async def wait_idle(self) -> None:
        await self.idle.wait()

    async def end_drain(self) -> None:
        self.calls.append("end_drain")

    async def close(self) -> None:
        self.calls.append("close")


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.setenv("XSWARM_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


def make(daemon: FakeDaemon) -> tuple[Runtime, RecordingNotifier]:
    notifier = RecordingNotifier()
    return Runtime(daemon, ENDPOINT, notifier=notifier), notifier


async def test_handlers_only_record_intents_and_the_main_loop_acts_in_order(
    runtime_dir: Path,
) -> None:
    daemon = FakeDaemon()
    daemon.reload_outcomes = [ReloadOutcome(True, "first"), ReloadOutcome(False, "bad file")]
    runtime, notifier = make(daemon)
    runtime.on_signal(signal.SIGHUP)
    runtime.on_signal(signal.SIGHUP)
    runtime.on_signal(signal.SIGTERM)
    runtime.on_signal(signal.SIGHUP)
    assert daemon.calls == [] and notifier.sent == []
    await asyncio.wait_for(runtime.dispatch(), 5)
    assert daemon.calls == ["reload", "reload"]
    assert notifier.firsts() == ["RELOADING=1", "READY=1", "RELOADING=1", "READY=1"]
    assert notifier.sent[0][1].startswith("MONOTONIC_USEC=")
    assert notifier.sent[1] == ["READY=1", "STATUS=running"]
    record = json.loads((runtime_dir / "reload.json").read_text())
    assert record == {"generation": 2, "ok": False, "message": "bad file", "pid": os.getpid()}


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
async def test_sigterm_and_sigint_both_stop(stop: signal.Signals) -> None:
    runtime, _ = make(FakeDaemon())
    runtime.on_signal(stop)
    await asyncio.wait_for(runtime.dispatch(), 5)


async def test_a_reload_that_crashes_is_recorded_as_failed_and_the_service_goes_on(
    runtime_dir: Path,
) -> None:
    daemon = FakeDaemon()
    daemon.reload_outcomes = [RuntimeError("bug")]  # type: ignore[list-item]
    runtime, notifier = make(daemon)
    outcome = await runtime.reload()
    assert not outcome.ok and "bug" in outcome.message
    assert notifier.firsts() == ["RELOADING=1", "READY=1"]
    assert json.loads((runtime_dir / "reload.json").read_text())["ok"] is False


async def test_status_is_sent_only_when_it_changes() -> None:
    daemon = FakeDaemon()
    runtime, notifier = make(daemon)
    runtime.status_changed()
    runtime.status_changed()
    daemon.status = "busier"
    runtime.status_changed()
    assert notifier.sent == [["STATUS=running"], ["STATUS=busier"]]


async def test_drain_ends_as_soon_as_the_daemon_is_idle() -> None:
    daemon = FakeDaemon(drain_timeout=30)
    runtime, notifier = make(daemon)
    drain = asyncio.create_task(runtime.drain())
    # Proving a negative: the drain is given a bounded chance to end before the daemon is idle.
    ended_early, _ = await asyncio.wait({drain}, timeout=0.05)
    assert not ended_early and "end_drain" not in daemon.calls
    assert notifier.sent == [["STOPPING=1", "STATUS=draining"], ["EXTEND_TIMEOUT_USEC=45000000"]]
    daemon.idle.set()
    await asyncio.wait_for(drain, 1)
    assert daemon.calls == ["begin_drain", "end_drain"]


async def test_drain_gives_up_at_the_drain_timeout() -> None:
    daemon = FakeDaemon(drain_timeout=0.1)
    runtime, _ = make(daemon)
    await asyncio.wait_for(runtime.drain(), 5)
    assert daemon.calls == ["begin_drain", "end_drain"]


async def test_a_second_stop_signal_cuts_the_drain_short_and_a_reload_is_ignored() -> None:
    daemon = FakeDaemon(drain_timeout=60)
    runtime, notifier = make(daemon)
    drain = asyncio.create_task(runtime.drain())
    await eventually(lambda: "begin_drain" in daemon.calls)
    runtime.on_signal(signal.SIGHUP)
    # Proving a negative: the reload is given a bounded chance to end the drain.
    ended_early, _ = await asyncio.wait({drain}, timeout=0.05)
    assert not ended_early
    runtime.on_signal(signal.SIGTERM)
    await asyncio.wait_for(drain, 1)
    assert daemon.calls == ["begin_drain", "end_drain"]
    assert "RELOADING=1" not in notifier.firsts()


async def test_nothing_to_drain_asks_systemd_for_no_extra_time() -> None:
    daemon = FakeDaemon(drain_timeout=0)
    runtime, notifier = make(daemon)
    await asyncio.wait_for(runtime.drain(), 1)
    assert notifier.sent == [["STOPPING=1", "STATUS=draining"]]


async def test_serve_listens_reports_ready_and_stops_on_sigterm(runtime_dir: Path) -> None:
    daemon = FakeDaemon()
    runtime, notifier = make(daemon)
    seen: dict[str, object] = {}

    def on_start() -> None:
        port = daemon.addresses[0].port
        url = f"http://127.0.0.1:{port}/healthz"

        async def probe_then_stop() -> None:
            seen["health"] = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read())
            runtime.on_signal(signal.SIGTERM)

        seen["task"] = asyncio.get_running_loop().create_task(probe_then_stop())

    daemon.on_start = on_start
    assert await asyncio.wait_for(runtime.serve(), 10) == 0
    assert json.loads(seen["health"]) == {"status": "ok"}  # type: ignore[arg-type]
    assert daemon.addresses[0].host == "127.0.0.1" and daemon.addresses[0].fd is None
    assert daemon.calls == ["start", "begin_drain", "end_drain", "close"]
    assert notifier.firsts() == ["READY=1", "STOPPING=1"]
    assert json.loads((runtime_dir / "reload.json").read_text())["message"] == "started"


async def test_a_port_in_use_names_its_owner_and_nothing_is_started() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        daemon = FakeDaemon()
        notifier = RecordingNotifier()
        endpoint = Endpoint("127.0.0.1", port, setting="[dashboard]", flags="--port")
        runtime = Runtime(daemon, endpoint, notifier=notifier)
        with pytest.raises(StartupError) as refused:
            await runtime.serve()
    assert str(refused.value).startswith(f"port {port} is in use by PID {os.getpid()} (")
    assert str(refused.value).endswith("; set [dashboard] port (or --port) or stop it")
    assert daemon.calls == [] and notifier.sent == []


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.EACCES, "no permission to listen on 10.9.8.7:80; use a port above 1023"),
        (errno.EADDRNOTAVAIL, "10.9.8.7 is not an address of this machine; fix [test] host"),
        (errno.ENOBUFS, "cannot listen on 10.9.8.7:80: no room; set [test] host and port"),
    ],
)
def test_bind_errors_name_the_cause_and_the_fix(code: int, words: str) -> None:
    endpoint = Endpoint("10.9.8.7", 80, setting="[test]", flags="--port")
    assert str(bind_error(OSError(code, "no room"), endpoint)) == words


def test_addresses_read_as_urls_and_say_when_systemd_passed_them() -> None:
    assert str(Address("127.0.0.1", 9998)) == "127.0.0.1:9998"
    assert str(Address("::1", 9998, fd=3)) == "fd 3 ([::1]:9998)"


async def test_a_stop_signal_during_start_up_waits_for_ready_then_stops() -> None:
    daemon = FakeDaemon()
    runtime, notifier = make(daemon)
    daemon.on_start = lambda: runtime.on_signal(signal.SIGTERM)
    assert await asyncio.wait_for(runtime.serve(), 10) == 0
    assert notifier.firsts() == ["READY=1", "STOPPING=1"]
    assert daemon.calls == ["start", "begin_drain", "end_drain", "close"]
