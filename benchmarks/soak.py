"""Soak: churn calls through a real ``xswarm-voice`` (echo) watched by a real ``xswarm-dashboard``.

For ``--seconds``, ``--concurrency`` workers each place one call after another: most are
genuine (Twilio or Moshi, through the same clients as ``xswarm call``), some abusive
(malformed JSON, an oversized message, undecodable Opus) and some vanish without a close
(the TCP connection dropped mid-call). Meanwhile a /control subscriber, holding the control
token like the supervisor, records every ``call_started`` and ``call_ended``.

At the end it reports, per service, RSS and open file descriptors (from /proc) at start and
end, and the supervisor's history rows (its SQLite file, read-only). Neither service exposes
a count of asyncio tasks, so none is reported. The verdict is PASS when every call the bridge
started has exactly one ``call_ended`` and exactly one history row, and every Twilio call that
sent ``start`` maps (by streamSid) to exactly one started call. Growth of RSS and fds is
reported, not judged: the machine may be shared.

Loopback only, bounded in time: ``python benchmarks/soak.py --seconds 60 --concurrency 8``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from xswarm.client.moshi_call import place_moshi_call
from xswarm.client.twilio_call import place_twilio_call
from xswarm.protocol import moshi, twilio

VENV_BIN = Path(sys.executable).parent
MAX_SECONDS = 3600
MAX_CONCURRENCY = 64
# Kinds of call and how often each is placed.
KINDS = {
    "twilio": 40,
    "moshi": 15,
    "malformed_json": 10,
    "oversized": 10,
    "bad_opus": 10,
    "vanish": 15,
}
CLOSE_WAIT_S = 3.0  # how long an abusive caller waits for the bridge to close its call
CALL_LIMIT_S = 30.0  # no call of the soak takes longer; one that does is counted as failed
OVERSIZED_BYTES = 70 * 1024  # above the bridge's default max_message_bytes (64 KiB)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def usage(self) -> dict[str, int]:
        """RSS (bytes) and open file descriptors, read from /proc."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        rss_kb = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
        )
        return {"rss": rss_kb * 1024, "fds": len(os.listdir(f"/proc/{self.proc.pid}/fd"))}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _start(
    name: str, args: list[str], env: dict[str, str], workdir: Path, port: int, ready: str
) -> Service:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / name), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
            cwd=workdir,
        )
    service = Service(name, proc, port, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=1) as answer:
                if answer.status == 200:
                    return service
        except OSError:
            pass
        time.sleep(0.1)
    service.stop()
    raise SystemExit(f"{name} not ready within 60 s:\n{log.read_text()[-2000:]}")


def start_services(workdir: Path) -> tuple[Service, Service, dict[str, str]]:
    bridge_port, supervisor_port = free_port(), free_port()
    tokens = {
        "XSWARM_CONTROL_TOKEN": secrets.token_urlsafe(32),
        "XSWARM_SUPERVISOR_TOKEN": secrets.token_urlsafe(32),
    }
    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XSWARM_", "TWILIO_", "NOTIFY_SOCKET", "LISTEN_"))
    }
    bridge_config = workdir / "voice.toml"
    bridge_config.write_text(
        f'[voice.bridge]\nport = {bridge_port}\nengine = "echo"\nmax_concurrent_calls = 200\n'
        f'[paths]\nstate_dir = "{workdir / "voice-state"}"\n'
    )
    supervisor_config = workdir / "dashboard.toml"
    supervisor_config.write_text(
        f'[paths]\nstate_dir = "{workdir / "dashboard-state"}"\n'
        f'[dashboard]\ninstances = ["ws://127.0.0.1:{bridge_port}/control"]\n'
    )
    bridge_env = base_env | {"XSWARM_CONTROL_TOKEN": tokens["XSWARM_CONTROL_TOKEN"]}
    supervisor_env = base_env | tokens | {"XSWARM_RUNTIME_DIR": str(workdir / "run")}
    bridge = _start(
        "xswarm-voice",
        ["--config", str(bridge_config)],
        bridge_env,
        workdir,
        bridge_port,
        "/readyz",
    )
    try:
        supervisor = _start(
            "xswarm-dashboard",
            ["--config", str(supervisor_config), "--port", str(supervisor_port)],
            supervisor_env,
            workdir,
            supervisor_port,
            "/healthz",
        )
    except BaseException:
        bridge.stop()
        raise
    return bridge, supervisor, tokens


