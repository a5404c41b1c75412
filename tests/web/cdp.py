"""A small Chrome DevTools Protocol client over aiohttp, and Debian's chromium to drive.

Playwright would download its own browser, which this project cannot do; CDP over one
WebSocket is all the browser test needs: evaluate, click, screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM_NAMES = ("chromium", "chromium-browser")
DEVTOOLS_LINE = re.compile(rb"DevTools listening on (ws://\S+)")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class CdpError(Exception):
    pass


class Page:
    """One page target: send a command, wait for its answer."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            future = self._waiting.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"]["args"]
                self.console.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in args)
                )
            elif data.get("method") == "Runtime.exceptionThrown":
                self.console.append(json.dumps(data["params"]["exceptionDetails"])[:2000])

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[number] = future
        await self.ws.send_str(json.dumps({"id": number, "method": method, "params": params}))
        answer = await asyncio.wait_for(future, 30)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer["result"]
        return result

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` (promises awaited); a page exception raises."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise CdpError(json.dumps(result["exceptionDetails"])[:2000])
        return result["result"].get("value")

    async def click(self, selector: str) -> None:
        """A real mouse click (a user gesture) in the middle of the element."""
        box = await self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
            )

    async def screenshot(self) -> bytes:
        """The page as PNG bytes."""
        shot = await self.send("Page.captureScreenshot", format="png")
        return base64.b64decode(shot["data"])

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()


@contextlib.asynccontextmanager
async def chromium_page(
    executable: str, profile: Path, url: str, extra_args: Sequence[str] = ()
) -> AsyncIterator[Page]:
    """Headless chromium on ``url``; yields its page; kills the browser on exit."""
    browser, endpoint = await asyncio.to_thread(
        launch_chromium, executable, profile, url, extra_args
    )
    try:
        async with aiohttp.ClientSession() as http:
            targets = await (await http.get(f"http://{endpoint}/json/list")).json()
            target = next(t for t in targets if t["type"] == "page")
            ws = await http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=64 << 20)
            page = Page(ws)
            try:
                await page.send("Runtime.enable")
                await page.send("Page.enable")
                yield page
            finally:
                await page.close()
    finally:
        browser.kill()
        await asyncio.to_thread(browser.wait, 10)


def launch_chromium(
    executable: str, profile: Path, url: str, extra_args: Sequence[str]
) -> tuple[subprocess.Popen[bytes], str]:
    """Start headless chromium; returns it and its DevTools host:port once it listens."""
    args = [
        executable,
        "--headless=new",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-gpu",
        "--window-size=900,700",
        *extra_args,
        url,
    ]
    if os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # chromium refuses to run as root with its sandbox
    profile.mkdir(parents=True, exist_ok=True)
    log = profile / "chromium.log"
    with log.open("wb") as stderr:
        browser = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and browser.poll() is None:
        found = DEVTOOLS_LINE.search(log.read_bytes())
        if found:
            return browser, found.group(1).decode().split("/")[2]
        time.sleep(0.1)
    browser.kill()
    browser.wait(10)
    raise RuntimeError(f"chromium did not start its DevTools endpoint:\n{log.read_text()}")
