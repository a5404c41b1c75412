"""What ``xswarm dashboard`` costs in a real terminal with a fleet of live calls; prints figures.

    .venv/bin/python benchmarks/tui_terminal.py --calls 50,200,1000,5000 --sizes 80x24,160x45 \
        --seconds 20 [--baseline-src /tmp/base-tui/src]

The fleet is synthetic, the rest is real. Fake voice bridges (aiohttp on loopback, one per
500 calls) speak the bridge's ``/control`` protocol: ``hello``, a ``snapshot`` of their calls,
then per call one ``call_stats`` a second, a ``user_speech`` every ``1/--speech-rate`` s and
``text`` words at ``--text-rate``, calls ending and new ones starting (mean length
``--call-length`` s), and one ``instance_status`` a second per bridge. A real
``xswarm-dashboard`` supervises them, and the real ``xswarm dashboard`` runs inside tmux (a
private server, ``tmux -L``) at each size. Per point it prints the dashboard's CPU (percent of
one core, from ``/proc/PID/stat``) and RSS for every second of ``--seconds`` with nobody typing,
then the key-to-screen latency of ``--keys`` presses: the time from ``tmux send-keys`` of ``/``
(or Escape) until ``tmux capture-pane`` shows the filter box open (or closed). With
``--baseline-src`` every point also runs the dashboard from that source tree (e.g. a ``git
worktree`` of the code before a change), the same supervisor and fleet, one after the other.
Every process it starts is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.supervisor.support import SupervisorProcess, start_supervisor  # noqa: E402
from tests.support.bridge import VENV_BIN  # noqa: E402

TOKEN = "tui-terminal-bench-token"
CALLS_PER_BRIDGE = 500
TICK_S = 0.1
FILTER_PLACEHOLDER = "filter by id"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SRC = Path(__file__).resolve().parent.parent / "src"


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000Z"


@dataclass
class FakeCall:
    call_id: str
    started: float
    remote: str
    caller: str | None
    frames: int = 0

    def started_event(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "call_id": self.call_id,
            "transport": "twilio",
            "remote": self.remote,
            "stream_sid": "MZ" + self.call_id,
        }
        if self.caller is not None:
            body["caller"] = self.caller
        return body

    def stats_event(self, rng: random.Random) -> dict[str, Any]:
        self.frames += 50
        p50 = rng.uniform(8, 40)
        return {
            "call_id": self.call_id,
            "level_in_dbfs": round(rng.uniform(-60, -3), 1),
            "level_out_dbfs": round(rng.uniform(-60, -3), 1),
            "latency_p50_ms": round(p50, 1),
            "latency_p99_ms": round(p50 + rng.expovariate(1 / 30), 1),
            "duration_s": round(time.monotonic() - self.started, 1),
            "frames_in": self.frames,
            "frames_out": self.frames,
            "late_frames": int(rng.expovariate(1)) if rng.random() < 0.1 else 0,
        }


@dataclass
class Rates:
    speech: float
    text: float
    call_length: float


@dataclass
class FakeBridge:
    """One voice instance's ``/control`` endpoint with ``count`` live calls, nothing else."""

    name: str
    count: int
    rates: Rates
    port: int = 0
    calls: dict[str, FakeCall] = field(default_factory=dict)
    published: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.name)
        self.ids = itertools.count(1)
        now = time.monotonic()
        for _ in range(self.count):
            self._new_call(now - self.rng.uniform(0, self.rates.call_length))

    def _new_call(self, started: float) -> FakeCall:
        n = next(self.ids)
        caller = f"+1555{self.rng.randrange(10**7):07d}" if self.rng.random() < 0.7 else None
        call = FakeCall(f"{self.name}-{n:06d}", started, f"10.0.{n % 250}.{n % 199}", caller)
        self.calls[call.call_id] = call
        return call

    def message(self, kind: str, body: dict[str, Any]) -> str:
        self.published += 1
        return json.dumps({"type": kind, "ts": utc_now(), "instance": self.name, **body})

    def status(self) -> dict[str, Any]:
        return {
            "active_calls": len(self.calls),
            "max_concurrent_calls": CALLS_PER_BRIDGE + 50,
            "engine": "echo",
            "state": "ready",
            "cpu": round(self.rng.uniform(20, 80), 1),
            "rss": 800 * 2**20,
            "limits": {"memory_high": None, "memory_max": 2 * 2**30},
            "tick_p50_ms": 20.1,
            "tick_p99_ms": 24.0,
            "late_frames": 0,
            "version": "bench",
            "pid": os.getpid(),
        }

    def snapshot(self) -> dict[str, Any]:
        entries = []
        for call in self.calls.values():
            entry = call.started_event() | {"started_at": utc_now()}
            entries.append(entry | call.stats_event(self.rng))
        return {"calls": entries, "status": self.status()}

    def tick(self, slot: int) -> list[str]:
        """One 100 ms slice: a tenth of the calls' stats, speech, words, churn, status."""
        out = []
        calls = list(self.calls.values())
        for call in calls[slot::10]:
            out.append(self.message("call_stats", call.stats_event(self.rng)))
        for _ in range(self._draw(len(calls) * self.rates.speech * TICK_S)):
            call = calls[int(self.rng.random() * len(calls))]
            duration = self.rng.randint(300, 4000)
            out.append(
                self.message("user_speech", {"call_id": call.call_id, "duration_ms": duration})
            )
        for _ in range(self._draw(len(calls) * self.rates.text * TICK_S)):
            call = calls[int(self.rng.random() * len(calls))]
            out.append(self.message("text", {"call_id": call.call_id, "text": " hello"}))
        for _ in range(self._draw(len(calls) * TICK_S / self.rates.call_length)):
            ended = calls[int(self.rng.random() * len(calls))]
            if self.calls.pop(ended.call_id, None) is not None:
                body = {
                    "call_id": ended.call_id,
                    "duration_s": round(time.monotonic() - ended.started, 1),
                    "reason": "caller_hangup",
                    "frames_in": ended.frames,
                    "frames_out": ended.frames,
                    "late_frames": 0,
                }
                out.append(self.message("call_ended", body))
                out.append(
                    self.message("call_started", self._new_call(time.monotonic()).started_event())
                )
        if slot == 0:
            out.append(self.message("instance_status", self.status()))
        return out

    def _draw(self, expected: float) -> int:
        whole = int(expected)
        return whole + (1 if self.rng.random() < expected - whole else 0)

    async def control(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20, compress=False)
        await ws.prepare(request)
        hello = {"version": "bench", "pid": os.getpid(), "engine": "echo"}
        await ws.send_str(self.message("hello", hello | {"max_concurrent_calls": 550}))
        await ws.send_str(self.message("snapshot", self.snapshot()))
        sender = asyncio.create_task(self._stream(ws))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                command = json.loads(msg.data)
                if command.get("type") == "ping":
                    await ws.send_str(self.message("pong", {"id": command.get("id")}))
                elif command.get("type") == "snapshot":
                    await ws.send_str(self.message("snapshot", self.snapshot()))
        finally:
            sender.cancel()
        return ws

    async def _stream(self, ws: web.WebSocketResponse) -> None:
        next_at = time.monotonic()
        for slot in itertools.cycle(range(10)):
            next_at += TICK_S
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            for text in self.tick(slot):
                await ws.send_str(text)

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/control", self.control)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.port = runner.addresses[0][1]
        return runner