class ControlWatcher:
    """Subscribes to the bridge's /control as the supervisor does and counts call events."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.started: dict[str, dict[str, Any]] = {}
        self.started_count: Counter[str] = Counter()
        self.ended: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        ws = await self._session.ws_connect(
            self.url, headers={"Authorization": f"Bearer {self.token}"}
        )
        self._task = asyncio.create_task(self._read(ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(message.data)
            kind, call_id = event.get("type"), event.get("call_id")
            if kind == "hello":
                self.ready.set()
            elif kind == "call_started" and isinstance(call_id, str):
                self.started[call_id] = event
                self.started_count[call_id] += 1
            elif kind == "call_ended" and isinstance(call_id, str):
                self.ended[call_id] += 1
                self.reasons[str(event.get("reason"))] += 1

    def open_calls(self) -> int:
        return sum(1 for call_id in self.started if self.ended[call_id] == 0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()


@dataclass
class Tally:
    placed: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    stream_sids: list[str] = field(default_factory=list)  # Twilio calls that sent `start`
    close_codes: Counter[str] = field(default_factory=Counter)  # abusive kind and close code
    kept_open: Counter[str] = field(default_factory=Counter)  # abuses the bridge did not close


async def _twilio_abuse(url: str, kind: str, tally: Tally) -> None:
    """A Twilio caller that starts normally, sends some audio, then misbehaves."""
    stream_sid, call_sid = twilio.new_stream_sid(), twilio.new_call_sid()
    frame = b"\xff" * twilio.FRAME_BYTES
    media = twilio.InboundMedia(stream_sid)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(url, max_msg_size=0)
        await ws.send_str(twilio.connected_message())
        await ws.send_str(twilio.start_message(stream_sid, call_sid))
        tally.stream_sids.append(stream_sid)
        for index in range(10):
            await ws.send_str(media.message(index + 2, index + 1, index * 20, frame))
            await asyncio.sleep(0.02)
        if kind == "malformed_json":
            await ws.send_str('{"event": "media", "media": {"payload": ')
        elif kind == "oversized":
            await ws.send_str('{"event":"mark","mark":{"name":"' + "x" * OVERSIZED_BYTES + '"}}')
        else:  # vanish: drop the TCP connection, no close frame, no stop
            connection = ws._response.connection  # aiohttp offers no public abort
            transport = connection.transport if connection is not None else None
            if transport is not None:
                transport.abort()
            return
        await _expect_close(ws, kind, tally)


async def _bad_opus(url: str, tally: Tally) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.receive(10)  # the handshake
        await ws.send_bytes(moshi.audio(moshi.OGG_MAGIC + os.urandom(400)))
        await ws.send_bytes(moshi.audio(moshi.OGG_MAGIC + b"\x00" * 23 + os.urandom(300)))
        await _expect_close(ws, "bad_opus", tally)


async def _expect_close(ws: aiohttp.ClientWebSocketResponse, kind: str, tally: Tally) -> None:
    """Wait for the bridge to close an abusive call; after CLOSE_WAIT_S, count it as kept
    open (a finding, not a failure: the call still has to end exactly once) and hang up."""
    try:
        async with asyncio.timeout(CLOSE_WAIT_S):
            async for _ in ws:
                pass
    except TimeoutError:
        tally.kept_open[kind] += 1
    else:
        tally.close_codes[f"{kind} {ws.close_code}"] += 1
    await ws.close()


async def place(kind: str, ws_url: str, tally: Tally) -> None:
    tally.placed[kind] += 1
    try:
        if kind == "twilio":
            result = await place_twilio_call(ws_url + "/twilio", tone(0.4, 8000), tail_seconds=0.2)
            tally.stream_sids.append(result.stream_sid)
        elif kind == "moshi":
            await place_moshi_call(ws_url + "/api/chat", tone(0.4, 24000), tail_seconds=0.2)
        elif kind == "bad_opus":
            await _bad_opus(ws_url + "/api/chat", tally)
        else:
            await _twilio_abuse(ws_url + "/twilio", kind, tally)
    except Exception as exc:  # a refused or broken call is counted, the soak goes on
        tally.failed[f"{kind}: {type(exc).__name__}"] += 1


async def churn(ws_url: str, seconds: float, concurrency: int, seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    kinds, weights = list(KINDS), list(KINDS.values())
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            kind = rng.choices(kinds, weights)[0]
            try:
                await asyncio.wait_for(place(kind, ws_url, tally), CALL_LIMIT_S)
            except TimeoutError:
                tally.failed[f"{kind}: no end within {CALL_LIMIT_S:g} s"] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def history(db: Path) -> Counter[str]:
    """Finished-call rows per call_id in the supervisor's SQLite file (read-only)."""
    if not db.exists():
        return Counter()
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        rows = conn.execute("SELECT call_id FROM calls WHERE ended_at IS NOT NULL").fetchall()
    return Counter(row[0] for row in rows)


