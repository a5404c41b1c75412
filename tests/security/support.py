"""What every attack test checks afterwards: a genuine call or operator still gets through."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import aiohttp

from tests.support.bridge import VENV_BIN, BridgeProcess
from tests.support.calls import TwilioCaller, tone


async def genuine_call(bridge: BridgeProcess, headers: dict[str, str] | None = None) -> None:
    """A normal Twilio call on the same bridge: connects, is echoed, hangs up cleanly."""
    async with aiohttp.ClientSession() as session:
        caller = TwilioCaller(session, bridge.ws_url, headers=headers)
        await caller.connect()
        sent = await caller.send_audio(tone(0.3))
        # The genuine call gets its audio back, every frame of it.
        await caller.hears_back(sent)
        await caller.stop()
        await caller.close()


def raw_http(port: int, request: bytes) -> bytes:
    """Send raw bytes (headers no client library would send) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def run_service(
    name: str, args: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run ``xswarm-voice`` / ``xswarm-dashboard`` expecting it to refuse to start."""
    return subprocess.run(
        [str(VENV_BIN / name), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def rss_kib(pid: int) -> int:
    """The process's resident memory (VmRSS), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class LiveCall:
    """A genuine Twilio call talking in real time for a whole attack, noting each echo's time.

    ``longest_silence()`` is the longest stretch, from the first echo to the end, in which no
    audio came back: a call the attack disturbed shows it as a gap.
    """

    def __init__(self, session: aiohttp.ClientSession, bridge: BridgeProcess) -> None:
        self.caller = TwilioCaller(session, bridge.ws_url)
        self._talk: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self.echo_times: list[float] = []

    async def __aenter__(self) -> LiveCall:
        await self.caller.connect()
        self._talk = asyncio.create_task(self._talking())
        self._watch = asyncio.create_task(self._watching())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not self.echo_times:
            assert loop.time() < deadline, "the genuine call got no audio back"
            await asyncio.sleep(0.05)
        return self

    async def _talking(self) -> None:
        while True:
            await self.caller.send_audio(tone(0.2))

    async def _watching(self) -> None:
        seen = 0
        loop = asyncio.get_running_loop()
        while True:
            count = len(self.caller.media())
            if count > seen:
                seen = count
                self.echo_times.append(loop.time())
            await asyncio.sleep(0.02)

    def longest_silence(self) -> float:
        end = asyncio.get_running_loop().time()
        times = [*self.echo_times, end]
        return max(b - a for a, b in zip(times, times[1:], strict=False))

    async def __aexit__(self, *exc: object) -> None:
        for task in (self._talk, self._watch):
            if task is not None:
                task.cancel()
        assert self.caller.close_code is None, (
            f"the genuine call was closed: {self.caller.close_code}"
        )
        await self.caller.stop()
        await self.caller.close()
