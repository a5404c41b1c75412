"""The supervisor's CPU with a fleet and one batching operator, against another source tree.

    PYTHONPATH=$PWD/src .venv/bin/python benchmarks/supervisor_fleet.py --calls 5000 \
        --seconds 20 --pairs 2 --baseline-src /tmp/tui-perf-base/src

The fleet is ``tui_terminal.py``'s synthetic one (fake bridges on loopback speaking the real
``/control`` protocol). A probe operator in this process subscribes with ``batch`` and, when
the supervisor's batches offer it (``background_s``), watches 40 calls, as a dashboard
showing 40 rows does. Per pair, this tree's supervisor and the baseline's run one after the
other; each prints its CPU (percent of one core, from /proc) and the events the operator got.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tui_terminal as tt  # noqa: E402

WATCHED = 40


async def measure(src: Path, calls: int, seconds: float) -> str:
    rates = tt.Rates(0.125, 0.5, 120)
    count = (calls + tt.CALLS_PER_BRIDGE - 1) // tt.CALLS_PER_BRIDGE
    bridges = [
        tt.FakeBridge(
            f"voice-{n + 1}", min(tt.CALLS_PER_BRIDGE, calls - n * tt.CALLS_PER_BRIDGE), rates
        )
        for n in range(count)
    ]
    runners = [await bridge.start() for bridge in bridges]
    urls = [f"ws://127.0.0.1:{b.port}/control#{b.name}" for b in bridges]
    env = {"XSWARM_SUPERVISOR_TOKEN": tt.TOKEN, "PYTHONPATH": str(src)}
    with tempfile.TemporaryDirectory(prefix="xswarm-supervisor-fleet-") as tmp:
        sup = tt.start_supervisor(Path(tmp), urls, env=env)
        try:
            await asyncio.sleep(3)
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(sup.ws_url, max_msg_size=1 << 26) as ws,
            ):
                await ws.send_str(json.dumps({"type": "auth", "token": tt.TOKEN}))
                await ws.send_str(json.dumps({"type": "subscribe", "batch": True}))
                watched = False
                got = 0
                ids: list[str] = []
                started = cpu_before = None
                async for frame in ws:
                    data = json.loads(frame.data)
                    if data["type"] == "snapshot":
                        ids = sorted(c["call_id"] for c in data["calls"])[:WATCHED]
                        continue
                    if data["type"] == "batch" and "background_s" in data and not watched:
                        watched = True
                        await ws.send_str(json.dumps({"type": "watch", "call_ids": ids}))
                    if started is None:
                        started, cpu_before = time.monotonic(), tt.proc_cpu_rss(sup.proc.pid)[0]
                        continue
                    got += len(data.get("events", [])) if data["type"] == "batch" else 1
                    if time.monotonic() - started >= seconds:
                        break
            assert started is not None and cpu_before is not None
            took = time.monotonic() - started
            cpu = (tt.proc_cpu_rss(sup.proc.pid)[0] - cpu_before) / took * 100
            return (
                f"{src}: supervisor CPU {cpu:.1f}% of a core, the operator got "
                f"{got / took:.0f} events/s, watch {'taken' if watched else 'not offered'}, "
                f"load {os.getloadavg()[0]:.1f}"
            )
        finally:
            sup.stop()
            for runner in runners:
                await runner.cleanup()


async def run(args: argparse.Namespace) -> None:
    for _ in range(args.pairs):
        for src in (tt.SRC, args.baseline_src):
            print(await measure(src, args.calls, args.seconds), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--baseline-src", type=Path, required=True)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
