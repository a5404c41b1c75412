"""Full calls through the real ``xswarm-voice`` running the tiny MOSHI on CPU.

The bridge runs as a subprocess with ``engine = "moshi"`` and the tiny model's files, exactly
as an operator would configure real weights; callers speak Twilio Media Streams (mu-law) and
Kyutai's Moshi protocol (Ogg-Opus through sphn) over loopback, and /control shows the words.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import sphn

from tests.engine.tiny_moshi import tiny_moshi_toml
from tests.support.bridge import VENV_BIN, BridgeProcess, free_port, metric, running_bridge
from tests.support.calls import ControlClient, TwilioCaller, tone
from tests.support.waiting import eventually
from xswarm.bridge.call import WIRE_FRAME_SECONDS
from xswarm.engine.base import SAMPLE_RATE
from xswarm.engine.moshi import FRAME_SAMPLES

pytestmark = pytest.mark.moshi

# One OpenMP thread: on a small shared machine two are slower, and ticks must stay in time.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def moshi_bridge_toml(tiny: dict[str, Any], engine: str = "moshi", **moshi: Any) -> str:
    return (
        f'[voice.bridge]\nengine = "{engine}"\nmax_concurrent_calls = 3\n'
        "[voice.suggestions]\nmin_interval_ms = 0\n" + tiny_moshi_toml(tiny, **moshi)
    )


@pytest.fixture
def moshi_bridge(tmp_path: Path, tiny_moshi: dict[str, Any]) -> Iterator[BridgeProcess]:
    with running_bridge(
        tmp_path, moshi_bridge_toml(tiny_moshi), env=ONE_THREAD, ready_timeout=120
    ) as bridge:
        yield bridge


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def words(control: ControlClient, call_id: str) -> str:
    return "".join(e["text"] for e in control.of_type("text", call_id=call_id))


async def test_twilio_calls_talk_to_moshi_and_a_suggestion_reaches_only_its_call(
    moshi_bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    async with ControlClient(http, moshi_bridge.ws_url) as control:
        hello = control.of_type("hello")[0]
        assert hello["engine"] == "moshi"
        steered = TwilioCaller(http, moshi_bridge.ws_url)
        other = TwilioCaller(http, moshi_bridge.ws_url)
        await steered.connect()
        call_id = (await control.wait_for("call_started", stream_sid=steered.stream_sid))["call_id"]
        await other.connect()
        other_id = (await control.wait_for("call_started", stream_sid=other.stream_sid))["call_id"]
        first = await asyncio.gather(
            steered.send_audio(tone(1.0)), other.send_audio(tone(1.0, freq=500.0))
        )
        await control.wait_for("text", call_id=call_id)
        await control.send(
            {"type": "inject_suggestion", "call_id": call_id, "text": "hello world thank you"}
        )
        applied = await control.wait_for("suggestion_applied", call_id=call_id)
        assert applied["text"] == "hello world thank you"
        second = await asyncio.gather(
            steered.send_audio(tone(2.0, freq=300.0)), other.send_audio(tone(2.0, freq=600.0))
        )
        # 80 ms model frames come back as 20 ms mu-law frames: most of 3 s, once the model's
        # last steps are out (a hang-up before then would cut them off).
        await eventually(
            lambda: min(len(caller.media()) for caller in (steered, other)),
            lambda frames: frames >= 100,  # 2 s of 20 ms frames
            detail=moshi_bridge.log,
        )
        for caller in (steered, other):
            await caller.stop()
        ended = await control.wait_for("call_ended", call_id=call_id)
        await control.wait_for("call_ended", call_id=other_id)
        for caller in (steered, other):
            await caller.close()
        said, other_said = words(control, call_id), words(control, other_id)
    assert ended["reason"] == "caller_hangup" and ended["frames_in"] == first[0] + second[0]
    assert "hello world thank you" in said, said
    assert other_said and "hello world thank you" not in other_said, other_said
    for caller in (steered, other):
        back = caller.audio()
        assert float(np.sqrt(np.mean(back**2))) > 1e-4  # not silence
    status, metrics = moshi_bridge.get("/metrics")
    assert status == 200 and isinstance(metrics, str)
    assert "xswarm_engine_slots_in_use" in metrics


async def test_every_whole_step_of_a_call_reaches_the_caller(
    moshi_bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    """A call's audio is complete: besides what the bridge drops and counts, a caller misses
    only the model's first step (its acoustic delay: no audio yet) and the frames after the
    last whole step. The silence the join leads a call with only adds frames, so a call of
    N wire frames gets at least 4 x (N // 4 - 1) back. A step lost anywhere falls short of
    that when the lead was under a step (1 run in 4 here): with a longer lead the count
    cannot tell one lost step from the lead, and only repeated runs catch it."""
    caller = TwilioCaller(http, moshi_bridge.ws_url)
    async with ControlClient(http, moshi_bridge.ws_url) as control:
        await caller.connect()
        call_id = (await control.wait_for("call_started", stream_sid=caller.stream_sid))["call_id"]
        sent = await caller.send_audio(tone(2.0))
        per_step = round(FRAME_SAMPLES / (SAMPLE_RATE * WIRE_FRAME_SECONDS))

        def dropped() -> int:
            return round(metric(moshi_bridge, "xswarm_dropped_frames_total"))

        async def heard_and_dropped() -> tuple[int, int]:
            return len(caller.media()), await asyncio.to_thread(dropped)

        def complete(counts: tuple[int, int]) -> bool:
            heard, lost = counts
            # A drop is counted in whole frames and may hide part of one more.
            fed = sent - lost - (1 if lost else 0)
            return heard >= per_step * (fed // per_step - 1)

        await eventually(heard_and_dropped, complete, detail=moshi_bridge.log)
        await caller.stop()
        ended = await control.wait_for("call_ended", call_id=call_id)
        await caller.close()
    assert ended["frames_in"] == sent
    assert ended["frames_out"] == len(caller.media())
    assert ended.get("dropped_frames", 0) == dropped()


async def test_a_moshi_protocol_call_gets_opus_audio_and_text(
    moshi_bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    writer = sphn.OpusStreamWriter(24000)
    reader = sphn.OpusStreamReader(24000)
    speech = tone(2.0, rate=24000, freq=220.0)
    audio_back: list[np.ndarray] = []
    text_back: list[str] = []

    async def listen(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                break
            if message.data[:1] == b"\x01":
                audio_back.append(reader.append_bytes(message.data[1:]))
            elif message.data[:1] == b"\x02":
                text_back.append(message.data[1:].decode("utf-8"))

    async with (
        ControlClient(http, moshi_bridge.ws_url) as control,
        http.ws_connect(moshi_bridge.ws_url + "/api/chat") as ws,
    ):
        assert (await ws.receive(timeout=10)).data == b"\x00"
        started = await control.wait_for("call_started", transport="moshi")
        listener = asyncio.create_task(listen(ws))
        for start in range(0, len(speech), 1920):
            pages = writer.append_pcm(speech[start : start + 1920])
            if pages:
                await ws.send_bytes(b"\x01" + pages)
            await asyncio.sleep(0.08)  # 1920 samples at 24 kHz: spoken in real time
        await control.wait_for("text", call_id=started["call_id"])
        await eventually(lambda: sum(len(pcm) for pcm in audio_back) >= 24000)
        await ws.close()
        await asyncio.wait_for(listener, 10)
        ended = await control.wait_for("call_ended", call_id=started["call_id"])
        said = words(control, started["call_id"])
    assert ended["reason"] == "caller_hangup"
    audio = np.concatenate(audio_back) if audio_back else np.zeros(0)
    assert len(audio) >= 24000
    assert np.isfinite(audio).all() and float(np.abs(audio).max()) > 0
    assert said and "".join(text_back) == said[: len("".join(text_back))]


def start_and_fail(tmp_path: Path, config_toml: str) -> tuple[int, str]:
    config = tmp_path / "config.toml"
    config.write_text(
        f"[voice.bridge]\nport = {free_port()}\n"
        + config_toml.replace("[voice.bridge]\n", "")
        + f'\n[paths]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XSWARM_", "NOTIFY_"))}
    done = subprocess.run(
        [str(VENV_BIN / "xswarm-voice"), "--config", str(config)],
        capture_output=True,
        text=True,
        env=env | ONE_THREAD,
        timeout=120,
    )
    return done.returncode, done.stderr


def test_missing_weights_stop_the_bridge_with_exit_78(
    tmp_path: Path, tiny_moshi: dict[str, Any]
) -> None:
    gone = tmp_path / "gone.safetensors"
    code, stderr = start_and_fail(tmp_path, moshi_bridge_toml(tiny_moshi, moshi_weights=str(gone)))
    assert code == 78, stderr
    assert f"no MOSHI weights at {gone} ([voice.moshi] moshi_weights)" in stderr
    assert "Traceback" not in stderr


def test_an_absent_device_stops_the_bridge_with_exit_78(
    tmp_path: Path, tiny_moshi: dict[str, Any]
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    code, stderr = start_and_fail(tmp_path, moshi_bridge_toml(tiny_moshi, device="cuda:1"))
    assert code == 78, stderr
    assert 'device cuda:1 not found: no CUDA device; set [voice.moshi] device = "cpu"' in stderr


def test_auto_takes_moshi_when_it_loads_and_echo_when_it_cannot(
    tmp_path: Path, tiny_moshi: dict[str, Any]
) -> None:
    with running_bridge(
        tmp_path,
        moshi_bridge_toml(tiny_moshi, engine="auto"),
        env=ONE_THREAD,
        ready_timeout=120,
        name="loads",
    ) as bridge:
        assert "engine auto: chose moshi" in bridge.log()
    with running_bridge(
        tmp_path,
        moshi_bridge_toml(tiny_moshi, engine="auto", device="cuda:99"),
        env=ONE_THREAD,
        ready_timeout=120,
        name="cannot",
    ) as bridge:
        assert "engine auto: chose echo" in bridge.log()
        assert "device cuda:99 not found" in bridge.log()


async def test_an_instance_runs_its_engine_on_its_own_device_and_says_so(
    tmp_path: Path, tiny_moshi: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    """``[voice.moshi] device`` names a GPU this machine lacks: only the instance's own
    ``device = "cpu"`` lets xswarm-voice@1 start, and /readyz and instance_status name it."""
    port = free_port()
    toml = moshi_bridge_toml(tiny_moshi, device="cuda:7") + (
        f'[voice.bridge.instances.1]\nport = {port}\ndevice = "cpu"\n'
    )
    with running_bridge(
        tmp_path, toml, env=ONE_THREAD, args=["--instance", "1"], port=port, ready_timeout=120
    ) as bridge:
        status, ready = bridge.get("/readyz")
        assert status == 200 and ready["device"] == "cpu" and ready["engine"] == "moshi"
        async with ControlClient(http, bridge.ws_url) as control:
            event = await control.wait_for("instance_status")
        assert event["device"] == "cpu" and "gpu" not in event
        assert event["engine_details"]["device"] == "cpu"
        assert event["engine_details"]["slots"] >= 1
