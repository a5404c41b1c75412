"""How many Twilio calls one bridge carries: `xswarm bench` at rising N against a fresh
`xswarm-voice` (echo engine), one row per N.

    .venv/bin/python benchmarks/bridge_load.py --calls 50,100,200,300,400 --seconds 15

It starts the bridge itself on a free loopback port with max_concurrent_calls = 1000 and a
temporary state folder, and stops it (by its PID) when done. Extra bridge settings can be
given as TOML lines with --set, e.g. --set 'resampler_quality = "FIR"'.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="50,100,200,300,400")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--ramp", type=float, default=3.0)
    parser.add_argument("--phases", type=int, default=4, help="see xswarm bench --phases")
    parser.add_argument("--set", action="append", default=[], help="a [voice.bridge] TOML line")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    counts = [int(n) for n in args.calls.split(",")]
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
