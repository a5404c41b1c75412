"""What the endpoints need from the bridge, and what the bridge needs from a call session.

Transports (``twilio_media``, ``moshi_chat``), ``session`` and ``control`` depend on these
protocols only, never on the objects that implement them, so the busiest couplings in the
bridge are checked by mypy and the modules form no import circle: the registry implements
``CallHost``, each ``CallSession`` is a ``CallPeer``, the top ``Bridge`` is a ``ControlHost``.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from aiohttp import web

from xswarm.bridge.call import Call
from xswarm.bridge.events import EventHub
from xswarm.config import Config
from xswarm.engine.base import Engine
from xswarm.protocol import control


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a new call is not admitted: the HTTP status (503, 429 per source) at its upgrade."""

    reason: str
    retry_after: int
    status: int = 503


class CallPeer(Protocol):
    """One call as the registry and the engine loop see it: its state and its transport."""

    @property
    def call(self) -> Call: ...

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """Stamps each record with the call's id (a ``xswarm.logs.CallLogger``)."""

    async def deliver(self, pcm: np.ndarray | None, text: str, latency_s: float | None) -> None:
        """Engine output for this call, in the peer's format."""

    async def flush(self, now: float) -> None:
        """Paced output due at ``now`` (``Call.output``)."""

    async def hangup(self, end_reason: str, code: int = 1000, message: str = "") -> None:
        """Close the peer's socket cleanly and record why."""


class CallHost(Protocol):
    """The bridge as one call session sees it."""

    @property
    def engine(self) -> Engine: ...

    @property
    def config(self) -> Config:
        """The config as it is now (a reload may change it between calls)."""

    def admit(self, source: str = "unknown") -> Refusal | None:
        """Hold a place for a new call from ``source`` (see ``budgets.call_source``), or say
        why not; a held place is freed by release(source)."""

    def release(self, source: str = "unknown") -> None: ...

    def count_abuse(self, budget: str) -> None:
        """A call closed for going over one of its budgets (``budgets.BUDGETS``), for /metrics."""

    def count_rejection(self, reason: str) -> None:
        """An upgrade refused before admission (``auth``), for /metrics."""

    def count_unknown_event(self) -> None:
        """A Twilio event of a kind this version does not know, for /metrics."""

    def start_call(self, peer: CallPeer) -> bool:
        """Attach the call to the engine and announce it; False when no engine slot is free."""

    def end_call(self, peer: CallPeer, reason: str) -> bool:
        """Record the call's end (once); False when its end was already recorded."""

    async def serve_arrived(self, call: Call) -> None:
        """Caller audio was pushed: step the call now if the engine steps on arrival."""

    def publish(self, event: control.Event) -> None:
        """An event for the control subscribers."""

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine in the background, holding a reference until it finishes."""


class ControlHost(Protocol):
    """The bridge as ``WS /control`` (the supervisor's connection) sees it."""

    @property
    def engine(self) -> Engine: ...

    @property
    def config(self) -> Config: ...

    @property
    def hub(self) -> EventHub: ...

    @property
    def max_calls(self) -> int: ...

    def snapshot(self) -> control.Snapshot:
        """The live calls and the instance status, for a new subscriber."""

    def queue_suggestion(
        self, call_id: str | None, text: Any, priority: Any = "normal", request_id: Any = None
    ) -> None:
        """Queue a suggestion; the answer comes as a suggestion_applied/rejected event."""

    async def hangup(self, call_id: Any) -> str | None:
        """Close a call for the operator; returns a problem, or None when done."""

    def cancel_suggestion(self, call_id: str | None) -> str | None:
        """Drop a call's queued and unspoken suggestions; returns a problem, or None."""


CALL_HOST: web.AppKey[CallHost] = web.AppKey("call_host")
CONTROL_HOST: web.AppKey[ControlHost] = web.AppKey("control_host")