async def soak(seconds: float, concurrency: int, seed: int, workdir: Path) -> dict[str, Any]:
    bridge, supervisor, tokens = start_services(workdir)
    db = workdir / "dashboard-state" / "xswarm.db"
    ws_url = f"ws://127.0.0.1:{bridge.port}"
    watcher = ControlWatcher(ws_url + "/control", tokens["XSWARM_CONTROL_TOKEN"])
    try:
        await watcher.start()
        await asyncio.wait_for(watcher.ready.wait(), 10)
        await asyncio.sleep(1.0)  # let the supervisor connect before the baseline
        before = {
            "bridge": bridge.usage(),
            "supervisor": supervisor.usage(),
            "history": sum(history(db).values()),
        }
        tally = Tally()
        began = time.monotonic()
        await churn(ws_url, seconds, concurrency, seed, tally)
        elapsed = time.monotonic() - began
        settle = time.monotonic() + 30
        while time.monotonic() < settle:  # calls the bridge is still closing, rows still queued
            rows = history(db)
            if watcher.open_calls() == 0 and all(rows[c] for c in watcher.started):
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)
        rows = history(db)
        after = {
            "bridge": bridge.usage(),
            "supervisor": supervisor.usage(),
            "history": sum(rows.values()),
        }
    finally:
        await watcher.stop()
        supervisor.stop()
        bridge.stop()
    by_sid: Counter[str] = Counter()
    for event in watcher.started.values():
        if isinstance(event.get("stream_sid"), str):
            by_sid[event["stream_sid"]] += 1
    problems = {
        "calls without exactly one call_ended": sorted(
            c for c in watcher.started if watcher.ended[c] != 1
        ),
        "calls started more than once": sorted(
            c for c, n in watcher.started_count.items() if n != 1
        ),
        "call_ended for a call never started": sorted(
            c for c in watcher.ended if c not in watcher.started
        ),
        "calls without exactly one history row": sorted(c for c in watcher.started if rows[c] != 1),
        "twilio calls not started exactly once": sorted(
            s for s in tally.stream_sids if by_sid[s] != 1
        ),
    }
    return {
        "seconds": round(elapsed, 1),
        "concurrency": concurrency,
        "seed": seed,
        "placed": dict(tally.placed),
        "placed_total": sum(tally.placed.values()),
        "failed": dict(tally.failed),
        "abuse_close_codes": dict(tally.close_codes),
        "abuse_kept_open": dict(tally.kept_open),
        "bridge_calls_started": len(watcher.started),
        "end_reasons": dict(watcher.reasons),
        "before": before,
        "after": after,
        "problems": {
            name: ids[:5] + ([f"… {len(ids) - 5} more"] if len(ids) > 5 else [])
            for name, ids in problems.items()
            if ids
        },
        "verdict": "FAIL" if any(problems.values()) else "PASS",
    }


def _mb(value: int) -> str:
    return f"{value / 1e6:.1f} MB"


def print_report(report: dict[str, Any]) -> None:
    print(
        f"soak: {report['seconds']} s, concurrency {report['concurrency']}, seed {report['seed']}"
    )
    print(f"calls placed: {report['placed_total']} {report['placed']}")
    print(f"client-side failures: {report['failed'] or 'none'}")
    print(f"abusive calls closed by the bridge (kind, code): {report['abuse_close_codes']}")
    kept = report["abuse_kept_open"]
    print(f"abusive calls still open after {CLOSE_WAIT_S:g} s (hung up by us): {kept or 'none'}")
    started, reasons = report["bridge_calls_started"], report["end_reasons"]
    print(f"calls the bridge started: {started}; end reasons {reasons}")
    for name in ("bridge", "supervisor"):
        a, b = report["before"][name], report["after"][name]
        print(f"{name:>10}: RSS {_mb(a['rss'])} -> {_mb(b['rss'])}, fds {a['fds']} -> {b['fds']}")
    print(f"   history: {report['before']['history']} -> {report['after']['history']} rows")
    print("asyncio tasks: not reported (neither service exposes a count)")
    for name, ids in report["problems"].items():
        print(f"PROBLEM {name}: {ids}")
    print(f"verdict: {report['verdict']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS or not 1 <= args.concurrency <= MAX_CONCURRENCY:
        parser.error(
            f"--seconds must be 0 to {MAX_SECONDS} and --concurrency 1 to {MAX_CONCURRENCY}"
        )
    with tempfile.TemporaryDirectory(prefix="xswarm-soak-") as folder:
        report = asyncio.run(soak(args.seconds, args.concurrency, args.seed, Path(folder)))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0 if report["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
