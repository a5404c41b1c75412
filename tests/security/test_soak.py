"""A ten-second soak (benchmarks/soak.py) against real services: genuine, abusive and
vanishing calls each end exactly once on /control and leave exactly one history row.
Timing and memory are not asserted here; the soak's own report has them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_soak_ends_every_call_once_with_one_history_row() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "soak.py"),
            "--seconds",
            "10",
            "--concurrency",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=os.environ.copy(),
        cwd=ROOT,
    )
    assert completed.stdout, completed.stderr
    report = json.loads(completed.stdout)
    assert report["problems"] == {}, report
    assert report["verdict"] == "PASS", report
    assert completed.returncode == 0
    # Every kind was exercised, and the bridge saw each placed call as one call.
    assert (
        set(report["placed"])
        == {"twilio", "moshi", "malformed_json", "oversized", "bad_opus", "vanish"}
        or report["placed_total"] < 20
    )
    assert report["bridge_calls_started"] == report["placed_total"] - sum(report["failed"].values())
    assert (
        report["after"]["history"] - report["before"]["history"] == report["bridge_calls_started"]
    )
