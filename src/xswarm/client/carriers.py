"""The carriers a simulated caller can be, as one table: how each one's stream is spoken.

``xswarm call`` and ``xswarm bench`` play Telnyx, Plivo or Exotel by looking the carrier up
here: its caller side (``Caller`` in its ``xswarm.protocol`` module: the start, media, DTMF,
mark and stop it sends), how to read what the bridge sends back, and its audio codec.
Twilio keeps its own hand-tuned client (``twilio_call``); the rest share ``carrier_call``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from xswarm.audio import wire
from xswarm.protocol import exotel, plivo, telnyx
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


@dataclass(frozen=True, slots=True)
class Carrier:
    name: str
    caller: Callable[[str], CallerSide]  # encoding -> a new stream
    parse_outbound: Callable[[str | bytes], ms.OutEvent]
    encodings: tuple[str, ...]  # the first is the default

    def codec(self, encoding: str | None) -> wire.WireCodec:
        chosen = encoding or self.encodings[0]
        if chosen not in self.encodings:
            raise ValueError(
                f"{self.name} streams carry {' or '.join(self.encodings)}, not {chosen}"
            )
        return wire.CODECS[chosen]


CARRIERS = {
    "telnyx": Carrier("telnyx", telnyx.Caller, telnyx.parse_outbound, ("PCMU", "PCMA")),
    "plivo": Carrier("plivo", plivo.Caller, plivo.parse_outbound, ("PCMU", "L16")),
    "exotel": Carrier("exotel", exotel.Caller, exotel.parse_outbound, ("L16",)),
}
