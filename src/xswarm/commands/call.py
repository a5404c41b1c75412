"""``xswarm call``: place one simulated call from a WAV file and report what came back.

The quickest end-to-end check of a bridge: the WAV is the caller's voice, sent in real time
over the Twilio, Telnyx, Plivo, Exotel or Moshi protocol; the reply is saved to a WAV and the
latency printed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
import numpy as np

from xswarm import config as config_module
from xswarm.audio.levels import dbfs
from xswarm.audio.wav import write_wav
from xswarm.client import dial
from xswarm.client.carrier_call import CallResult, place_carrier_call
from xswarm.client.carriers import CARRIERS
from xswarm.client.common import (
    DEFAULT_URL,
    SAMPLE_WAV,
    ClientError,
    Latency,
    call_url,
    caller_voice,
    client_ssl,
    format_ms,
)
from xswarm.client.moshi_call import MoshiCallResult, place_moshi_call
from xswarm.client.twilio_call import place_twilio_call
from xswarm.commands.options import server_config_option
from xswarm.ops import twilio_console
from xswarm.protocol import twilio

NORMAL_CLOSES = (None, 1000, 1001)


@click.command(name="call")
@click.option(
    "--wav",
    "wav_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=SAMPLE_WAV if SAMPLE_WAV.exists() else None,
    required=not SAMPLE_WAV.exists(),
    show_default=True,
    help="the caller's voice (any PCM WAV)",
)
@click.option(
    "--transport",
    type=click.Choice(["twilio", *CARRIERS, "moshi"]),
    default="twilio",
    show_default=True,
)
@click.option(
    "--codec",
    type=click.Choice(["PCMU", "PCMA", "L16"], case_sensitive=False),
    default=None,
    help="the carrier stream's audio (Telnyx: PCMU or PCMA; Plivo: PCMU or L16; Exotel: L16); "
    "default: the carrier's first",
)
@click.option(
    "--sample-rate",
    type=click.Choice(["8000", "16000", "24000"]),
    default="8000",
    show_default=True,
    help="a wideband carrier stream's rate (Exotel: 8000, 16000 or 24000; Plivo L16: 8000 or "
    "16000); telephone audio is 8000",
)
@click.option("--url", default=DEFAULT_URL, show_default=True, help="the bridge; the path is added")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("reply.wav"),
    show_default=True,
    help="where to save what came back",
)
@click.option(
    "--tail",
    type=click.FloatRange(0, 60),
    default=1.0,
    show_default=True,
    help="seconds to keep listening after the last frame is sent",
)
@click.option("--dtmf", default="", help="keypad digits to press during the call (phone carriers)")
@click.option(
    "--signed-url",
    default=None,
    help="the URL Twilio dials, signed for X-Twilio-Signature when TWILIO_AUTH_TOKEN is set "
    "(the bridge's public_url, e.g. wss://voice.example.com); default: the --url called",
)
@click.option(
    "--dial",
    "dial_to",
    default=None,
    metavar="+E164",
    help="instead: have Twilio dial this phone number and connect it to the bridge "
    "(TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN from the environment)",
)
@click.option("--from", "dial_from", default=None, metavar="+E164", help="with --dial: your number")
@click.option(
    "--public-url",
    default=None,
    help="with --dial: where Twilio reaches the bridge (default: [voice.bridge] public_url)",
)
@click.option(
    "--twilio-api",
    default=dial.TWILIO_API,
    show_default=True,
    help="with --dial: Twilio's REST API base URL (a region's, or a test double)",
)
@server_config_option()
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="for wss://: trust this PEM CA (or self-signed certificate) instead of the system's",
)
def command(
    wav_path: Path,
    transport: str,
    codec: str | None,
    sample_rate: str,
    url: str,
    out: Path,
    tail: float,
    dtmf: str,
    signed_url: str | None,
    dial_to: str | None,
    dial_from: str | None,
    public_url: str | None,
    twilio_api: str,
    config_path: Path | None,
    ca_file: Path | None,
) -> None:
    """Place one simulated call from a WAV file; save the reply and print latency.

    With --dial and --from, Twilio places a real phone call to that number instead, answered
    by this bridge's /twilio/voice webhook."""
    if dial_to is not None or dial_from is not None:
        if not (dial_to and dial_from):
            raise click.UsageError("--dial and --from go together: the callee and your number")
        config = config_module.load(config_path)
        bridge_url = twilio_console.public_url_of(config, public_url)
        placed = dial.dial(dial_to, dial_from, bridge_url, api_base=twilio_api)
        click.echo(f"Twilio call {placed.sid}: {placed.status}, {placed.from_} -> {placed.to}")
        click.echo(f"answered by {twilio.webhook_url(bridge_url, twilio.VOICE_PATH)}")
        return
    target = call_url(url, transport)
    signed = call_url(signed_url, transport) if signed_url else None
    bad_digits = set(dtmf) - set("0123456789*#ABCD")
    if bad_digits:
        raise click.BadParameter(
            f"{''.join(sorted(bad_digits))!r} are not keypad digits", param_hint="--dtmf"
        )
    tls = client_ssl(ca_file)
    carrier = CARRIERS.get(transport)
    stream_rate = int(sample_rate)
    if carrier is not None:
        try:
            chosen = carrier.codec(codec.upper() if codec else None)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--codec") from None
        try:
            carrier.check_rate(chosen.name, stream_rate)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--sample-rate") from None
    elif stream_rate != 8000:
        raise click.BadParameter(
            f"{transport} streams have a fixed rate; --sample-rate is for the carriers that "
            "offer wideband (exotel, plivo with --codec L16)",
            param_hint="--sample-rate",
        )
    rate = 24000 if transport == "moshi" else stream_rate
    voice = caller_voice(wav_path, rate)
    click.echo(f"calling {target} ({transport}) with {wav_path} ({len(voice) / rate:.2f} s)")
    result: CallResult | MoshiCallResult
    if transport == "twilio":
        result = asyncio.run(place_twilio_call(target, voice, tail, dtmf, signed, tls=tls))
        unit = "frames of 20 ms"
    elif carrier is not None:
        encoding = codec.upper() if codec else None
        result = asyncio.run(
            place_carrier_call(target, carrier, voice, tail, dtmf, encoding, sample_rate=rate)
        )
        unit = "frames of 20 ms"
    else:
        result = asyncio.run(place_moshi_call(target, voice, tail, on_text=_print_words, tls=tls))
        unit = "frames of 80 ms"
    reply = result.reply_pcm()
    write_wav(out, reply, rate)
    _report(result, unit, reply, voice, rate, out)
    if result.close_code not in NORMAL_CLOSES:
        raise ClientError(
            f"the bridge closed the call with {result.close_code} {result.close_reason!r}"
        )
    if not result.received_at:
        raise ClientError(f"{target}: the call connected but no audio came back")