def slow_drops(sup: SupervisorProcess) -> int | None:
    """Operators the supervisor has closed for falling behind: a dashboard that cannot keep up.

    None when the supervisor does not answer in time (itself overloaded): the point is still
    measured, its drop count shows as ``?``.
    """
    try:
        status, text = sup.get("/metrics", token=TOKEN)
    except (TimeoutError, OSError):
        return None
    for line in str(text).splitlines():
        if line.startswith("xswarm_supervisor_operators_dropped_total") and "slow" in line:
            return int(float(line.split()[-1]))
    raise SystemExit(f"no operators_dropped_total in the supervisor's /metrics (HTTP {status})")


def proc_cpu_rss(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) and RSS in MiB of one process, from /proc."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss = int(fields[21]) * PAGE_SIZE / 2**20
    return cpu, rss


def start_profilers(
    folder: Path, stem: str, pids: dict[str, int], seconds: float | None
) -> list[subprocess.Popen[bytes]]:
    """py-spy recording each process for ``seconds`` (until SIGINT when None): collapsed
    stacks in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    duration = [] if seconds is None else ["--duration", str(int(seconds))]
    return [
        subprocess.Popen(
            [str(VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--rate", "200"]
            + ["--format", "raw", *duration]
            + ["--output", str(folder / f"{who}-{stem}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for who, pid in pids.items()
    ]


class Tmux:
    """A private tmux server with one window running the dashboard."""

    def __init__(self, tmp: Path, width: int, height: int, command: list[str], env: dict[str, str]):
        self.socket = f"xswarm-bench-{os.getpid()}-{tmp.name}"  # one tmux server per point
        self.base = ["tmux", "-L", self.socket, "-f", "/dev/null"]
        script = tmp / "dashboard.sh"
        exports = "".join(f"export {k}={json.dumps(v)}\n" for k, v in env.items())
        script.write_text(f"{exports}exec {' '.join(command)}\n")
        subprocess.run(
            [
                *self.base,
                "new-session",
                "-d",
                "-x",
                str(width),
                "-y",
                str(height),
                "sh",
                str(script),
            ],
            check=True,
        )
        # The control-mode client that watches for output must not resize the window; a
        # dashboard that dies leaves its last screen to read.
        self._out("set-option", "-g", "window-size", "manual")
        self._out("set-option", "-g", "remain-on-exit", "on")
        self.pid = int(self._out("display-message", "-p", "#{pane_pid}"))

    def _out(self, *args: str) -> str:
        return subprocess.run(
            [*self.base, *args], check=True, capture_output=True, text=True
        ).stdout

    def screen(self) -> str:
        return self._out("capture-pane", "-p")

    def dead(self) -> bool:
        """The dashboard exited (its last screen, a traceback, stays: remain-on-exit)."""
        return self._out("display-message", "-p", "#{pane_dead}").strip() == "1"

    def header(self) -> str:
        """The title line, whose subtitle counts the live calls the dashboard holds."""
        return self.screen().split("\n", 1)[0]

    def send(self, key: str) -> None:
        subprocess.run([*self.base, "send-keys", key], check=True)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 15)
        subprocess.run([*self.base, "kill-server"], capture_output=True)


async def wait_for(predicate: Any, limit: float, every: float = 0.05) -> float | None:
    """Seconds until ``predicate()`` held (polling every ``every`` s), or None after ``limit``."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        if await asyncio.to_thread(predicate):
            return time.perf_counter() - started
        await asyncio.sleep(every)
    return None


