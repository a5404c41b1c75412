"""Run the real ``xswarm-dashboard`` as a subprocess, and talk to it as an operator would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.bridge import VENV_BIN, ServiceProcess, free_port
from tests.support.waiting import eventually_sync
from xswarm.protocol import twilio


@dataclass
class SupervisorProcess(ServiceProcess):
    state_dir: Path
    runtime_dir: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def reload_state(self) -> dict[str, Any] | None:
        path = self.runtime_dir / "reload.json"
        return json.loads(path.read_text()) if path.exists() else None


def supervisor_config(state_dir: Path, instances: Sequence[str], extra: str = "") -> str:
    urls = ", ".join(json.dumps(u) for u in instances)
    text = f'[paths]\nstate_dir = "{state_dir}"\n\n[dashboard]\ninstances = [{urls}]\n'
    return text + extra


def start_supervisor(
    tmp_path: Path,
    instances: Sequence[str] = (),
    env: dict[str, str] | None = None,
    extra_toml: str = "",
    name: str = "supervisor",
    args: Sequence[str] = (),
    port: int | None = None,
) -> SupervisorProcess:
    workdir = tmp_path / name
    workdir.mkdir(parents=True, exist_ok=True)
    state_dir = workdir / "state"
    runtime_dir = workdir / "run"
    config_path = workdir / "config.toml"
    if not config_path.exists():
        config_path.write_text(supervisor_config(state_dir, instances, extra_toml))
    port = port or free_port()
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XSWARM_", "NOTIFY_SOCKET", "LISTEN_", "RUNTIME_DIRECTORY"))
    }
    full_env["XSWARM_RUNTIME_DIR"] = str(runtime_dir)
    full_env.update(env or {})
    stderr_path = workdir / "stderr.log"
    with stderr_path.open("ab") as stderr:
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "xswarm-dashboard"),
                "--config",
                str(config_path),
                "--port",
                str(port),
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            env=full_env,
            cwd=workdir,
        )
    sup = SupervisorProcess(
        proc, port, config_path, stderr_path, state_dir=state_dir, runtime_dir=runtime_dir
    )

    def serving() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"xswarm-dashboard exited with {proc.returncode}:\n{sup.log()}")
        try:
            with urllib.request.urlopen(sup.http_url + "/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    try:
        eventually_sync(
            serving, within=30, detail=lambda: f"xswarm-dashboard not serving:\n{sup.log()}"
        )
    except AssertionError:
        sup.stop(5)
        raise
    return sup


@contextlib.contextmanager
def running_supervisor(tmp_path: Path, *args: Any, **kwargs: Any) -> Iterator[SupervisorProcess]:
    sup = start_supervisor(tmp_path, *args, **kwargs)
    try:
        yield sup
    finally:
        sup.stop()


class Operator:
    """An operator's WebSocket to ``/ws``: send commands, wait for the message you expect."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))

    async def next(self, within: float = 10) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=within)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"expected a text message, got {msg.type!r} ({msg.data!r})")
        data = json.loads(msg.data)
        self.seen.append(data)
        return data

    async def wait_for(
        self, match: Callable[[dict[str, Any]], bool], within: float = 15
    ) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                data = await self.next(within)
                if match(data):
                    return data

    async def closed(self, within: float = 10) -> int | None:
        """Read until the server closes; returns the close code."""
        async with asyncio.timeout(within):
            while True:
                msg = await self.ws.receive()
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                ):
                    return self.ws.close_code


@contextlib.asynccontextmanager
async def operator(url: str, token: str | None = None, header: bool = False) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if header and token is not None else {}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, headers=headers, max_msg_size=16 << 20) as ws:
            yield Operator(ws)


class TwilioCaller:
    """A simulated Twilio Media Streams call to the real bridge: 20 ms of silence per frame."""

    def __init__(self, bridge_ws_url: str) -> None:
        self.url = bridge_ws_url + "/twilio"
        self.stream_sid = twilio.new_stream_sid()
        self.call_sid = twilio.new_call_sid()
        self.account_sid = "AC" + "0" * 32
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sequence = 2

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.url)
        await self._ws.send_str(twilio.connected_message())
        await self._ws.send_str(twilio.start_message(self.stream_sid, self.call_sid))
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._receive())]

    async def _send(self) -> None:
        assert self._ws is not None
        silence = b"\xff" * 160
        chunk = 1
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not self._ws.closed:
                self._sequence += 1
                await self._ws.send_str(
                    twilio.inbound_media_message(
                        self.stream_sid, self._sequence, chunk, chunk * 20, silence
                    )
                )
                chunk += 1
                await asyncio.sleep(0.02)  # a frame every 20 ms: real time, as Twilio sends

    async def _receive(self) -> None:
        assert self._ws is not None
        async for _ in self._ws:
            pass
        self.close_code = self._ws.close_code
        self.closed.set()

    async def hang_up(self) -> None:
        """The caller hangs up: Twilio's ``stop``, then the socket closes."""
        assert self._ws is not None
        if not self._ws.closed:
            self._sequence += 1
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._ws.send_str(
                    twilio.stop_message(
                        self.stream_sid, self._sequence, self.call_sid, self.account_sid
                    )
                )
                await asyncio.wait_for(self.closed.wait(), 5)
        await self.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()


@contextlib.asynccontextmanager
async def twilio_call(bridge_ws_url: str) -> Any:
    caller = TwilioCaller(bridge_ws_url)
    await caller.start()
    try:
        yield caller
    finally:
        await caller.close()
