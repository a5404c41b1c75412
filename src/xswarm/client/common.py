"""What `xswarm call` and `xswarm bench` share: URLs, refusals, percentiles, /metrics.

Kept free of sockets where it can be (URL rules, the Prometheus text parser, the
statistics), so those parts are tested with plain calls.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import numpy as np

from xswarm.audio.wav import read_wav
from xswarm.errors import XswarmError

DEFAULT_URL = "ws://127.0.0.1:9998"
SAMPLE_WAV = Path(__file__).resolve().parents[3] / "samples" / "hello.wav"
TRANSPORT_PATHS = {
    "twilio": "/twilio",
    "moshi": "/api/chat",
    "telnyx": "/telnyx",
    "plivo": "/plivo",
    "exotel": "/exotel",
}


class FrameTimes:
    """When each frame went out and when its reply came back, for a call result that keeps
    ``sent_at`` and ``received_at``: the round trips and the first audio's delay."""

    sent_at: list[float]
    received_at: list[float]

    def round_trips(self) -> list[float]:
        """The k-th frame back against the k-th frame sent (exact with the echo engine)."""
        return [back - out for out, back in zip(self.sent_at, self.received_at, strict=False)]

    def time_to_first_audio(self) -> float | None:
        if not self.sent_at or not self.received_at:
            return None
        return self.received_at[0] - self.sent_at[0]


class ClientError(XswarmError):
    """The simulated caller could not do its job; the message says why and what to do."""


def call_url(url: str, transport: str) -> str:
    """The WebSocket URL for ``transport``: a bare host:port gets the transport's path."""
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ClientError(f"{url}: the URL must start with ws:// or wss://")
    if not parts.hostname:
        raise ClientError(f"{url}: the URL has no host")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ClientError(f"{url}: the port is not a number from 1 to 65535") from None
    path = parts.path if parts.path not in ("", "/") else TRANSPORT_PATHS[transport]
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def client_ssl(ca_file: Path | None) -> ssl.SSLContext | bool:
    """How a wss:// connection checks the bridge's certificate: against ``ca_file`` (a private
    CA, a self-signed certificate) when given, else the system's CAs (aiohttp's default)."""
    if ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ClientError(f"--ca-file {ca_file}: not a readable PEM certificate ({exc})") from None


def caller_voice(path: Path, rate: int) -> np.ndarray:
    """The caller's voice from any PCM WAV, at ``rate``; a WAV we cannot use is the caller's
    mistake, so it is reported as one line, not a traceback."""
    try:
        return read_wav(path, rate)
    except ValueError as exc:
        raise ClientError(str(exc)) from None


def http_url(ws_url: str, path: str) -> str:
    """The bridge's plain HTTP address for ``path`` (``/metrics``), from a call URL."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def describe_failure(url: str, exc: BaseException) -> str:
    """One line for a connection that did not become a call, naming the likely fix."""
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        retry = exc.headers.get("Retry-After") if exc.headers else None
        line = f"{url}: upgrade refused: HTTP {exc.status} {exc.message}"
        return line + (f" (Retry-After: {retry} s)" if retry else "")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = getattr(exc.certificate_error, "verify_message", None) or exc.certificate_error
        return (
            f"{url}: the bridge's certificate is not trusted ({reason}); for a private CA or a "
            "self-signed certificate pass --ca-file CA.pem"
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"{url}: TLS handshake failed: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        if isinstance(error, socket.gaierror):
            return f"cannot reach {url}: cannot resolve the host ({error.strerror})"
        cause = os.strerror(error.errno) if error and error.errno else str(exc)
        return f"cannot reach {url}: {cause.lower()}; is xswarm-voice running? `make run`"
    if isinstance(exc, TimeoutError):
        return f"cannot reach {url}: no answer in time; is the bridge overloaded or firewalled?"
    if isinstance(exc, aiohttp.ClientError):
        return f"{url}: {type(exc).__name__}: {exc}"
    return f"{url}: {exc}"


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation): a value that really occurred."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Latency:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        if not seconds:
            return cls(0, math.nan, math.nan, math.nan)
        ordered = sorted(seconds)
        return cls(
            len(ordered),
            percentile(ordered, 0.50) * 1000,
            percentile(ordered, 0.99) * 1000,
            ordered[-1] * 1000,
        )


def metric_total(exposition: str, name: str) -> float | None:
    """The sum of every sample of ``name`` (all label sets) in Prometheus text format.

    None when the metric is absent, so a missing metric is reported as unknown, not zero.
    """
    total: float | None = None
    for line in exposition.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        rest = line[len(name) :]
        if rest[:1] == "{":
            close = _end_of_labels(rest)
            if close < 0:
                continue
            rest = rest[close + 1 :]
        elif rest[:1] not in (" ", "\t"):
            continue  # a longer name that starts with ours
        fields = rest.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        total = value if total is None else total + value
    return total


def _end_of_labels(text: str) -> int:
    """Index of the ``}`` closing a label set, skipping braces inside quoted values."""
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = quoted
        elif char == '"':
            quoted = not quoted
        elif char == "}" and not quoted:
            return index
    return -1


async def sleep_until(deadline: float) -> None:
    """Sleep until the event loop's clock reads ``deadline``: pacing by deadlines, so the
    time spent sending never accumulates into drift as sleeping a fixed period would."""
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


async def listen_for_tail(last_due: float, tail_seconds: float) -> None:
    """Sleep out a call's ``--tail``: ``tail_seconds`` after its last frame was due, or after
    now if sending fell behind that, so a caller on a loaded host still hears its tail whole."""
    await sleep_until(max(asyncio.get_running_loop().time(), last_due) + tail_seconds)


def format_ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f} ms"
