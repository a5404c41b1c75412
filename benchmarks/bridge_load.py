"""How many Twilio calls one bridge carries: `xswarm bench` at rising N against a fresh
`xswarm-voice` (echo engine), one row per N.

    .venv/bin/python benchmarks/bridge_load.py --calls 50,100,200,300,400 --seconds 15

It starts the bridge itself on a free loopback port with max_concurrent_calls = 1000 and a
temporary state folder, and stops it (by its PID) when done. Extra bridge settings can be
given as TOML lines with --set, e.g. --set 'resampler_quality = "FIR"'.

With --baseline it also starts benchmarks/baseline_echo.py (a lean aiohttp Twilio echo with
the same resampling) and, at each N, runs the same content-aligned bench (`--aligned`)
against both, in alternating order, --pairs times. It then prints how many calls each holds
with first-sample p99 < --p99-ms and nothing lost (in every pair), and the ratio: absolute
figures move 2x between days on a shared machine, the ratio much less. Each server's CPU
(user + system, from /proc, per call-second of the bench) is measured the same way for both,
and so is the bench's own (its CPU per call-second and its timer's lag: a late timer means
the client, not the server, was short of CPU; such a run is repeated up to --retries times
and marked "starved" if it stays so). --search STEP keeps raising N by STEP past
the list, both servers at every N, until the baseline fails the bar: each server holds the
largest N below its first failure. The CPU ratio is over the N where both held, the load
either serves in real time (a server past saturation sheds or queues work, and its CPU per
call-second then says nothing about its cost).

    .venv/bin/python benchmarks/bridge_load.py --baseline --calls 50,100 --search 50

With --engine tiny it serves MOSHI over the tiny test model (tests/engine/tiny_moshi.py, CPU,
fp32) instead, optionally through a jittery network (--jitter-ms: each caller frame leaves
0 to 2x that after its slot), and reads every call's `call_ended` from /control: underruns,
late steps, dropped frames and the latency the bridge added each way (p50/p99 per call).

    .venv/bin/python benchmarks/bridge_load.py --engine tiny --calls 8 --jitter-ms 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_bridge(
    workdir: Path, port: int, settings: list[str], sections: str = ""
) -> subprocess.Popen[bytes]:
    config = workdir / "config.toml"
    lines = ["[voice.bridge]", f"port = {port}", "max_concurrent_calls = 1000"]
    lines += ["max_calls_per_source = 1000", *settings]  # every call comes from loopback
    lines += ["", "[paths]", f'state_dir = "{workdir / "state"}"', "", sections]
    config.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XSWARM_", "TWILIO_"))}
    log = (workdir / "bridge.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "xswarm-voice"), "--config", str(config)],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    wait_ready(proc, port, 300, lambda: (workdir / "bridge.log").read_text())
    return proc


def start_baseline(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    log = (workdir / "baseline.log").open("wb")
    script = Path(__file__).with_name("baseline_echo.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", str(port)],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    wait_ready(proc, port, 30, lambda: (workdir / "baseline.log").read_text())
    return proc


def wait_ready(
    proc: subprocess.Popen[bytes], port: int, seconds: float, log: Callable[[], str]
) -> None:
    name = Path(str(proc.args[0] if isinstance(proc.args, list) else proc.args)).name
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited: {log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{name} did not become ready in {seconds:g} s: {log()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def bench(
    port: int, calls: int, args: argparse.Namespace, aligned: bool, jitter_ms: float = 0.0
) -> dict[str, Any] | None:
    """One `xswarm bench --json` run; None (and the reason on stderr) when it failed."""
    done = subprocess.run(
        [
            str(BIN / "xswarm"),
            "bench",
            "--calls",
            str(calls),
            "--seconds",
            str(args.seconds),
            "--ramp",
            str(args.ramp),
            "--phases",
            str(args.phases),
            "--url",
            f"ws://127.0.0.1:{port}",
            "--json",
            *(["--aligned"] if aligned else []),
            *(["--jitter-ms", str(jitter_ms)] if jitter_ms else []),
        ],
        capture_output=True,
        text=True,
        timeout=args.seconds + args.ramp + 300,
    )
    if done.returncode != 0:
        print(f"N={calls}: bench failed: {done.stderr.strip()}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(done.stdout)
    print(json.dumps(result), file=sys.stderr)
    return result


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def holds(result: dict[str, Any] | None, calls: int, p99_ms: float) -> bool:
    if result is None or result["connected"] != calls:
        return False
    p99 = result["first_sample_p99_ms"]
    return p99 is not None and p99 < p99_ms and result["content_lost_frames"] == 0


def client_starved(result: dict[str, Any] | None, args: argparse.Namespace) -> bool:
    """The bench's own timer ran late: the machine, not the server, held the frames back
    (on a shared box another process took the CPU), so the run says nothing of the server."""
    lag = result.get("bench_timer_lag_p99_ms") if result else None
    return lag is not None and lag > args.max_client_lag_ms


def compare(args: argparse.Namespace, counts: list[int]) -> None:
    """xswarm and the lean baseline, paired at each N; the ratio of calls each holds."""
    rows = [
        "| N | pair | server | first-sample p50 ms | p99 ms | max ms | lost (content) "
        "| server CPU ms/call-s | bench CPU ms/call-s | bench timer lag p99 ms |",
        "|" + "---|" * 10,
    ]
    # Both servers' CPU the same way, from /proc over the whole bench (ramp included): the
    # figure that moves least with the machine's other load.
    cpu_ms = {"xswarm": 0.0, "baseline": 0.0}
    cpu_all = {"xswarm": 0.0, "baseline": 0.0}
    held = {"xswarm": 0, "baseline": 0}
    failed_at: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="xswarm-load-") as tmp:
        ports = {"xswarm": free_port(), "baseline": free_port()}
        procs = {
            "xswarm": start_bridge(Path(tmp), ports["xswarm"], args.set),
            "baseline": start_baseline(Path(tmp), ports["baseline"]),
        }
        try:
            index = 0
            while index < len(counts) or (args.search and "baseline" not in failed_at):
                if index < len(counts):
                    calls = counts[index]
                else:
                    calls = counts[-1] + args.search * (index - len(counts) + 1)
                    if calls > args.max_calls:
                        break
                index += 1
                ok = dict.fromkeys(procs, True)
                used_at_n = dict.fromkeys(procs, 0.0)
                for pair in range(args.pairs):
                    order = list(procs)
                    if pair % 2:
                        order.reverse()
                    for name in order:
                        for _ in range(1 + args.retries):
                            before = cpu_seconds(procs[name].pid)
                            r = bench(ports[name], calls, args, aligned=True)
                            used = cpu_seconds(procs[name].pid) - before
                            if not client_starved(r, args):
                                break
                            print(
                                f"N={calls} {name}: the bench was starved; again", file=sys.stderr
                            )
                            time.sleep(2)
                        cpu = round(used * 1000 / (calls * (args.seconds + args.ramp)), 2)
                        used_at_n[name] += used
                        cpu_all[name] += used
                        ok[name] &= holds(r, calls, args.p99_ms)
                        if r is not None:
                            rows.append(
                                f"| {calls} | {pair + 1} | {name} | {r['first_sample_p50_ms']} "
                                f"| {r['first_sample_p99_ms']} | {r['first_sample_max_ms']} "
                                f"| {r['content_lost_frames']} | {cpu} "
                                f"| {r['bench_cpu_ms_per_call_second']} "
                                f"| {r['bench_timer_lag_p99_ms']}"
                                f"{' (starved)' if client_starved(r, args) else ''} |"
                            )
                        time.sleep(2)
                if all(ok.values()):
                    for name in procs:
                        cpu_ms[name] += used_at_n[name]
                for name in procs:
                    if name in failed_at:
                        continue
                    if ok[name]:
                        held[name] = calls
                    else:
                        failed_at[name] = calls
        finally:
            for proc in procs.values():
                stop(proc)
    print("\n".join(rows))
    ratio = held["xswarm"] / held["baseline"] if held["baseline"] else float("nan")
    print(
        f"calls held with first-sample p99 < {args.p99_ms:g} ms and 0 lost in every pair: "
        f"xswarm {held['xswarm']}, baseline {held['baseline']}; ratio {ratio:.2f}"
        + (f" (first failed: {failed_at})" if failed_at else " (neither failed: a floor)")
    )
    if cpu_ms["baseline"]:
        print(
            "server CPU at the N both held, xswarm / baseline: "
            f"{cpu_ms['xswarm'] / cpu_ms['baseline']:.2f}"
        )
    if cpu_all["baseline"]:
        print(
            "server CPU over every N (past saturation too), xswarm / baseline: "
            f"{cpu_all['xswarm'] / cpu_all['baseline']:.2f}"
        )


def load_table(args: argparse.Namespace, counts: list[int]) -> None:
    """The bridge alone at each N: message-order round trip, loss, the bridge's counters."""
    rows = [
        "| N | p50 ms | p99 ms | max ms | lost | late | dropped "
        "| bridge CPU ms/call-s | bench CPU ms/call-s |",
        "|" + "---|" * 9,
    ]
    with tempfile.TemporaryDirectory(prefix="xswarm-load-") as tmp:
        port = free_port()
        bridge = start_bridge(Path(tmp), port, args.set)
        try:
            for calls in counts:
                r = bench(port, calls, args, aligned=False)
                if r is not None:
                    rows.append(
                        f"| {r['connected']} | {r['round_trip_p50_ms']} "
                        f"| {r['round_trip_p99_ms']} | {r['round_trip_max_ms']} "
                        f"| {r['lost_frames']} | {r['late_frames']} | {r['dropped_frames']} "
                        f"| {r['bridge_cpu_ms_per_call_second']} "
                        f"| {r['bench_cpu_ms_per_call_second']} |"
                    )
                time.sleep(2)
        finally:
            stop(bridge)
    print("\n".join(rows))


