"""metrics.py: the Prometheus text both services expose, checked as a scraper would read it."""

from __future__ import annotations

import math
import shutil
import subprocess

import pytest

from xswarm.metrics import Exposition, Histogram, escape_label, parse


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("plain", "plain"),
        ("back\\slash", "back\\\\slash"),
        ('say "hi"', 'say \\"hi\\"'),
        ("two\nlines", "two\\nlines"),
        ('\\"\n', '\\\\\\"\\n'),
    ],
)
def test_label_values_are_escaped(value: str, escaped: str) -> None:
    assert escape_label(value) == escaped


def test_a_hostile_label_stays_on_one_line_and_parses_back() -> None:
    expo = Exposition()
    expo.metric("x_total", "counter", "Things.", [({"instance": 'a"b\\c\nd'}, 3)])
    text = expo.text()
    assert text.count("\n") == 3
    assert parse(text) == {'x_total{instance="a\\"b\\\\c\\nd"}': 3.0}


def test_histogram_buckets_are_cumulative_and_end_with_inf() -> None:
    histogram = Histogram(buckets=(0.01, 0.1, 1.0))
    for value in (0.005, 0.01, 0.05, 0.5, 2.0):
        histogram.observe(value)
    expo = Exposition()
    expo.histogram("tick_seconds", "Ticks.", histogram)
    samples = parse(expo.text())
    buckets = [samples[f'tick_seconds_bucket{{le="{le}"}}'] for le in ("0.01", "0.1", "1", "+Inf")]
    assert buckets == [2, 3, 4, 5]
    assert buckets == sorted(buckets)
    assert samples["tick_seconds_count"] == 5
    assert samples["tick_seconds_sum"] == pytest.approx(2.565)


def test_numbers_render_as_prometheus_reads_them() -> None:
    expo = Exposition()
    expo.metric("a", "gauge", "An int.", 1_000_000)
    expo.metric("b", "gauge", "A float.", 0.125)
    expo.metric("c", "gauge", "A boolean.", True)
    expo.metric("d", "gauge", "Not a number.", math.nan)
    lines = [line for line in expo.text().splitlines() if not line.startswith("#")]
    assert lines == ["a 1000000", "b 0.125", "c 1", "d NaN"]


def test_every_family_has_help_and_type_before_its_samples() -> None:
    expo = Exposition()
    expo.metric("up", "gauge", "Up.", [({"instance": "a"}, 1), ({"instance": "b"}, 0)])
    expo.process(started=1_800_000_000.0)
    lines = expo.text().splitlines()
    assert lines[:2] == ["# HELP up Up.", "# TYPE up gauge"]
    assert lines[2:4] == ['up{instance="a"} 1', 'up{instance="b"} 0']
    families = {line.split()[2] for line in lines if line.startswith("# TYPE")}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= families
    assert expo.text().endswith("\n")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_exposition() -> None:
    histogram = Histogram()
    histogram.observe(0.003)
    expo = Exposition()
    expo.metric("x_total", "counter", "Things.", [({"instance": 'a"b\\c\nd'}, 3)])
    expo.histogram("tick_seconds", "Ticks.", histogram)
    expo.process(started=1_800_000_000.0)
    promtool = shutil.which("promtool")
    assert promtool is not None
    done = subprocess.run(
        [promtool, "check", "metrics"], input=expo.text(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
