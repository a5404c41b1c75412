"""The sans-I/O call state: buffers, arrival times, counters. No event loop, no sockets."""

from __future__ import annotations

import numpy as np

from xswarm.bridge.call import Call, InputBuffer


def test_input_buffer_returns_whole_frames_in_order_with_the_completing_arrival() -> None:
    buffer = InputBuffer(10_000)
    buffer.push(np.arange(300, dtype=np.float32), arrived=1.0)
    assert buffer.take(480) is None
    buffer.push(np.arange(300, 600, dtype=np.float32), arrived=2.0)
    frame, completed = buffer.take(480)
    assert np.array_equal(frame, np.arange(480, dtype=np.float32))
    assert completed == 2.0  # the second chunk completed the frame and still has 120 left
    buffer.push(np.arange(600, 960, dtype=np.float32), arrived=3.0)
    frame, completed = buffer.take(480)
    assert np.array_equal(frame, np.arange(480, 960, dtype=np.float32)) and completed == 3.0
    assert len(buffer) == 0


def test_input_buffer_drops_oldest_audio_when_a_caller_outruns_real_time() -> None:
    buffer = InputBuffer(1000)
    for n in range(5):
        buffer.push(np.full(480, n, dtype=np.float32), arrived=float(n))
    assert len(buffer) == 1000
    assert buffer.overrun_samples == 5 * 480 - 1000
    frame, completed = buffer.take(480)
    assert frame[-1] == 3.0 and completed == 3.0
    buffer.push(np.ones(5000, dtype=np.float32), arrived=9.0)
    assert len(buffer) == 1000


def test_input_buffer_wraps_around_its_ring() -> None:
    buffer = InputBuffer(1000)
    expected = []
    value = 0
    for _ in range(50):
        chunk = np.arange(value, value + 333, dtype=np.float32)
        value += 333
        buffer.push(chunk, arrived=0.0)
        expected.extend(chunk)
        while (taken := buffer.take(480)) is not None:
            assert np.array_equal(taken[0], np.array(expected[:480], dtype=np.float32))
            del expected[:480]


def test_call_events_carry_ids_counters_and_levels() -> None:
    call = Call("twilio", "127.0.0.1:5", frame_samples=480)
    call.stream_sid = "MZ1"
    loud = (0.5 * np.sin(np.linspace(0, 200, 480))).astype(np.float32)
    call.push_audio(loud, arrived=0.0)
    call.note_output(loud, latency_s=0.004)
    stats = call.stats_event()
    assert stats.call_id == call.call_id and stats.counters.frames_in == 1
    assert stats.level_in_dbfs is not None and -10 < stats.level_in_dbfs < 0
    assert stats.latency_p50_ms == 4.0
    assert call.started_event().stream_sid == "MZ1"
    call.end_reason = "caller_hangup"
    assert call.ended_event().reason == "caller_hangup"
    assert Call("moshi", "x", 1920).call_id != call.call_id


def test_trim_drops_only_the_oldest_backlog() -> None:
    buffer = InputBuffer(10_000)
    for n in range(6):
        buffer.push(np.full(480, n, dtype=np.float32), arrived=float(n))
    assert buffer.trim(960) == 4 * 480
    frame, completed = buffer.take(480)
    assert frame[0] == 4.0 and completed == 4.0
    assert buffer.trim(960) == 0


def test_late_frames_in_a_burst_are_stale_and_a_slow_sender_is_followed() -> None:
    from xswarm.bridge.call import LateFrameFilter

    late = LateFrameFilter(max_lag=0.2)
    t = 100.0
    for n in range(10):  # on time: arrival advances with the stamps
        assert not late.is_stale(n * 20, t + n * 0.02)
    # 0.5 s of audio waited in a socket, then arrives at once: all but the first are stale.
    burst = [late.is_stale(n * 20, t + 0.9 + (n - 10) * 0.0001) for n in range(10, 35)]
    assert burst[0] is False and all(burst[1:-10])
    # Once the backlog is behind us, frames on their timeline play again.
    resumed = 35 * 0.02 + 0.9
    assert not late.is_stale(35 * 20 + 400, t + resumed)


def test_a_drifting_sender_loses_no_frames() -> None:
    from xswarm.bridge.call import LateFrameFilter

    late = LateFrameFilter(max_lag=0.2)
    # Sends every 22 ms frames stamped 20 ms apart: 2 ms drift a frame, 0.5 s a minute.
    assert not any(late.is_stale(n * 20, n * 0.022) for n in range(3000))


def test_stamps_that_do_not_advance_are_never_judged() -> None:
    from xswarm.bridge.call import LateFrameFilter

    late = LateFrameFilter(max_lag=0.2)
    assert not any(late.is_stale(0, n * 0.02) for n in range(500))
