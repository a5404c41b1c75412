"""What the supervisor costs and how fast it notices trouble; prints figures, asserts nothing.

    .venv/bin/python benchmarks/supervisor_load.py --calls 200 --seconds 20

1. Load: a real ``xswarm-voice`` (echo engine) with N live Twilio calls (idle after ``start``;
   the bridge still sends one ``call_stats`` per call per second) and a real
   ``xswarm-dashboard`` with one subscribed operator. Prints the supervisor's CPU (percent of
   one core) and RSS, and the events per second the operator received.
2. Detection: how long after ``kill -9`` of the bridge the operator sees ``down``, and after
   ``SIGSTOP`` sees ``stale`` ([dashboard] stale_after = 2), a few rounds each.
3. History: the time to commit one finished call (synchronous=FULL, WAL) on this disk.

Every process it starts is stopped by its PID when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.supervisor.support import start_supervisor  # noqa: E402
from tests.support.bridge import start_bridge  # noqa: E402
from tests.support.calls import idle_call  # noqa: E402
from xswarm.supervisor.fleet import CallRecord  # noqa: E402
from xswarm.supervisor.store import Store  # noqa: E402

# Every call comes from loopback and holds still: lift the per-source and inactivity limits.
BRIDGE = (
    '[voice.bridge]\nengine = "echo"\nmax_concurrent_calls = 1000\nmax_calls_per_source = 1000\n'
    "inactivity_timeout = 86400\ndrain_timeout = 1\n"
)


async def operator(url: str, counts: dict[str, int], ready: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_str(json.dumps({"type": "subscribe"}))
        async for msg in ws:
            kind = json.loads(msg.data).get("type", "?")
            counts[kind] = counts.get(kind, 0) + 1
            if kind == "snapshot":
                ready.set()


async def load(tmp: Path, calls: int, seconds: float) -> None:
    bridge = start_bridge(tmp, BRIDGE, name="load-bridge")
    sup = start_supervisor(tmp, [bridge.ws_url + "/control"], name="load-supervisor")
    proc = psutil.Process(sup.proc.pid)
    stop = asyncio.Event()
    counts: dict[str, int] = {}
    ready = asyncio.Event()
    try:
        watcher = asyncio.create_task(operator(sup.ws_url, counts, ready))
        await ready.wait()
        # One connection per call: lift aiohttp's default cap of 100 connections.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            callers = [
                asyncio.create_task(idle_call(session, bridge.ws_url, stop)) for _ in range(calls)
            ]
            deadline = time.monotonic() + 120
            while counts.get("call_started", 0) < calls:
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"only {counts.get('call_started', 0)} of {calls} calls started in 120 s"
                    )
                await asyncio.sleep(0.2)
            await asyncio.sleep(3)
            before_cpu = sum(proc.cpu_times()[:2])
            before_events = dict(counts)
            started = time.monotonic()
            await asyncio.sleep(seconds)
            elapsed = time.monotonic() - started
            cpu = (sum(proc.cpu_times()[:2]) - before_cpu) / elapsed * 100
            rss = proc.memory_info().rss / 2**20
            stats = (counts.get("call_stats", 0) - before_events.get("call_stats", 0)) / elapsed
            total = (sum(counts.values()) - sum(before_events.values())) / elapsed
            print(
                f"load: {calls} live calls for {elapsed:.1f} s: supervisor CPU {cpu:.1f}% "
                f"of one core, RSS {rss:.0f} MiB; operator received {total:.0f} events/s "
                f"({stats:.0f} call_stats/s)"
            )
            stop.set()
            await asyncio.gather(*callers, return_exceptions=True)
        watcher.cancel()
    finally:
        sup.stop()
        bridge.stop()


async def detection(tmp: Path, rounds: int) -> None:
    bridge = start_bridge(tmp, BRIDGE, name="detect-bridge")
    port = bridge.port
    sup = start_supervisor(
        tmp,
        [bridge.ws_url + "/control"],
        name="detect-supervisor",
        extra_toml="stale_after = 2.0\n",
    )
    down: list[float] = []
    stale: list[float] = []
    back: list[float] = []
    try:
        async with aiohttp.ClientSession() as session, session.ws_connect(sup.ws_url) as ws:
            await ws.send_str(json.dumps({"type": "subscribe"}))

            async def until(state: str) -> float:
                async for msg in ws:
                    data = json.loads(msg.data)
                    if data.get("type") == "instance_state" and data.get("state") == state:
                        return time.monotonic()
                raise ConnectionError("operator socket closed")

            for _ in range(rounds):
                await asyncio.sleep(1.5)
                os.kill(bridge.proc.pid, signal.SIGSTOP)
                t0 = time.monotonic()
                stale.append(await until("stale") - t0)
                os.kill(bridge.proc.pid, signal.SIGCONT)
                await until("up")
                await asyncio.sleep(1.5)
                bridge.proc.kill()
                t0 = time.monotonic()
                down.append(await until("down") - t0)
                bridge.proc.wait()
                bridge = start_bridge(tmp, BRIDGE, name="detect-bridge", port=port)
                t0 = time.monotonic()
                back.append(await until("up") - t0)
    finally:
        sup.stop()
        bridge.stop()

    def show(values: list[float]) -> str:
        return (
            f"median {statistics.median(values) * 1000:.0f} ms, "
            f"max {max(values) * 1000:.0f} ms over {len(values)}"
        )

    print(f"detection: kill -9 of the bridge -> down: {show(down)}")
    print(f"detection: SIGSTOP of the bridge -> stale (stale_after 2 s): {show(stale)}")
    print(f"detection: bridge ready again -> up: {show(back)}")


def history(tmp: Path, count: int) -> None:
    store = Store(tmp / "bench.db", history_limit=100_000)
    times = []
    for n in range(count):
        record = CallRecord(
            call_id=f"c{n}",
            instance="a",
            transport="twilio",
            remote="1.2.3.4",
            caller=None,
            started_at="2027-01-15T08:00:00.000Z",
            ended_at="2027-01-15T08:00:10.000Z",
            duration_s=10.0,
            reason="caller_hangup",
            frames_in=500,
            frames_out=500,
            late_frames=0,
            suggestions=0,
        )
        t0 = time.perf_counter()
        store.call_ended(record)
        times.append(time.perf_counter() - t0)
    store.close()
    times.sort()
    print(
        f"history: commit of one finished call (WAL, synchronous=FULL): "
        f"median {statistics.median(times) * 1000:.2f} ms, "
        f"p99 {times[int(len(times) * 0.99)] * 1000:.2f} ms over {count}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--commits", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xswarm-supervisor-bench-") as tmp:
        asyncio.run(load(Path(tmp), args.calls, args.seconds))
        asyncio.run(detection(Path(tmp), args.rounds))
        history(Path(tmp), args.commits)


if __name__ == "__main__":
    main()
