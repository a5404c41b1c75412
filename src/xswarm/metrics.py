"""Prometheus text exposition, by hand: counters, gauges and one histogram type are all we need.

Rendering is pure (``render`` takes values, returns text), so both services share it and the
tests read the output with a plain parser. Label values are escaped as the format requires.
"""

from __future__ import annotations

import bisect
import os
import resource
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import psutil


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items()) + "}"


@dataclass
class Histogram:
    """Cumulative buckets in seconds, Prometheus style."""

    buckets: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 1.0)
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> Iterable[str]:
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            cumulative += count
            yield f'{name}_bucket{{le="{bound:g}"}} {cumulative}'
        yield f'{name}_bucket{{le="+Inf"}} {self.count}'
        yield f"{name}_sum {self.total:.6f}"
        yield f"{name}_count {self.count}"


class Exposition:
    """Builds one scrape: ``metric(...)`` per family, then ``text()``."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def metric(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[Mapping[str, str], float]] | float,
    ) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        if isinstance(samples, int | float):
            samples = [({}, samples)]
        for labels, value in samples:
            self._lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(self, name: str, help_text: str, histogram: Histogram) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} histogram")
        self._lines.extend(histogram.lines(name))

    def process(self, started: float) -> None:
        """The standard process_* families, so common dashboards work unchanged."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.metric(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent in seconds.",
            usage.ru_utime + usage.ru_stime,
        )
        self.metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            psutil.Process(os.getpid()).memory_info().rss,
        )
        self.metric("process_start_time_seconds", "gauge", "Start time since the epoch.", started)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}" if value == value else "NaN"


def parse(text: str) -> dict[str, float]:
    """Read an exposition back: ``{'name{labels}': value}``; used by clients and tests."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


def uptime(started_mono: float) -> float:
    return round(time.monotonic() - started_mono, 1)
