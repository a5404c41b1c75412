"""One simulated Twilio phone call: ``carrier_call``'s caller, speaking Media Streams.

Twilio is one carrier among the others (``carriers.TWILIO``); what is its own is that the
upgrade carries X-Twilio-Signature, over ``signed_url`` when the bridge sees another URL
than the one dialled (behind a proxy).
"""

from __future__ import annotations

import ssl

import numpy as np

from xswarm.audio import wire
from xswarm.client.carrier_call import CallResult, place_carrier_call, wire_frames
from xswarm.client.carriers import TWILIO


def mulaw_frames(pcm_8k: np.ndarray) -> list[bytes]:
    """The caller's audio as 160-byte frames; the last one padded with silence."""
    return wire_frames(pcm_8k, wire.PCMU)


async def place_twilio_call(
    url: str,
    pcm_8k: np.ndarray,
    tail_seconds: float = 1.0,
    dtmf: str = "",
    signed_url: str | None = None,
    connect_timeout: float = 10.0,
    tls: ssl.SSLContext | bool = True,
) -> CallResult:
    """Play ``pcm_8k`` as the caller; return what came back and when."""
    return await place_carrier_call(
        url,
        TWILIO,
        pcm_8k,
        tail_seconds,
        dtmf,
        connect_timeout=connect_timeout,
        signed_url=signed_url,
        tls=tls,
    )
