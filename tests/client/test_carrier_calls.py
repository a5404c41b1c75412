"""`xswarm call --transport telnyx|plivo|exotel`: a real call per carrier (and codec) through
a real bridge with the echo engine, the reply checked against the voice sent."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.test_bench import run_bench
from tests.client.test_call import ECHO_CONFIG, run_call, similarity
from tests.support.bridge import BridgeProcess, running_bridge
from xswarm.audio.wav import read_wav
from xswarm.client.common import SAMPLE_WAV


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    with running_bridge(tmp_path_factory.mktemp("carriers"), ECHO_CONFIG) as running:
        yield running


@pytest.mark.parametrize(
    ("transport", "codec", "rate"),
    [
        ("telnyx", "PCMU", 8000),
        ("telnyx", "PCMA", 8000),
        ("plivo", "PCMU", 8000),
        ("plivo", "L16", 8000),
        ("plivo", "L16", 16000),
        ("exotel", "L16", 8000),
        ("exotel", "L16", 16000),
        ("exotel", "L16", 24000),
    ],
)
def test_carrier_call_gets_the_sample_back(
    bridge: BridgeProcess, tmp_path: Path, transport: str, codec: str, rate: int
) -> None:
    out = tmp_path / "reply.wav"
    done = run_call(
        "--transport", transport, "--codec", codec, "--url", bridge.ws_url, "--out", str(out),
        "--dtmf", "1#", "--sample-rate", str(rate),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"/{transport} ({transport})" in done.stdout
    assert "warning" not in done.stderr, done.stderr
    assert f"at {rate} Hz" in done.stdout
    voice, reply = read_wav(SAMPLE_WAV, rate), read_wav(out, rate)
    lag, correlation = similarity(reply, voice)
    assert correlation > 0.95, done.stdout
    assert lag < rate * 0.1
    assert f"call started: {transport}" in bridge.log()


def test_a_codec_the_carrier_does_not_carry_is_refused_before_calling(tmp_path: Path) -> None:
    done = run_call("--transport", "exotel", "--codec", "PCMU", "--url", "ws://127.0.0.1:9")
    assert done.returncode != 0
    assert "exotel streams carry L16, not PCMU" in done.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--transport", "telnyx", "--sample-rate", "16000"), "telnyx streams PCMU at 8000 Hz"),
        (("--transport", "plivo", "--sample-rate", "24000"), "plivo streams PCMU at 8000 Hz"),
        (("--transport", "twilio", "--sample-rate", "16000"), "twilio streams have a fixed rate"),
    ],
)
def test_a_rate_the_stream_cannot_carry_is_refused_before_calling(
    args: tuple[str, ...], words: str
) -> None:
    done = run_call(*args, "--url", "ws://127.0.0.1:9")
    assert done.returncode != 0
    assert words in done.stderr, done.stderr


def test_the_carrier_token_opens_the_endpoints_and_a_wrong_one_does_not(tmp_path: Path) -> None:
    with running_bridge(tmp_path, ECHO_CONFIG, env={"XSWARM_CARRIER_TOKEN": "s3cret"}) as guarded:
        good = dict(os.environ, XSWARM_CARRIER_TOKEN="s3cret")
        done = run_call(
            "--transport", "telnyx", "--url", guarded.ws_url, "--out", str(tmp_path / "a.wav"),
            env=good,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        bad = dict(os.environ, XSWARM_CARRIER_TOKEN="wrong")
        done = run_call(
            "--transport", "exotel", "--url", guarded.ws_url, "--out", str(tmp_path / "b.wav"),
            env=bad,
        )  # fmt: skip
        assert done.returncode != 0
        assert "403" in done.stderr, done.stderr


@pytest.mark.parametrize("transport", ["telnyx", "plivo", "exotel"])
def test_bench_speaks_each_carrier(bridge: BridgeProcess, transport: str) -> None:
    done = run_bench(
        "--transport", transport, "--calls", "2", "--seconds", "1", "--ramp", "0.1",
        "--aligned", "--url", bridge.ws_url, "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["connected"] == 2 and report["refused"] == 0
    assert report["frames_sent"] == 2 * 50
    assert report["frames_received"] >= 2 * 45
    assert report["content_lost_frames"] <= 2 * 5  # content-aligned: the replies carry our audio