def _print_words(words: str) -> None:
    click.echo(f"  text: {words}")


def _report(
    result: CallResult | MoshiCallResult,
    unit: str,
    reply: np.ndarray,
    voice: np.ndarray,
    rate: int,
    out: Path,
) -> None:
    first = result.time_to_first_audio()
    latency = Latency.of(result.round_trips())
    click.echo(f"frames sent:      {len(result.sent_at)} {unit}")
    click.echo(f"frames received:  {len(result.received_at)} {unit}")
    if isinstance(result, CallResult):
        click.echo(f"marks / clears:   {len(result.marks)} / {result.clears}")
    click.echo(f"first audio after {format_ms(first * 1000) if first is not None else 'n/a'}")
    click.echo(
        f"frame round trip: p50 {format_ms(latency.p50_ms)}, p99 {format_ms(latency.p99_ms)}, "
        f"max {format_ms(latency.max_ms)} over {latency.count} frames"
    )
    click.echo(f"levels:           sent {dbfs(voice):.1f} dBFS, received {dbfs(reply):.1f} dBFS")
    click.echo(f"reply saved to {out} ({len(reply) / rate:.2f} s at {rate} Hz)")
    if result.close_code not in NORMAL_CLOSES or result.close_reason:
        click.echo(f"closed by the bridge: {result.close_code} {result.close_reason}")
    for error in result.errors[:10]:
        click.echo(f"warning: {error}", err=True)
