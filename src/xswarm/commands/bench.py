"""``xswarm bench``: N concurrent real-time phone calls (Twilio, Telnyx, Plivo, Exotel)
against a running bridge.

Prints what decides how many calls one bridge can carry: frame round-trip percentiles,
frames lost, the bridge's own late frames and CPU per call-second (both read from its
/metrics before and after), and the bench's own CPU, to show it was not the limit.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from xswarm.client.bench import (
    MAX_CALLS,
    MAX_SECONDS,
    Bench,
    raise_open_files_limit,
    report_lines,
    require_loopback,
    tone,
)
from xswarm.client.carriers import CARRIERS
from xswarm.client.common import (
    DEFAULT_URL,
    SAMPLE_WAV,
    ClientError,
    call_url,
    caller_voice,
    client_ssl,
)


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
@click.option(
    "--transport", type=click.Choice(["twilio", *CARRIERS]), default="twilio", show_default=True
)
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
@click.option(
    "--aligned",
    is_flag=True,
    help="measure by content: send seeded noise, match each reply to what was sent, report "
    "each frame's first-sample latency and the frames that never came back (replaces --wav)",
)
@click.option(
    "--jitter-ms",
    type=click.FloatRange(0, 1000),
    default=0.0,
    show_default=True,
    help="network jitter to inject: each frame leaves 0 to 2 x this after its 20 ms slot "
    "(+- this around a fixed delay), in order",
)
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="for wss://: trust this PEM CA (or self-signed certificate) instead of the system's",
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
    aligned: bool,
    jitter_ms: float,
    ca_file: Path | None,
    as_json: bool,
) -> None:
    """Run N concurrent real-time calls against a bridge and print latency, loss and CPU."""
    target = call_url(url, transport)
    require_loopback(target)
    raise_open_files_limit(calls)
    voice = caller_voice(wav_path, 8000) if wav_path is not None else tone()
    if not as_json:
        click.echo(
            f"bench: {calls} calls x {seconds:g} s against {target}, ramp {ramp:g} s, "
            f"{phases} phases"
        )
    bench = Bench(
        target,
        calls,
        seconds,
        voice,
        ramp_seconds=ramp,
        grace_seconds=grace,
        phases=phases,
        aligned=aligned,
        tls=client_ssl(ca_file),
        carrier=CARRIERS.get(transport),
        jitter_s=jitter_ms / 1000,
    )
    report = asyncio.run(bench.run())
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        for line in report_lines(report):
            click.echo(line)
    if report.connected == 0:
        reason = bench.first_failure or "every call was refused"
        raise ClientError(f"no call connected: {reason}")