class CallEndedWatcher:
    """Reads the bridge's /control (loopback needs no token) on its own thread and keeps
    every ``call_ended``."""

    def __init__(self, port: int) -> None:
        self.url = f"ws://127.0.0.1:{port}/control"
        self.ended: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._read()), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise SystemExit(f"{self.url} did not say hello in 30 s")

    async def _read(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session, session.ws_connect(self.url) as ws:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                event = json.loads(message.data)
                if event.get("type") == "hello":
                    self._ready.set()
                elif event.get("type") == "call_ended":
                    self.ended.append(event)


def tiny_engine(args: argparse.Namespace, counts: list[int]) -> None:
    """MOSHI over the tiny test model, through an optionally jittery network: what each
    call's ``call_ended`` says the bridge did to keep it real time."""
    sys.path.insert(0, str(ROOT))
    from tests.engine.tiny_moshi import build_tiny_moshi, tiny_moshi_toml

    rows = [
        "| N | jitter ms | frames sent | received | lost | underruns | late steps "
        "| dropped | input wait p50/p99 ms (worst call) | output wait p50/p99 ms (worst call) "
        "| bridge CPU ms/call-s |",
        "|" + "---|" * 11,
    ]
    for calls in counts:
        with tempfile.TemporaryDirectory(prefix="xswarm-tiny-") as tmp:
            lines = build_tiny_moshi(Path(tmp) / "model")
            # Enough warm-up steps for the log to give the step time a real p50/p99.
            moshi = tiny_moshi_toml(
                lines, device="cpu", dtype="fp32", slots=calls, warmup_steps=100
            )
            port = free_port()
            bridge = start_bridge(Path(tmp), port, ['engine = "moshi"', *args.set], moshi)
            try:
                watcher = CallEndedWatcher(port)
                r = bench(port, calls, args, aligned=False, jitter_ms=args.jitter_ms)
                deadline = time.monotonic() + 10
                while len(watcher.ended) < calls and time.monotonic() < deadline:
                    time.sleep(0.1)
            finally:
                stop(bridge)
                log = (Path(tmp) / "bridge.log").read_text(errors="replace").splitlines()
                for line in log:
                    if "warm-up" in line or "step p" in line:
                        print(f"N={calls}: {line}")
        if r is None:
            continue
        ended = watcher.ended

        def worst(key: str, calls_ended: list[dict[str, Any]] = ended) -> float | None:
            values = [e[key] for e in calls_ended if e.get(key) is not None]
            return max(values) if values else None

        rows.append(
            f"| {calls} | ±{args.jitter_ms:g} | {r['frames_sent']} | {r['frames_received']} "
            f"| {r['lost_frames']} | {sum(e.get('underruns', 0) for e in ended)} "
            f"| {sum(e.get('late_steps', 0) for e in ended)} "
            f"| {sum(e.get('dropped_frames', 0) for e in ended)} "
            f"| {worst('input_wait_p50_ms')} / {worst('input_wait_p99_ms')} "
            f"| {worst('output_wait_p50_ms')} / {worst('output_wait_p99_ms')} "
            f"| {r['bridge_cpu_ms_per_call_second']} |"
        )
        print(json.dumps({"calls": calls, "call_ended": ended}), file=sys.stderr)
    print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="50,100,200,300,400")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--ramp", type=float, default=3.0)
    parser.add_argument("--phases", type=int, default=4, help="see xswarm bench --phases")
    parser.add_argument("--set", action="append", default=[], help="a [voice.bridge] TOML line")
    parser.add_argument(
        "--baseline", action="store_true", help="compare with benchmarks/baseline_echo.py"
    )
    parser.add_argument("--pairs", type=int, default=2, help="with --baseline: runs per N each")
    parser.add_argument("--p99-ms", type=float, default=40.0, help="with --baseline: the bar")
    parser.add_argument(
        "--search", type=int, default=0, help="with --baseline: raise N by this until both fail"
    )
    parser.add_argument("--max-calls", type=int, default=1000, help="where --search stops")
    parser.add_argument(
        "--max-client-lag-ms",
        type=float,
        default=10.0,
        help="with --baseline: a bench whose timer lag p99 is over this was starved of CPU",
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="with --baseline: reruns of a starved bench"
    )
    parser.add_argument("--engine", choices=["echo", "tiny"], default="echo")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="see xswarm bench")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    counts = [int(n) for n in args.calls.split(",")]
    if args.engine == "tiny":
        tiny_engine(args, counts)
    elif args.baseline:
        compare(args, counts)
    else:
        load_table(args, counts)
    print(f"load average (1 min) before {load_before:.2f}, after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
