"""`xswarm call` as a user runs it: a real subprocess against a real bridge on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from tests.support.bridge import BridgeProcess, free_port, running_bridge
from xswarm.audio.resample import best_lag
from xswarm.audio.wav import read_wav
from xswarm.client.common import SAMPLE_WAV
from xswarm.protocol import twilio

XSWARM = str(Path(sys.executable).parent / "xswarm")
ECHO_CONFIG = '[voice.bridge]\nengine = "echo"\nmax_concurrent_calls = 2\n'


def run_call(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [XSWARM, "call", "--tail", "0.5", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def similarity(reply: np.ndarray, voice: np.ndarray) -> tuple[int, float]:
    """The lag that best aligns the reply with the voice, and their correlation there."""
    lag = best_lag(reply, voice)
    assert lag >= 0, f"the reply leads the voice by {-lag} samples"
    aligned = reply[lag : lag + len(voice)]
    voice = voice[: len(aligned)]
    return lag, float(np.dot(aligned, voice) / np.linalg.norm(aligned) / np.linalg.norm(voice))


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    with running_bridge(tmp_path_factory.mktemp("call"), ECHO_CONFIG) as running:
        yield running


def test_twilio_call_gets_the_sample_back(bridge: BridgeProcess, tmp_path: Path) -> None:
    out = tmp_path / "reply.wav"
    done = run_call("--url", bridge.ws_url, "--out", str(out), "--dtmf", "1#")
    assert done.returncode == 0, done.stdout + done.stderr
    for field in ("frames sent:", "frames received:", "first audio after", "p50", "p99"):
        assert field in done.stdout
    voice, reply = read_wav(SAMPLE_WAV, 8000), read_wav(out, 8000)
    lag, correlation = similarity(reply, voice)
    assert correlation > 0.95, done.stdout
    assert lag < 8000 * 0.1  # the echo engine returns the audio within 100 ms of samples


def test_moshi_call_gets_the_sample_back(bridge: BridgeProcess, tmp_path: Path) -> None:
    out = tmp_path / "reply24.wav"
    done = run_call("--url", bridge.ws_url, "--transport", "moshi", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "frames received:" in done.stdout and "80 ms" in done.stdout
    voice, reply = read_wav(SAMPLE_WAV, 24000), read_wav(out, 24000)
    _, correlation = similarity(reply, voice)
    assert correlation > 0.8, done.stdout  # Opus is lossy; unrelated audio scores near 0


def test_nothing_listening_is_one_line_with_the_fix(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    done = run_call("--url", url, "--out", str(tmp_path / "r.wav"))
    assert done.returncode != 0
    assert done.stderr.strip() == (
        f"xswarm: cannot reach {url}/twilio: connection refused; "
        "is xswarm-voice running? `make run`"
    )
    assert not (tmp_path / "r.wav").exists()


async def test_a_refused_upgrade_prints_status_and_retry_after(
    bridge: BridgeProcess, tmp_path: Path
) -> None:
    """Two calls fill the bridge; the third `xswarm call` is told 503 and when to retry."""
    async with aiohttp.ClientSession() as session:
        holders = [await session.ws_connect(bridge.ws_url + "/twilio") for _ in range(2)]
        for ws in holders:
            await ws.send_str(twilio.connected_message())
            await ws.send_str(twilio.start_message(twilio.new_stream_sid(), "CA1"))
        done = run_call("--url", bridge.ws_url, "--out", str(tmp_path / "r.wav"))
        for ws in holders:
            await ws.close()
    assert done.returncode != 0
    assert "upgrade refused: HTTP 503" in done.stderr
    assert "Retry-After:" in done.stderr


def test_bad_wav_and_bad_digits_are_refused_before_calling(tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav")
    done = run_call("--wav", str(junk), "--url", "ws://127.0.0.1:1")
    assert done.returncode != 0 and "junk.wav: not a WAV file" in done.stderr
    done = run_call("--dtmf", "12x", "--url", "ws://127.0.0.1:1")
    assert done.returncode != 0 and "not keypad digits" in done.stderr


def test_signed_call_passes_and_wrong_token_is_refused(tmp_path: Path) -> None:
    env_bridge = {"TWILIO_AUTH_TOKEN": "s3cret"}
    port = free_port()  # TWILIO_AUTH_TOKEN requires public_url: here, the bridge itself
    config = ECHO_CONFIG + f'public_url = "ws://127.0.0.1:{port}"\n'
    with running_bridge(tmp_path, config, env=env_bridge, port=port) as signed:
        good = dict(os.environ, TWILIO_AUTH_TOKEN="s3cret")
        done = run_call("--url", signed.ws_url, "--out", str(tmp_path / "a.wav"), env=good)
        assert done.returncode == 0, done.stdout + done.stderr
        bad = dict(os.environ, TWILIO_AUTH_TOKEN="wrong")
        done = run_call("--url", signed.ws_url, "--out", str(tmp_path / "b.wav"), env=bad)
        assert done.returncode != 0
        assert "upgrade refused: HTTP 403" in done.stderr


def test_behind_a_proxy_the_public_url_is_what_gets_signed(tmp_path: Path) -> None:
    config = ECHO_CONFIG + 'public_url = "wss://voice.example.com"\n'
    with running_bridge(tmp_path, config, env={"TWILIO_AUTH_TOKEN": "s3cret"}) as proxied:
        env = dict(os.environ, TWILIO_AUTH_TOKEN="s3cret")
        out = str(tmp_path / "a.wav")
        done = run_call("--url", proxied.ws_url, "--out", out, env=env)
        assert done.returncode != 0 and "HTTP 403" in done.stderr
        public = "wss://voice.example.com"
        done = run_call("--url", proxied.ws_url, "--signed-url", public, "--out", out, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
