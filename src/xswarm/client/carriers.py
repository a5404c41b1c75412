"""The carriers a simulated caller can be: how each one's stream is spoken and signed.

``xswarm call`` and ``xswarm bench`` play Telnyx, Plivo or Exotel by looking the carrier up
in ``CARRIERS``, and ``twilio_call`` plays ``TWILIO``: its caller side (``Caller`` in its
``xswarm.protocol`` module: the start, media, DTMF, mark and stop it sends), how to read what
the bridge sends back, its audio codec and the headers its upgrade carries. One caller,
``carrier_call``, places them all. (``xswarm bench`` keeps its own hand-tuned Twilio load.)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from xswarm.audio import wire
from xswarm.protocol import exotel, plivo, telnyx, twilio
from xswarm.protocol import media_stream as ms


class CallerSide(Protocol):
    """What a carrier sends on one stream (each ``Caller`` in protocol/)."""

    stream_id: str
    call_id: str

    def opening(self) -> list[str]: ...

    def media(self, sequence: int, chunk: int, timestamp_ms: int, payload: bytes) -> str: ...

    def dtmf(self, sequence: int, digit: str) -> str: ...

    def played(self, sequence: int, name: str) -> str: ...

    def stop(self, sequence: int) -> str: ...


class CallerFactory(Protocol):
    """A new stream in one encoding, at 8 kHz unless the carrier offers wideband."""

    def __call__(self, encoding: str, sample_rate: int = wire.SAMPLE_RATE) -> CallerSide: ...


def carrier_token_headers(url: str) -> dict[str, str]:
    """``XSWARM_CARRIER_TOKEN`` as a Bearer token (the bridge takes Telnyx's own header too)."""
    token = os.environ.get(ms.CARRIER_TOKEN_ENV)
    return {"Authorization": f"Bearer {token}"} if token else {}


def twilio_headers(url: str) -> dict[str, str]:
    """X-Twilio-Signature over ``url`` (the URL as the bridge sees it) with TWILIO_AUTH_TOKEN."""
    token = os.environ.get("TWILIO_AUTH_TOKEN")
    return {"X-Twilio-Signature": twilio.expected_signature(token, url, {})} if token else {}


@dataclass(frozen=True, slots=True)
class Carrier:
    name: str
    caller: CallerFactory
    parse_outbound: Callable[[str | bytes], ms.OutEvent]
    encodings: tuple[str, ...]  # the first is the default
    sample_rates: Mapping[str, tuple[int, ...]]  # encoding -> the rates a stream may ask for
    # The upgrade's auth headers, given the URL a carrier that signs it signs.
    headers: Callable[[str], dict[str, str]] = carrier_token_headers

    def codec(self, encoding: str | None) -> wire.WireCodec:
        chosen = encoding or self.encodings[0]
        if chosen not in self.encodings:
            raise ValueError(
                f"{self.name} streams carry {' or '.join(self.encodings)}, not {chosen}"
            )
        return wire.CODECS[chosen]

    def check_rate(self, encoding: str, sample_rate: int) -> None:
        rates = self.sample_rates[encoding]
        if sample_rate not in rates:
            offered = " or ".join(str(rate) for rate in rates)
            raise ValueError(f"{self.name} streams {encoding} at {offered} Hz, not {sample_rate}")


def _twilio(encoding: str, sample_rate: int = wire.SAMPLE_RATE) -> CallerSide:
    return twilio.Caller()


def _telnyx(encoding: str, sample_rate: int = wire.SAMPLE_RATE) -> CallerSide:
    return telnyx.Caller(encoding)


def _exotel(encoding: str, sample_rate: int = wire.SAMPLE_RATE) -> CallerSide:
    return exotel.Caller(encoding, sample_rate=sample_rate)


CARRIERS = {
    "telnyx": Carrier(
        "telnyx",
        _telnyx,
        telnyx.parse_outbound,
        ("PCMU", "PCMA"),
        {"PCMU": (8000,), "PCMA": (8000,)},
    ),
    "plivo": Carrier(
        "plivo", plivo.Caller, plivo.parse_outbound, ("PCMU", "L16"), plivo.SAMPLE_RATES
    ),
    "exotel": Carrier(
        "exotel", _exotel, exotel.parse_outbound, ("L16",), {"L16": exotel.SAMPLE_RATES}
    ),
}

TWILIO = Carrier(
    "twilio", _twilio, twilio.parse_outbound, ("PCMU",), {"PCMU": (8000,)}, twilio_headers
)
