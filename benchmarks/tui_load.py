"""What the monitoring TUI costs with many live calls; prints figures, asserts nothing.

    .venv/bin/python benchmarks/tui_load.py --calls 200 --seconds 30 [--sort latency_p99_ms]

Everything is real: an ``xswarm-voice`` (echo engine) with N live Twilio calls (idle after
``start``; the bridge still sends one ``call_stats`` per call per second), an
``xswarm-dashboard`` supervising it, and ``xswarm dashboard``'s app running headless at
160x48 in its own process (so its CPU is its own), connected to the supervisor with a token.
After a warm-up it measures, over ``--seconds``, the CPU (percent of one core) and RSS of the
TUI process and of the supervisor, and the TUI reports how many supervisor messages it took
in and how many rows its table showed. Every process it starts is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.supervisor.support import start_supervisor  # noqa: E402
from tests.support.bridge import start_bridge  # noqa: E402
from tests.support.calls import idle_call  # noqa: E402

# Every call comes from loopback and holds still: lift the per-source and inactivity limits.
BRIDGE = (
    '[voice.bridge]\nengine = "echo"\nmax_concurrent_calls = 1000\nmax_calls_per_source = 1000\n'
    "inactivity_timeout = 86400\ndrain_timeout = 1\n"
)
TOKEN = "tui-bench-token"


def run_child(url: str, lifetime: float, sort: str, result: str, headless: bool) -> None:
    """The TUI process: the real app, counting what it took in; JSON to ``result`` on exit."""
    from xswarm.tui.app import XswarmDashboard
    from xswarm.tui.messages import SupervisorMessage
    from xswarm.tui.widgets.calls import CallsTable

    counts: dict[str, Any] = {"messages": 0, "max_rows": 0}

    class CountingDashboard(XswarmDashboard):
        def on_supervisor_message(self, message: SupervisorMessage) -> None:
            counts["messages"] += 1
            super().on_supervisor_message(message)

        def repaint(self) -> None:
            super().repaint()
            rows = self.screen.query(CallsTable)
            if rows:
                counts["max_rows"] = max(counts["max_rows"], rows.first().row_count)

    app = CountingDashboard(url=url, token=TOKEN)
    if sort:
        app.model.set_sort(sort)
    app.call_later(lambda: app.set_timer(lifetime, app.exit))
    if headless:
        app.run(headless=True, size=(160, 48))
    else:
        app.run()
    counts["connection"] = app.model.connection
    counts["calls_in_model"] = len(app.model.calls)
    Path(result).write_text(json.dumps(counts))


class Child:
    """The TUI in its own process, on a 160x48 pseudo-terminal whose output is read and dropped
    (so it pays for the full redraw, escape codes included), or headless."""

    def __init__(self, url: str, lifetime: float, sort: str, result: Path, headless: bool):
        command = [
            sys.executable,
            __file__,
            "--child",
            url,
            "--lifetime",
            str(lifetime),
            "--sort",
            sort,
            "--result",
            str(result),
        ]
        self.master = -1
        self.reader: threading.Thread | None = None
        self.bytes_out = 0
        if headless:
            command.append("--headless")
            terminal: int = subprocess.DEVNULL
        else:
            self.master, terminal = pty.openpty()
            fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 48, 160, 0, 0))
        self.proc = subprocess.Popen(
            command,
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "48"},
            start_new_session=True,
        )
        if not headless:
            os.close(terminal)
            self.reader = threading.Thread(target=self._drain, daemon=True)
            self.reader.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.bytes_out += len(chunk)

    def wait(self, timeout: float) -> None:
        self.proc.wait(timeout)
        if self.reader is not None:
            self.reader.join(5)
            os.close(self.master)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def load(
    tmp: Path, calls: int, seconds: float, warmup: float, sort: str, headless: bool
) -> None:
    env = {"XSWARM_SUPERVISOR_TOKEN": TOKEN}
    bridge = start_bridge(tmp, BRIDGE, env=env, name="tui-bridge")
    sup = start_supervisor(tmp, [bridge.ws_url + "/control"], env=env, name="tui-supervisor")
    stop = asyncio.Event()
    child: Child | None = None
    try:
        # No per-host cap: aiohttp would otherwise hold the calls beyond 100 back.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            callers = [
                asyncio.create_task(idle_call(session, bridge.ws_url, stop)) for _ in range(calls)
            ]
            await asyncio.sleep(2)
            lifetime = warmup + seconds + 5
            result = tmp / "tui-result.json"
            child = Child(sup.ws_url, lifetime, sort, result, headless)
            tui = psutil.Process(child.proc.pid)
            supervisor = psutil.Process(sup.proc.pid)
            await asyncio.sleep(warmup)
            before = (cpu_seconds(tui), cpu_seconds(supervisor))
            out_before = child.bytes_out
            started = time.monotonic()
            await asyncio.sleep(seconds)
            elapsed = time.monotonic() - started
            after = (cpu_seconds(tui), cpu_seconds(supervisor))
            out_rate = (child.bytes_out - out_before) / elapsed / 1024
            tui_rss = tui.memory_info().rss / 2**20
            sup_rss = supervisor.memory_info().rss / 2**20
            await asyncio.to_thread(child.wait, lifetime + 30)
            report = json.loads(result.read_text())
            tui_cpu = (after[0] - before[0]) / elapsed * 100
            sup_cpu = (after[1] - before[1]) / elapsed * 100
            print(
                f"tui_load: {calls} live calls (1 call_stats per call per second) for "
                f"{elapsed:.1f} s after {warmup:.0f} s warm-up, TUI "
                f"{'headless' if headless else 'on a 160x48 pseudo-terminal'}, "
                f"sorted by {sort or 'nothing'}"
            )
            print(
                f"  TUI process:        CPU {tui_cpu:5.1f}% of one core, RSS {tui_rss:.0f} MiB"
                + ("" if headless else f", terminal output {out_rate:.1f} KiB/s")
            )
            print(f"  supervisor process: CPU {sup_cpu:5.1f}% of one core, RSS {sup_rss:.0f} MiB")
            print(
                f"  TUI took in {report['messages']} supervisor messages over its life, "
                f"table showed up to {report['max_rows']} rows, model held "
                f"{report['calls_in_model']} calls, link {report['connection']}"
            )
            stop.set()
            await asyncio.gather(*callers, return_exceptions=True)
    finally:
        if child is not None:
            child.kill()
        sup.stop()
        bridge.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=8)
    parser.add_argument(
        "--sort",
        default="latency_p99_ms",
        help="the TUI's sort column (re-sorted after every batch); '' for none",
    )
    parser.add_argument(
        "--headless",
        action="store_true",
        help="run the TUI headless instead of on a pseudo-terminal",
    )
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--lifetime", type=float, default=60, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args.lifetime, args.sort, args.result, args.headless)
        return
    with tempfile.TemporaryDirectory(prefix="xswarm-tui-bench-") as tmp:
        asyncio.run(
            load(Path(tmp), args.calls, args.seconds, args.warmup, args.sort, args.headless)
        )


if __name__ == "__main__":
    main()
