"""`xswarm bench` against a real bridge: a few calls for a few seconds, every field printed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.bridge import free_port, running_bridge
from xswarm.client.bench import Bench, jitter_lateness, tone
from xswarm.client.common import call_url

XSWARM = str(Path(sys.executable).parent / "xswarm")


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([XSWARM, "bench", *args], capture_output=True, text=True, timeout=120)


def test_bench_reports_every_figure_as_json_and_text(tmp_path: Path) -> None:
    config = '[voice.bridge]\nengine = "echo"\nmax_concurrent_calls = 3\n'
    with running_bridge(tmp_path, config) as bridge:
        done = run_bench(
            "--calls", "4", "--seconds", "2", "--ramp", "0.2", "--url", bridge.ws_url, "--json"
        )
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout)
        text = run_bench("--calls", "2", "--seconds", "1", "--url", bridge.ws_url)
    assert report["calls"] == 4
    assert report["connected"] == 3 and report["refused"] == 1
    assert report["refusals"] == {"HTTP 503": 1}
    assert report["frames_sent"] == 3 * 100
    assert report["frames_received"] + report["lost_frames"] == report["frames_sent"]
    assert report["frames_received"] >= 3 * 95
    assert (
        0
        < report["round_trip_p50_ms"]
        <= report["round_trip_p99_ms"]
        <= report["round_trip_max_ms"]
    )
    assert isinstance(report["late_frames"], (int, float))
    assert isinstance(report["dropped_frames"], (int, float))
    assert report["bridge_cpu_ms_per_call_second"] > 0
    assert report["bench_cpu_ms_per_call_second"] > 0
    assert text.returncode == 0, text.stdout + text.stderr
    for label in (
        "calls:",
        "frames:",
        "frame round trip:",
        "late frames:",
        "bridge CPU:",
        "bench CPU:",
    ):
        assert label in text.stdout


def test_bench_with_no_bridge_fails_with_the_reason() -> None:
    done = run_bench("--calls", "2", "--seconds", "0.5", "--url", f"ws://127.0.0.1:{free_port()}")
    assert done.returncode != 0
    assert "no call connected" in done.stderr and "connection refused" in done.stderr


def test_bench_refuses_remote_targets_and_silly_sizes() -> None:
    done = run_bench("--url", "ws://192.0.2.1:9998", "--calls", "1", "--seconds", "1")
    assert done.returncode != 0 and "only targets loopback" in done.stderr
    done = run_bench("--calls", "0")
    assert done.returncode != 0 and "--calls" in done.stderr
    done = run_bench("--calls", "100000")
    assert done.returncode != 0 and "--calls" in done.stderr


def test_jitter_delays_frames_within_its_span_and_keeps_their_order(tmp_path: Path) -> None:
    """--jitter-ms: every frame still goes, once and in order (the echo comes back whole,
    matched by content), never before its slot; how late is :func:`jitter_lateness`'s."""
    config = '[voice.bridge]\nengine = "echo"\n'
    with running_bridge(tmp_path, config) as bridge:
        bench = Bench(
            call_url(bridge.ws_url, "twilio"),
            2,
            1.0,
            tone(),
            ramp_seconds=0.0,
            aligned=True,
            tls=False,
            jitter_s=0.030,
        )
        report = asyncio.run(bench.run())
    assert report.connected == 2 and report.frames_sent == 2 * 50
    assert report.content_lost == 0
    for call in bench.calls:
        sent = np.asarray(call.sent_at)
        assert np.all(np.diff(sent) >= 0)
        behind = sent - sent[0] - np.arange(len(sent)) * 0.020
        # Never early by more than the first frame's own lateness (at most 2 x 30 ms).
        assert behind.min() >= -0.061


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_jitter_lateness_spans_twice_the_jitter_and_keeps_frames_in_order(seed: int) -> None:
    lateness = np.asarray(jitter_lateness(5000, 0.030, seed))
    assert lateness.min() >= 0.0 and lateness.max() <= 0.060
    departures = np.arange(len(lateness)) * 0.020 + lateness
    assert np.diff(departures).min() > -1e-12  # in order: no frame overtakes the one ahead
    assert lateness.max() > 0.055 and lateness.min() < 0.005  # the whole span is used
    assert np.ptp(np.diff(departures)) > 0.040  # the gaps really vary
    assert jitter_lateness(50, 0.030, seed) == lateness[:50].tolist()  # seeded: repeatable
    assert jitter_lateness(50, 0.0, seed) == [0.0] * 50
