"""How much room the fleet has: slots, calls and free slots per host and in total (pure).

One sum for the supervisor's ``/api/instances?totals=1`` and the TUI's instances panel, so
that both show the same figures. An operator asks "can the fleet take another hundred calls,
and where?", so instances are grouped by the host of their control URL: several instances of
one GPU host share its fate (power, network, an upgrade).

What counts: calls as each instance last reported them; slots of the instances that serve
(``up`` or ``draining``); free slots only of those that admit calls (``up``: a draining
instance refuses new calls); ``full``: up with no free slot; refusals in the last minute as
the supervisor counted them (None when no instance reports them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from xswarm.protocol.values import Encodable

SERVING_STATES = ("up", "draining")


class Reporting(Protocol):
    """What the sum reads of an instance (``InstanceInfo`` and the TUI's view both fit)."""

    @property
    def url(self) -> str | None: ...
    @property
    def state(self) -> str | None: ...
    @property
    def active_calls(self) -> int | None: ...
    @property
    def max_concurrent_calls(self) -> int | None: ...
    @property
    def refusals_last_minute(self) -> int | None: ...
    @property
    def refusals_total(self) -> int | None: ...


def host_of(url: str | None) -> str:
    """The host an instance runs on, from its control URL (``""`` when it has none)."""
    if not url:
        return ""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


@dataclass
class Capacity(Encodable):
    """The sum over a group of instances: one host, or the whole fleet."""

    instances: int = 0
    up: int = 0
    slots: int = 0
    calls: int = 0
    free: int = 0
    full: int = 0
    refusals_last_minute: int | None = None
    refusals_total: int | None = None

    def add(self, instance: Reporting) -> None:
        state = instance.state
        self.instances += 1
        self.up += state in SERVING_STATES
        self.calls += instance.active_calls or 0
        limit = instance.max_concurrent_calls
        if limit is not None and state in SERVING_STATES:
            self.slots += limit
        if limit is not None and state == "up":
            free = max(0, limit - (instance.active_calls or 0))
            self.free += free
            self.full += free == 0
        if instance.refusals_last_minute is not None:
            self.refusals_last_minute = (
                self.refusals_last_minute or 0
            ) + instance.refusals_last_minute
        if instance.refusals_total is not None:
            self.refusals_total = (self.refusals_total or 0) + instance.refusals_total


@dataclass
class FleetCapacity:
    """Per host (in the order hosts first appear) and in total."""

    hosts: dict[str, Capacity]
    total: Capacity

    def encode(self) -> dict[str, Any]:
        return {
            "hosts": [{"host": host} | figures.encode() for host, figures in self.hosts.items()],
            "total": self.total.encode(),
        }


def fleet_capacity(instances: Iterable[Reporting]) -> FleetCapacity:
    hosts: dict[str, Capacity] = {}
    total = Capacity()
    for instance in instances:
        hosts.setdefault(host_of(instance.url), Capacity()).add(instance)
        total.add(instance)
    return FleetCapacity(hosts, total)
