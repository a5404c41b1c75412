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
        await caller.send_audio(tone(0.3))
        await asyncio.sleep(0.2)
        assert caller.media(), "the genuine call got no audio back"
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
