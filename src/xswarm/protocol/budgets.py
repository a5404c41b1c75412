"""What one call may cost the bridge, sans-I/O: input bytes, decoded audio, messages.

A call's peer is a stranger until proven otherwise. Without budgets one unauthenticated
/api/chat socket grew the bridge's memory without bound (an Opus packet continued over Ogg
pages forever is buffered by the decoder) and a 5 KB message could decode to 4 s of audio,
so a few such messages a second starved the event loop every call shares. ``InputBudget``
is told what arrives and what it decoded to; the first budget exceeded is returned as an
``Exceeded``, which the transport turns into a close with reason ``abuse``. The defaults of
``[voice.bridge]`` are far above what a real call sends, so only abuse trips them.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from xswarm.protocol.auth import TokenBucket, throttle_key

CLOSE_POLICY = 1008  # WebSocket close code: policy violation
CLOSE_TOO_BIG = 1009  # WebSocket close code: message too big

# The budgets, as /metrics labels them.
BUDGETS = ("buffered_bytes", "audio_rate", "message_rate")
# How many seconds of the message rate a peer may send at once (a network stall's backlog).
MESSAGE_BURST_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Limits:
    """The budgets of one call (``[voice.bridge]`` keys in parentheses)."""

    max_buffered_bytes: int  # input bytes accepted without any audio out (max_buffered_input_bytes)
    audio_speed: float  # decoded seconds of audio per second, sustained (max_audio_speed)
    audio_burst_seconds: float  # decoded seconds a peer may be ahead of that (audio_burst_seconds)
    messages_per_second: float  # messages per second, sustained (max_messages_per_second)


@dataclass(frozen=True, slots=True)
class Exceeded:
    """A budget a peer went over: its name (a metrics label), the close code and the why."""

    budget: str
    close_code: int
    detail: str


class InputBudget:
    """One call's input budgets; feed it every message and every piece of decoded audio."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.bytes_without_audio = 0
        self._messages = TokenBucket(
            limits.messages_per_second, max(1.0, limits.messages_per_second * MESSAGE_BURST_SECONDS)
        )
        self._audio = TokenBucket(limits.audio_speed, limits.audio_burst_seconds)

    def message(self, size: int, now: float) -> Exceeded | None:
        """A message of ``size`` bytes arrived; check it before it is parsed or buffered."""
        if not self._messages.spend(1.0, now):
            return Exceeded(
                "message_rate",
                CLOSE_POLICY,
                f"abuse: over {self.limits.messages_per_second:g} messages a second",
            )
        self.bytes_without_audio += size
        if self.bytes_without_audio > self.limits.max_buffered_bytes:
            return Exceeded(
                "buffered_bytes",
                CLOSE_TOO_BIG,
                f"abuse: {self.bytes_without_audio} bytes sent without a whole audio packet "
                f"(limit {self.limits.max_buffered_bytes})",
            )
        return None

    def audio(self, seconds: float, now: float) -> Exceeded | None:
        """The last message carried ``seconds`` of audio (0 for a frame dropped unheard)."""
        self.bytes_without_audio = 0
        if seconds > 0 and not self._audio.spend(seconds, now):
            return Exceeded(
                "audio_rate",
                CLOSE_POLICY,
                f"abuse: audio faster than {self.limits.audio_speed:g}x real time",
            )
        return None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """``[voice.bridge] trusted_proxies`` as networks (the config has checked each entry).

    Kept per list: every upgrade asks twice (the caller's source and its shown address),
    and the list only changes on reload.
    """
    return _networks(tuple(entries))


@functools.lru_cache(maxsize=16)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _is_trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in proxies)


def forwarded_client(
    peer: str | None, forwarded_for: Sequence[str], proxies: Sequence[Network]
) -> str | None:
    """The caller a trusted proxy names in ``X-Forwarded-For``; None when the peer is not
    one of ``proxies`` or names nobody.

    The header is read from the right: each proxy appends the address it saw, so the first
    entry that is not one of ours is the client (whatever the client wrote further left is
    its own invention).
    """
    if peer is None or not _is_trusted(peer, proxies):
        return None
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, proxies):
            return hop.strip("[]")
    return hops[0].strip("[]") if hops else None


def call_source(peer: str | None, forwarded_for: Sequence[str], proxies: Sequence[Network]) -> str:
    """Whom a call counts against for ``max_calls_per_source``: an IPv4 address or IPv6 /64,
    of the caller behind a trusted proxy (``forwarded_client``), else of the peer."""
    client = forwarded_client(peer, forwarded_for, proxies)
    return throttle_key(client if client is not None else peer)
