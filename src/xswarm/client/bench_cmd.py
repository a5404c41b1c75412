"""`xswarm bench`: N concurrent real-time Twilio calls against a running bridge.

Prints what decides how many calls one bridge can carry: frame round-trip percentiles,
frames lost, the bridge's own late frames and CPU per call-second (both read from its
/metrics before and after), and the bench's own CPU, to show it was not the limit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import resource
import socket
from pathlib import Path
from urllib.parse import urlsplit

import click

from xswarm.audio.wav import read_wav
from xswarm.client.bench import MAX_CALLS, MAX_SECONDS, Bench, BenchReport
from xswarm.client.call_cmd import SAMPLE_WAV
from xswarm.client.common import DEFAULT_URL, ClientError, call_url


def require_loopback(url: str) -> None:
    """The bench opens hundreds of calls: it only ever aims at this machine."""
    host = urlsplit(url).hostname or ""
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise ClientError(f"{url}: cannot resolve {host!r}: {exc.strerror}") from None
    if not all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses):
        raise ClientError(
            f"{url}: xswarm bench only targets loopback (127.0.0.1, ::1, localhost); "
            "run it on the bridge's own machine"
        )


def raise_open_files_limit(calls: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = calls + 64
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise ClientError(
                f"{calls} calls need {needed} open files but the limit is {hard}; "
                f"raise it with `ulimit -n {needed}` or use fewer --calls"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def render(report: BenchReport) -> list[str]:
    def ms(value: float | None) -> str:
        return "n/a" if value is None or math.isnan(value) else f"{value:.1f}"

    def maybe(value: float | None, unit: str = "") -> str:
        return "n/a (no /metrics)" if value is None else f"{value:g}{unit}"

    refusals = ", ".join(f"{n} x {why}" for why, n in sorted(report.refusals.items()))
    early = ", ".join(f"{n} {why}" for why, n in sorted(report.closed_early.items()))
    rt = report.round_trip
    return [
        f"calls:            {report.connected} connected, {report.refused} refused"
        + (f" ({refusals})" if refusals else "")
        + f", {report.failed} failed"
        + (f"; ended early: {early}" if early else ""),
        f"frames:           {report.frames_sent} sent, {report.frames_received} received, "
        f"{report.lost_frames} lost",
        f"frame round trip: p50 {ms(rt.p50_ms)} ms, p99 {ms(rt.p99_ms)} ms, "
        f"max {ms(rt.max_ms)} ms over {rt.count} frames",
        f"late frames:      {maybe(report.late_frames)} (bridge's xswarm_late_frames_total); "
        f"dropped {maybe(report.dropped_frames)} (its backlog trimming)",
        f"bridge CPU:       {ms(report.bridge_cpu_ms_per_call_second)} ms per call-second",
        f"bench CPU:        {ms(report.bench_cpu_ms_per_call_second)} ms per call-second; "
        f"timer lag p99 {ms(report.timer_lag_p99_ms)} ms, max {ms(report.timer_lag_max_ms)} ms",
    ]


@click.command(name="bench")
@click.option(
    "--calls",
    type=click.IntRange(1, MAX_CALLS),
    default=10,
    show_default=True,
    help="concurrent calls",
)
@click.option(
    "--seconds",
    type=click.FloatRange(0.1, MAX_SECONDS),
    default=10.0,
    show_default=True,
    help="audio per call",
)
@click.option("--transport", type=click.Choice(["twilio"]), default="twilio", show_default=True)
@click.option("--url", default=DEFAULT_URL, show_default=True, help="the bridge (loopback only)")
@click.option(
    "--ramp",
    type=click.FloatRange(0, 60),
    default=2.0,
    show_default=True,
    help="seconds over which the calls connect",
)
@click.option(
    "--grace",
    type=click.FloatRange(0, 30),
    default=1.0,
    show_default=True,
    help="seconds to wait for the last replies before hanging up",
)
@click.option(
    "--phases",
    type=click.IntRange(1, 20),
    default=4,
    show_default=True,
    help="groups of calls sent at evenly spread offsets within each 20 ms, as independent "
    "callers are; 1 sends every call's frame at the same instant (worst case)",
)
@click.option(
    "--wav",
    "wav_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=SAMPLE_WAV if SAMPLE_WAV.exists() else None,
    help="caller's voice, looped  [default: the shipped sample, else a tone]",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def command(
    calls: int,
    seconds: float,
    transport: str,
    url: str,
    ramp: float,
    grace: float,
    phases: int,
    wav_path: Path | None,
    as_json: bool,
) -> None:
    """Run N concurrent real-time calls against a bridge and print latency, loss and CPU."""
    target = call_url(url, transport)
    require_loopback(target)
    raise_open_files_limit(calls)
    if wav_path is not None:
        try:
            voice = read_wav(wav_path, 8000)
        except ValueError as exc:
            raise ClientError(str(exc)) from None
    else:
        import numpy as np

        t = np.arange(8000) / 8000
        voice = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    if not as_json:
        click.echo(
            f"bench: {calls} calls x {seconds:g} s against {target}, ramp {ramp:g} s, "
            f"{phases} phases"
        )
    bench = Bench(
        target, calls, seconds, voice, ramp_seconds=ramp, grace_seconds=grace, phases=phases
    )
    report = asyncio.run(bench.run())
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        for line in render(report):
            click.echo(line)
    if report.connected == 0:
        reason = bench.first_failure or "every call was refused"
        raise ClientError(f"no call connected: {reason}")
