"""The clients' pure parts: URLs, percentiles, Prometheus text, frames and schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xswarm.client.bench import frame_middles, require_loopback
from xswarm.client.carrier_call import dtmf_schedule
from xswarm.client.common import (
    ClientError,
    Latency,
    call_url,
    http_url,
    metric_total,
    percentile,
)
from xswarm.client.moshi_call import FRAME_SAMPLES, opus_frames
from xswarm.client.twilio_call import mulaw_frames
from xswarm.protocol import twilio


def test_call_url_adds_the_transport_path_and_keeps_an_explicit_one() -> None:
    assert call_url("ws://127.0.0.1:9998", "twilio") == "ws://127.0.0.1:9998/twilio"
    assert call_url("ws://127.0.0.1:9998/", "moshi") == "ws://127.0.0.1:9998/api/chat"
    assert call_url("127.0.0.1:10001", "twilio") == "ws://127.0.0.1:10001/twilio"
    assert call_url("https://v.example.com/x?a=1", "twilio") == "wss://v.example.com/x?a=1"
    assert (
        http_url("wss://v.example.com:444/twilio", "/metrics")
        == "https://v.example.com:444/metrics"
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [("ftp://host", "must start with ws://"), ("ws://", "no host"), ("ws://h:99999", "port")],
)
def test_bad_urls_say_what_is_wrong(url: str, reason: str) -> None:
    with pytest.raises(ClientError, match=reason):
        call_url(url, "twilio")


def test_bench_refuses_anything_but_loopback() -> None:
    require_loopback("ws://127.0.0.1:9998/twilio")
    require_loopback("ws://localhost:9998/twilio")
    with pytest.raises(ClientError, match="only targets loopback"):
        require_loopback("ws://192.0.2.10:9998/twilio")


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([7.0], 0.99) == 7.0
    assert math.isnan(percentile([], 0.5))
    latency = Latency.of([0.010, 0.020, 0.030])
    assert (latency.count, latency.p50_ms, latency.max_ms) == (3, 20.0, 30.0)
    assert math.isnan(Latency.of([]).p99_ms)


EXPOSITION = """\
# HELP xswarm_late_frames_total Frames whose tick ended after its deadline.
# TYPE xswarm_late_frames_total counter
xswarm_late_frames_total 12
xswarm_late_frames_total_extra 99
xswarm_calls_total{outcome="caller_hangup"} 3
xswarm_calls_total{outcome="protocol_error",note="a } b"} 2
process_cpu_seconds_total 1.5e+01
broken_metric not-a-number
"""


def test_metric_total_sums_label_sets_and_ignores_lookalikes() -> None:
    assert metric_total(EXPOSITION, "xswarm_late_frames_total") == 12
    assert metric_total(EXPOSITION, "xswarm_calls_total") == 5
    assert metric_total(EXPOSITION, "process_cpu_seconds_total") == 15.0
    assert metric_total(EXPOSITION, "absent_total") is None
    assert metric_total(EXPOSITION, "broken_metric") is None
    assert metric_total("", "x") is None


def test_mulaw_frames_pad_the_last_frame_with_silence() -> None:
    frames = mulaw_frames(np.zeros(170, dtype=np.float32))
    assert [len(f) for f in frames] == [160, 160]
    assert frames[1][10:] == b"\xff" * 150


def test_dtmf_digits_are_spread_through_the_call() -> None:
    assert dtmf_schedule("12", 90) == {30: "1", 60: "2"}
    assert dtmf_schedule("", 90) == {}


def test_opus_frames_are_whole_1920_sample_frames() -> None:
    frames = opus_frames(np.ones(2000, dtype=np.float32))
    assert [len(f) for f in frames] == [FRAME_SAMPLES, FRAME_SAMPLES]
    assert frames[1][80:].max() == 0.0


def test_bench_messages_are_valid_twilio_media_messages() -> None:
    voice = np.sin(np.arange(400) / 5).astype(np.float32) * 0.5
    middles = frame_middles(voice, 5)
    tail = '"MZabc"}'
    events = [twilio.parse('{"event":"media","sequenceNumber":"' + m + tail) for m in middles]
    assert [(e.sequence, e.chunk, e.timestamp_ms) for e in events] == [
        (k + 2, k + 1, k * 20) for k in range(5)
    ]
    assert events[3].payload == events[0].payload  # 400 samples: 3 frames, then it loops
    assert events[0].payload == mulaw_frames(voice)[0]


def test_bench_counts_media_however_the_json_is_laid_out() -> None:
    from xswarm.client.bench import OUT_MEDIA_HEAD, _is_media

    assert twilio.Outbound("MZ1").media(b"\x00").startswith(OUT_MEDIA_HEAD)
    spaced = '{"streamSid": "MZ1", "event": "media", "media": {"payload": "AA=="}}'
    assert _is_media(spaced)
    assert not _is_media('{"event": "mark", "streamSid": "MZ1", "mark": {"name": "x"}}')
    assert not _is_media("garbage")
