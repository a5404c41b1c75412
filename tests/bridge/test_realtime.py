"""Issue 14's real-time side seen from outside: readiness under overload, and a call's audio
complete from its first frame to its last over a real socket, checked by content."""

from __future__ import annotations

from tests.support.bridge import BridgeProcess
from xswarm.bridge.app import Bridge
from xswarm.bridge.call import Call
from xswarm.client.bench import Bench, tone
from xswarm.config import Config
from xswarm.engine.echo import EchoEngine


def test_steps_over_the_frame_make_readyz_answer_503_overloaded_and_status_say_so() -> None:
    bridge = Bridge(Config(), EchoEngine(4))
    bridge.state = "ready"
    assert bridge.status.readiness()[0] == 200
    loop = bridge.engine_loop
    t = 50.0
    for _ in range(5 * 50):  # five seconds of steps that take longer than their frame
        loop.finish_tick([], 0.0, late=False, now=t)  # idle ticks do not count as over...
        t += 0.02
    assert not loop.overloaded
    call = Call("twilio", "127.0.0.1:1", EchoEngine.frame_samples)
    for _ in range(5 * 50):  # ...stepping ticks over the frame do
        loop.finish_tick([call], 0.03, late=True, now=t)
        t += 0.02
    status, body = bridge.status.readiness()
    assert (status, body["reason"], body["state"]) == (503, "overloaded", "overloaded")
    assert bridge.status.instance_status().state == "overloaded"
    assert "OVERLOADED" in bridge.status_line()
    assert "\nxswarm_overloaded 1\n" in bridge.status.metrics_text()


async def test_a_calls_audio_comes_back_complete_from_its_first_frame_to_its_last(
    bridge: BridgeProcess,
) -> None:
    """Content-aligned: every frame's first sample is found in what came back, so a frame
    lost at the start of a call (or replaced by silence) cannot hide behind a frame count."""
    bench = Bench(
        bridge.ws_url + "/twilio",
        3,
        2.0,
        tone(),
        ramp_seconds=0.2,
        grace_seconds=1.0,
        aligned=True,
    )
    report = await bench.run()
    assert report.connected == 3
    assert report.frames_sent == 3 * 100
    assert report.content_lost == 0
    assert report.first_sample is not None and report.first_sample.count == report.frames_sent
    metrics = bridge.get("/metrics")[1]
    assert 'xswarm_dropped_frames_total{reason="input_backlog"} 0' in metrics
