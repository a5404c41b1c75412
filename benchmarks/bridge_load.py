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
and the run's total CPU ratio is printed: it moves least with the machine's other load.

    .venv/bin/python benchmarks/bridge_load.py --baseline --calls 25,50,100,150 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_bridge(workdir: Path, port: int, settings: list[str]) -> subprocess.Popen[bytes]:
    config = workdir / "config.toml"
    lines = ["[voice.bridge]", f"port = {port}", "max_concurrent_calls = 1000"]
    lines += ["max_calls_per_source = 1000", *settings]  # every call comes from loopback
    lines += ["", "[paths]", f'state_dir = "{workdir / "state"}"']
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
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"xswarm-voice exited: {(workdir / 'bridge.log').read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("xswarm-voice did not become ready in 60 s")


def start_baseline(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    log = (workdir / "baseline.log").open("wb")
    script = Path(__file__).with_name("baseline_echo.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", str(port)],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("baseline_echo.py did not answer in 30 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def bench(port: int, calls: int, args: argparse.Namespace, aligned: bool) -> dict[str, Any] | None:
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
        ],
        capture_output=True,
        text=True,
        timeout=args.seconds + args.ramp + 300,
    )
    if done.returncode != 0:
        print(f"N={calls}: bench failed: {done.stderr.strip()}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(done.stdout)
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


def compare(args: argparse.Namespace, counts: list[int]) -> None:
    """xswarm and the lean baseline, paired at each N; the ratio of calls each holds."""
    rows = [
        "| N | pair | server | first-sample p50 ms | p99 ms | max ms | lost (content) "
        "| server CPU ms/call-s |",
        "|" + "---|" * 8,
    ]
    # Both servers' CPU the same way, from /proc over the whole bench (ramp included): the
    # figure that moves least with the machine's other load.
    cpu_ms = {"xswarm": 0.0, "baseline": 0.0}
    held = {"xswarm": 0, "baseline": 0}
    with tempfile.TemporaryDirectory(prefix="xswarm-load-") as tmp:
        port, base_port = free_port(), free_port()
        bridge = start_bridge(Path(tmp), port, args.set)
        baseline = start_baseline(Path(tmp), base_port)
        try:
            for calls in counts:
                ok = {"xswarm": True, "baseline": True}
                for pair in range(args.pairs):
                    order = [("xswarm", port), ("baseline", base_port)]
                    if pair % 2:
                        order.reverse()
                    for name, target in order:
                        pid = bridge.pid if name == "xswarm" else baseline.pid
                        before = cpu_seconds(pid)
                        r = bench(target, calls, args, aligned=True)
                        used = cpu_seconds(pid) - before
                        cpu = round(used * 1000 / (calls * (args.seconds + args.ramp)), 2)
                        cpu_ms[name] += used
                        print(json.dumps({"server": name, **(r or {})}), file=sys.stderr)
                        ok[name] &= holds(r, calls, args.p99_ms)
                        if r is not None:
                            rows.append(
                                f"| {calls} | {pair + 1} | {name} | {r['first_sample_p50_ms']} "
                                f"| {r['first_sample_p99_ms']} | {r['first_sample_max_ms']} "
                                f"| {r['content_lost_frames']} | {cpu} |"
                            )
                        time.sleep(2)
                for name in held:
                    if ok[name]:
                        held[name] = max(held[name], calls)
        finally:
            stop(bridge)
            stop(baseline)
    print("\n".join(rows))
    ratio = held["xswarm"] / held["baseline"] if held["baseline"] else float("nan")
    print(
        f"calls held with first-sample p99 < {args.p99_ms:g} ms and 0 lost in every pair: "
        f"xswarm {held['xswarm']}, baseline {held['baseline']}; ratio {ratio:.2f}"
    )
    if cpu_ms["baseline"]:
        print(
            f"server CPU over the whole run, xswarm / baseline: "
            f"{cpu_ms['xswarm'] / cpu_ms['baseline']:.2f}"
        )


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
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    counts = [int(n) for n in args.calls.split(",")]
    if args.baseline:
        compare(args, counts)
        print(f"load average (1 min) before {load_before:.2f}, after {os.getloadavg()[0]:.2f}")
        return
    header = (
        "| N | p50 ms | p99 ms | max ms | lost | late | dropped "
        "| bridge CPU ms/call-s | bench CPU ms/call-s |"
    )
    rows = [header, "|" + "---|" * 9]
    with tempfile.TemporaryDirectory(prefix="xswarm-load-") as tmp:
        port = free_port()
        bridge = start_bridge(Path(tmp), port, args.set)
        try:
            for calls in counts:
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
                    ],
                    capture_output=True,
                    text=True,
                    timeout=args.seconds + args.ramp + 120,
                )
                if done.returncode != 0:
                    print(f"N={calls}: bench failed: {done.stderr.strip()}", file=sys.stderr)
                    continue
                r = json.loads(done.stdout)
                print(json.dumps(r), file=sys.stderr)
                rows.append(
                    f"| {r['connected']} | {r['round_trip_p50_ms']} | {r['round_trip_p99_ms']} "
                    f"| {r['round_trip_max_ms']} | {r['lost_frames']} | {r['late_frames']} "
                    f"| {r['dropped_frames']} "
                    f"| {r['bridge_cpu_ms_per_call_second']} "
                    f"| {r['bench_cpu_ms_per_call_second']} |"
                )
                time.sleep(2)
        finally:
            bridge.send_signal(signal.SIGTERM)
            try:
                bridge.wait(30)
            except subprocess.TimeoutExpired:
                bridge.kill()
                bridge.wait(5)
    print("\n".join(rows))
    print(f"load average (1 min) before {load_before:.2f}, after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