def shows_about(header: str, calls: int) -> bool:
    """The title counts within 2% of ``calls`` live calls (calls come and go meanwhile)."""
    words = header.split()
    for before, word in zip(words, words[1:], strict=False):
        if word == "live" and before.isdigit():
            return abs(int(before) - calls) <= max(2, calls // 50)
    return False


class PaneOutput:
    """Tells when the dashboard wrote to its terminal: a tmux control-mode client's ``%output``.

    Polling ``capture-pane`` every few milliseconds starts a tmux client each time: on a
    2-core host that took a good part of a core from the niced dashboard being measured.
    Here the screen is read only after the dashboard has written something.
    """

    def __init__(self, tmux: Tmux) -> None:
        self.tmux = tmux
        self.wrote = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PaneOutput:
        self._proc = await asyncio.create_subprocess_exec(
            *self.tmux.base,
            "-C",
            "attach-session",
            "-r",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            limit=1 << 24,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            if line.startswith(b"%output"):
                self.wrote.set()

    async def __aexit__(self, *_: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()

    async def until(self, predicate: Any, limit: float, started: float) -> float | None:
        """Seconds from ``started`` until ``predicate()`` held, checked after each write."""
        while True:
            if await asyncio.to_thread(predicate):
                return time.perf_counter() - started
            left = started + limit - time.perf_counter()
            if left <= 0:
                return None
            try:
                await asyncio.wait_for(self.wrote.wait(), left)
            except TimeoutError:
                return None
            self.wrote.clear()


async def key_latency(tmux: Tmux, presses: int) -> tuple[dict[str, list[float]], int]:
    """Seconds from each key sent to the screen showing it, and how many never showed (2 s).

    The keys alternate: ``/`` opens the filter box, Escape closes it (and clears the filter),
    so each press must change what ``capture-pane`` shows. The clock starts before
    ``tmux send-keys``; the screen is read after each write of the dashboard to its terminal.
    """
    keys: dict[str, list[float]] = {"/": [], "Escape": []}
    missed = 0
    is_open = False
    async with PaneOutput(tmux) as output:
        for _ in range(presses):
            key, want_open = ("Escape", False) if is_open else ("/", True)
            output.wrote.clear()
            started = time.perf_counter()
            await asyncio.to_thread(tmux.send, key)
            took = await output.until(
                lambda want=want_open: (FILTER_PLACEHOLDER in tmux.screen()) == want,
                2.0,
                started,
            )
            if took is None:
                missed += 1
            else:
                keys[key].append(took)
                is_open = want_open
            await asyncio.sleep(0.2)
    return keys, missed


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds (NaN when nothing was measured)."""
    ordered = sorted(seconds)
    if not ordered:
        return float("nan"), float("nan")
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000


@dataclass
class Point:
    label: str
    calls: int
    size: str
    cpu: list[float]
    rss: list[float]
    keys: dict[str, list[float]]
    missed: int
    supervisor_cpu: float
    dropped: int | None

    def row(self) -> str:
        shown = [took for times in self.keys.values() for took in times]
        per_key = " ".join(
            "{} {:.0f}/{:.0f}".format(key, *percentiles(times)) for key, times in self.keys.items()
        )
        return (
            f"| {self.label} | {self.calls} | {self.size} | {statistics.mean(self.cpu):.1f}% "
            f"| {max(self.cpu):.1f}% | {self.rss[-1]:.0f} MiB "
            "| {:.0f} | {:.0f} ".format(*percentiles(shown))
            + f"| {per_key} | {len(shown)}/{len(shown) + self.missed} "
            f"| {'?' if self.dropped is None else self.dropped} "
            f"| {self.supervisor_cpu:.0f}% |"
        )


async def measure(
    tmp: Path,
    label: str,
    src: Path,
    sup: SupervisorProcess,
    calls: int,
    size: str,
    seconds: float,
    warmup: float,
    key_presses: int,
    extra: list[str],
    profile: Path | None = None,
) -> Point:
    width, height = (int(v) for v in size.split("x"))
    home = tmp / f"home-{label}-{calls}-{size}"
    home.mkdir()
    env = {
        "PYTHONPATH": str(src),
        "XSWARM_SUPERVISOR_TOKEN": TOKEN,
        "XDG_CONFIG_HOME": str(home),
        "TERM": "xterm-256color",
    }
    command = [str(VENV_BIN / "xswarm"), "dashboard", "--url", sup.ws_url, *extra]
    tmux = Tmux(home, width, height, command, env)
    try:
        loaded = await wait_for(lambda: shows_about(tmux.header(), calls), 60)
        if loaded is None:
            print(tmux.screen())
            raise SystemExit(f"the dashboard did not show {calls} calls in 60 s")
        await asyncio.sleep(warmup)
        cpu: list[float] = []
        rss: list[float] = []
        sup_before = proc_cpu_rss(sup.proc.pid)[0]
        drops_before = await asyncio.to_thread(slow_drops, sup)
        spies = []
        if profile is not None:
            stem = f"{label}-{calls}-{size}"
            pids = {"dashboard": tmux.pid, "supervisor": sup.proc.pid}
            spies = await asyncio.to_thread(start_profilers, profile, stem, pids, seconds)
        before, _ = proc_cpu_rss(tmux.pid)
        started = last = time.perf_counter()
        while time.perf_counter() - started < seconds:
            await asyncio.sleep(1.0)
            now = time.perf_counter()
            used, resident = proc_cpu_rss(tmux.pid)
            cpu.append((used - before) / (now - last) * 100)
            rss.append(resident)
            before, last = used, now
        sup_cpu = (proc_cpu_rss(sup.proc.pid)[0] - sup_before) / (last - started)
        for spy in spies:
            await asyncio.to_thread(spy.wait)
        header = tmux.header()
        drops_after = await asyncio.to_thread(slow_drops, sup)
        dropped = None
        if drops_before is not None and drops_after is not None:
            dropped = drops_after - drops_before
        key_spies = []
        if profile is not None:
            stem = f"{label}-{calls}-{size}-keys"
            key_spies = await asyncio.to_thread(
                start_profilers, profile, stem, {"dashboard": tmux.pid}, None
            )
        keys_started = time.perf_counter()
        keys, missed = await key_latency(tmux, key_presses)
        for spy in key_spies:
            spy.send_signal(signal.SIGINT)
            await asyncio.to_thread(spy.wait)
            print(
                f"  profiled the keys for {time.perf_counter() - keys_started:.1f} s "
                f"(against the idle {seconds:g} s: benchmarks/profile_delta.py)",
                flush=True,
            )
        if tmux.dead():
            print(tmux.screen())
            raise SystemExit(f"the dashboard died during the {label} {calls} {size} point")
        per_second = " ".join(f"{c:.0f}" for c in cpu)
        print(
            f"  {label} {calls} calls {size}: CPU % per second [{per_second}], "
            f"RSS MiB {rss[0]:.0f}..{rss[-1]:.0f}; title: {' '.join(header.split())}",
            flush=True,
        )
        point = Point(label, calls, size, cpu, rss, keys, missed, sup_cpu * 100, dropped)
        # Each row as soon as it is measured: a later point that fails loses nothing.
        print(f"  row: {point.row()} load {os.getloadavg()[0]:.1f}", flush=True)
        return point
    finally:
        tmux.close()


async def run(args: argparse.Namespace, tmp: Path) -> list[Point]:
    rates = Rates(args.speech_rate, args.text_rate, args.call_length)
    sources = [("new", SRC, args.dashboard_args.split())]
    if args.baseline_src:
        sources.append(("base", args.baseline_src, []))
    points: list[Point] = []
    for calls in args.calls:
        bridges = [
            FakeBridge(f"voice-{n + 1}", min(CALLS_PER_BRIDGE, calls - n * CALLS_PER_BRIDGE), rates)
            for n in range((calls + CALLS_PER_BRIDGE - 1) // CALLS_PER_BRIDGE)
        ]
        runners = [await bridge.start() for bridge in bridges]
        urls = [f"ws://127.0.0.1:{b.port}/control#{b.name}" for b in bridges]
        sup = start_supervisor(
            tmp, urls, env={"XSWARM_SUPERVISOR_TOKEN": TOKEN}, name=f"sup-{calls}"
        )
        try:
            await asyncio.sleep(2)
            rate_before, t0 = sum(b.published for b in bridges), time.monotonic()
            for size in args.sizes:
                for label, src, extra in sources:
                    timing = (args.seconds, args.warmup, args.keys)
                    points.append(
                        await measure(
                            tmp, label, src, sup, calls, size, *timing, extra, args.profile
                        )
                    )
            rate = (sum(b.published for b in bridges) - rate_before) / (time.monotonic() - t0)
            print(f"  fleet of {calls} calls on {len(bridges)} fake bridges: {rate:.0f} events/s")
        finally:
            sup.stop()
            for runner in runners:
                await runner.cleanup()
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", default="50,200,1000,5000")
    parser.add_argument("--sizes", default="80x24,160x45")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--keys", type=int, default=30, help="key presses timed per point")
    parser.add_argument("--speech-rate", type=float, default=0.125, help="user_speech/call/s")
    parser.add_argument("--text-rate", type=float, default=0.5, help="text events/call/s")
    parser.add_argument("--call-length", type=float, default=120, help="mean call length, s")
    parser.add_argument("--baseline-src", help="also run the dashboard from this src tree")
    parser.add_argument(
        "--dashboard-args", default="", help="extra options for this tree's dashboard: --no-nice"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="record each dashboard with py-spy over the idle window and, apart, over the key "
        "presses: collapsed stacks to DIR (compare them with benchmarks/profile_delta.py)",
    )
    args = parser.parse_args()
    args.calls = [int(n) for n in args.calls.split(",")]
    args.sizes = args.sizes.split(",")
    if args.baseline_src:
        args.baseline_src = Path(args.baseline_src).resolve()
    if shutil.which("tmux") is None:
        raise SystemExit("tmux is not installed; it is the terminal this benchmark draws in")
    print(
        f"tui_terminal: {args.seconds:.0f} s per point after {args.warmup:.0f} s warm-up; per "
        f"call 1 call_stats/s, {args.speech_rate} user_speech/s, {args.text_rate} text/s, "
        f"mean call {args.call_length:.0f} s; load average before "
        f"{os.getloadavg()[0]:.2f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="xswarm-tui-terminal-") as tmp:
        points = asyncio.run(run(args, Path(tmp)))
    print(f"load average after {os.getloadavg()[0]:.2f}")
    print(
        "| code | calls | terminal | CPU mean (one core) | CPU max 1 s | RSS "
        "| key p50 ms | key p99 ms | per key p50/p99 ms | keys shown | dropped as too slow "
        "| supervisor CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for point in points:
        print(point.row())


if __name__ == "__main__":
    main()
