"""A real bridge, real Twilio-speaking callers over loopback WebSockets."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest

from tests.support.bridge import BridgeProcess
from tests.support.calls import ControlClient, TwilioCaller, tone
from tests.support.waiting import eventually
from xswarm.protocol import twilio


async def test_twilio_call_gets_its_own_audio_back_with_stream_sid(
    bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    async with ControlClient(http, bridge.ws_url) as control:
        caller = TwilioCaller(http, bridge.ws_url)
        await caller.connect(custom={"caller": "+15551234567"})
        started = await control.wait_for("call_started")
        assert started["transport"] == "twilio"
        assert started["stream_sid"] == caller.stream_sid
        assert started["call_sid"] == caller.call_sid
        assert started["caller"] == "+15551234567"
        sent = await caller.send_audio(tone(1.0))
        await eventually(lambda: len(caller.media()) >= sent - 2)
        await caller.stop()
        ended = await control.wait_for("call_ended", call_id=started["call_id"])
        await caller.close()
    assert ended["reason"] == "caller_hangup"
    assert ended["frames_in"] == sent
    assert ended["frames_out"] >= sent - 2
    assert all(isinstance(m, twilio.OutMedia) for m in caller.received)
    # Every outbound message carried our streamSid (parse_outbound checks the shape; check the sid).
    back = caller.audio()
    assert len(back) >= (sent - 2) * 160
    original = tone(1.0)[: len(back)]
    spectrum = np.abs(np.fft.rfft(back[2000:6000]))
    assert abs(np.argmax(spectrum) * 8000 / 4000 - 440) < 5
    assert (
        0.25
        < np.sqrt(np.mean(back[2000:6000] ** 2)) / np.sqrt(np.mean(original[2000:6000] ** 2))
        < 1.1
    )


async def test_outbound_messages_carry_the_stream_sid(
    bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(bridge.ws_url + "/twilio") as ws:
        await ws.send_str(twilio.connected_message())
        await ws.send_str(twilio.start_message("MZ-sid-check", "CA1"))
        await ws.send_str(twilio.inbound_media_message("MZ-sid-check", 2, 1, 0, b"\xff" * 160))
        await ws.send_str(twilio.inbound_media_message("MZ-sid-check", 3, 2, 20, b"\xff" * 160))
        message = await ws.receive(timeout=5)
        assert '"streamSid":"MZ-sid-check"' in message.data
        assert '"event":"media"' in message.data


async def test_calls_over_the_limit_get_503_with_retry_after_and_others_go_on(
    tmp_path, http: aiohttp.ClientSession
) -> None:
    from tests.support.bridge import running_bridge

    with running_bridge(
        tmp_path, '[voice.bridge]\nengine = "echo"\nmax_concurrent_calls = 2\n'
    ) as bridge:
        first, second = TwilioCaller(http, bridge.ws_url), TwilioCaller(http, bridge.ws_url)
        await first.connect()
        await second.connect()
        status, body = await eventually(
            lambda: asyncio.to_thread(bridge.get, "/readyz"), lambda got: got[0] != 200
        )
        assert status == 503 and body["reason"] == "full"
        try:
            await http.ws_connect(bridge.ws_url + "/twilio")
            raise AssertionError("third call was admitted")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 503
            assert exc.headers is not None and exc.headers["Retry-After"] == "5"
        # The two running calls still get audio back.
        await asyncio.gather(first.send_audio(tone(0.4)), second.send_audio(tone(0.4)))
        await eventually(lambda: len(first.media()) >= 15 and len(second.media()) >= 15)
        metrics = bridge.get("/metrics")[1]
        assert 'xswarm_calls_rejected_total{reason="full"} 1' in metrics
        await first.close()
        await second.close()


async def test_dtmf_and_unknown_events_are_reported_or_ignored_without_ending_the_call(
    bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    async with ControlClient(http, bridge.ws_url) as control:
        caller = TwilioCaller(http, bridge.ws_url)
        await caller.connect()
        started = await control.wait_for("call_started")
        await caller.send(twilio.dtmf_message(caller.stream_sid, 5, "7"))
        await caller.send('{"event":"future-event","streamSid":"x"}')
        await caller.send(twilio.mark_in_message(caller.stream_sid, 6, "played"))
        dtmf = await control.wait_for("dtmf", call_id=started["call_id"])
        assert dtmf["digit"] == "7"
        await caller.send_audio(tone(0.2))
        assert await eventually(caller.media), "the call went on after unknown events"
        await caller.stop()
        await control.wait_for("call_ended", call_id=started["call_id"])
        await caller.close()


async def test_health_ready_and_metrics(bridge: BridgeProcess) -> None:
    assert bridge.get("/healthz") == (
        200,
        {"status": "ok", "state": "ready", "pid": bridge.proc.pid},
    )
    status, ready = bridge.get("/readyz")
    assert status == 200 and ready["engine"] == "echo" and ready["active_calls"] == 0
    metrics = bridge.get("/metrics")[1]
    for family in (
        "xswarm_active_calls",
        "xswarm_calls_total",
        "xswarm_frames_in_total",
        "xswarm_frames_out_total",
        "xswarm_late_frames_total",
        "xswarm_tick_duration_seconds_bucket",
        "xswarm_engine_info",
        "xswarm_config_reloads_total",
        "process_cpu_seconds_total",
    ):
        assert f"\n{family}" in metrics, family
    assert 'xswarm_engine_info{engine="echo",frame_ms="20"} 1' in metrics


async def test_twilio_signature_is_checked_when_an_auth_token_is_set(
    tmp_path, http: aiohttp.ClientSession
) -> None:
    from tests.support.bridge import free_port, running_bridge

    token = "twilio-auth-token-123"
    env = {"TWILIO_AUTH_TOKEN": token}
    port = free_port()  # TWILIO_AUTH_TOKEN requires public_url: here, the bridge itself
    config = f'[voice.bridge]\nengine = "echo"\npublic_url = "ws://127.0.0.1:{port}"\n'
    with running_bridge(tmp_path, config, env=env, port=port) as bridge:
        url = f"{bridge.ws_url}/twilio?tenant=acme"
        for headers in (
            {},
            {"X-Twilio-Signature": "bm9wZQ=="},
            {"X-Twilio-Signature": twilio.expected_signature("other", url, {})},
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url, headers=headers)
            assert refused.value.status == 403
        good = {"X-Twilio-Signature": twilio.expected_signature(token, url, {})}
        caller = TwilioCaller(http, bridge.ws_url, headers=good)
        caller.url = url
        await caller.connect()
        await caller.send_audio(tone(0.3))
        assert await eventually(caller.media)
        await caller.stop()
        await caller.close()
        assert 'xswarm_calls_rejected_total{reason="auth"} 3' in bridge.get("/metrics")[1]
        # Logs about a call carry its id.
        assert "call=c" in bridge.log()


async def test_frames_arriving_far_behind_their_timeline_are_dropped_unprocessed(
    bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    """An overloaded path delivers old audio late; playing it would add its lag to the call."""
    async with ControlClient(http, bridge.ws_url) as control:
        caller = TwilioCaller(http, bridge.ws_url)
        await caller.connect()
        call_id = (await control.wait_for("call_started"))["call_id"]
        media = twilio.InboundMedia(caller.stream_sid)
        frame = b"\x10" * 160
        for n in range(10):  # on time
            await caller.send(media.message(n + 2, n + 1, n * 20, frame))
            await asyncio.sleep(0.02)  # a frame every 20 ms: real time, as Twilio sends
        await asyncio.sleep(0.5)  # the stall that puts the next frames behind their timeline
        for n in range(10, 15):  # stamped 200..280 ms, arriving ~700 ms in: 0.4 s behind
            await caller.send(media.message(n + 2, n + 1, n * 20, frame))
        await eventually(
            lambda: asyncio.to_thread(bridge.get, "/metrics"),
            lambda got: "\nxswarm_frames_in_total 15\n" in got[1],
        )
        await caller.stop()
        ended = await control.wait_for("call_ended", call_id=call_id)
        await caller.close()
    assert ended["frames_in"] == 15
    metrics = bridge.get("/metrics")[1]
    # The first late frame is evenly spaced (kept); the four behind it came in a burst.
    assert 'xswarm_dropped_frames_total{reason="input_stale"} 4' in metrics
    assert "dropping frames that arrive in a burst over 200 ms late" in bridge.log()


def test_auto_resampling_band_limits_model_audio_and_keeps_echo_cheap() -> None:
    from xswarm.bridge.media_stream import resampler_quality

    assert resampler_quality("auto", "moshi") == "FIR"
    assert resampler_quality("auto", "echo") == "QQ"
    assert resampler_quality("HQ", "moshi") == "HQ"
