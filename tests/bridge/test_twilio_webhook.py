"""Issue 10 item 1: Twilio's call webhooks on a real ``xswarm-voice``.

``POST /twilio/voice`` answers with TwiML that connects the call to ``/twilio`` with its
From/To/CallSid (and a stream token), or says busy; ``POST /twilio/status`` reports the
carrier's view on /control; bad requests get their documented refusal and disturb no call.
"""

from __future__ import annotations

import asyncio
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest

from tests.support.bridge import BridgeProcess, running_bridge
from tests.support.calls import ControlClient, TwilioCaller, tone
from tests.support.waiting import eventually
from xswarm.protocol import twilio

TOKEN = "twilio-auth-token-for-webhook-tests"
PUBLIC = "wss://voice.example.com/prefix"
VOICE_URL = "https://voice.example.com/prefix/twilio/voice"
STATUS_URL = "https://voice.example.com/prefix/twilio/status"
FORM = {"Content-Type": twilio.FORM_CONTENT_TYPE}
CALL_SID = "CA" + "1" * 32
RINGING = [
    ("AccountSid", "AC" + "0" * 32),
    ("CallSid", CALL_SID),
    ("From", "+14155550100"),
    ("To", "+14155550199"),
    ("Direction", "inbound"),
    ("CallStatus", "ringing"),
    ("ApiVersion", "2010-04-01"),
]


def signed(url: str, pairs: list[tuple[str, str]], token: str = TOKEN) -> dict[str, str]:
    return FORM | {"X-Twilio-Signature": twilio.expected_signature(token, url, pairs)}


async def post(
    http: aiohttp.ClientSession,
    bridge: BridgeProcess,
    path: str,
    body: bytes,
    headers: dict[str, str],
) -> tuple[int, str, str]:
    async with http.post(bridge.http_url + path, data=body, headers=headers) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


def stream_of(twiml: str) -> tuple[str, dict[str, str]]:
    root = ET.fromstring(twiml)
    assert [child.tag for child in root] == ["Connect"]
    stream = root.find("./Connect/Stream")
    assert stream is not None
    return stream.get("url", ""), {p.get("name", ""): p.get("value", "") for p in stream}


@pytest.fixture
def signed_bridge(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = (
        f'[voice.bridge]\nengine = "echo"\npublic_url = "{PUBLIC}"\ntwilio_stream_token = true\n'
    )
    with running_bridge(tmp_path, config, env={"TWILIO_AUTH_TOKEN": TOKEN}) as bridge:
        yield bridge


async def test_a_ringing_call_is_connected_with_its_numbers_into_call_started(
    signed_bridge: BridgeProcess,
) -> None:
    bridge = signed_bridge
    async with aiohttp.ClientSession() as http, ControlClient(http, bridge.ws_url) as control:
        status, content_type, twiml = await post(
            http, bridge, "/twilio/voice", urlencode(RINGING).encode(), signed(VOICE_URL, RINGING)
        )
        assert status == 200, twiml
        assert content_type.startswith("text/xml")
        url, parameters = stream_of(twiml)
        assert url == PUBLIC + "/twilio"
        assert parameters.pop(twilio.STREAM_TOKEN_PARAMETER).count(".") == 1
        assert parameters == {"From": "+14155550100", "To": "+14155550199", "CallSid": CALL_SID}
        carrier = await control.wait_for("carrier_status", call_sid=CALL_SID)
        assert carrier["answer"] == "stream" and carrier["status"] == "ringing"
        assert (carrier["caller"], carrier["callee"]) == ("+14155550100", "+14155550199")

        # Twilio then opens the stream the TwiML names, with its parameters: admitted.
        _, custom = stream_of(twiml)
        stream_headers = {"X-Twilio-Signature": twilio.expected_signature(TOKEN, url, {})}
        caller = TwilioCaller(http, bridge.ws_url, headers=stream_headers)
        caller.call_sid = CALL_SID
        await caller.connect(custom=custom)
        started = await control.wait_for("call_started", call_sid=CALL_SID)
        assert (started["caller"], started["callee"]) == ("+14155550100", "+14155550199")
        sent = await caller.send_audio(tone(0.3))
        # The webhook's call gets its audio back, every frame of it.
        await caller.hears_back(sent)
        await caller.stop()
        await caller.close()

        completed = [*RINGING[:4], ("CallStatus", "completed"), ("CallDuration", "42")]
        status, _, text = await post(
            http,
            bridge,
            "/twilio/status",
            urlencode(completed).encode(),
            signed(STATUS_URL, completed),
        )
        assert status == 204, text
        carrier = await control.wait_for("carrier_status", status="completed")
        assert carrier["duration_s"] == 42 and "answer" not in carrier


async def test_a_full_or_draining_bridge_answers_busy_in_words(tmp_path: Path) -> None:
    """No token: unsigned webhooks are served, the stream URL comes from the Host called."""
    config = (
        '[voice.bridge]\nengine = "echo"\nmax_concurrent_calls = 1\ndrain_timeout = 30\n'
        'busy_message = "All lines <busy> & then some."\n'
    )
    with running_bridge(tmp_path, config) as bridge:
        async with aiohttp.ClientSession() as http:
            body = urlencode(RINGING).encode()
            status, _, twiml = await post(http, bridge, "/twilio/voice", body, FORM)
            assert status == 200, twiml
            assert stream_of(twiml) == (
                f"wss://127.0.0.1:{bridge.port}/twilio",
                {"From": "+14155550100", "To": "+14155550199", "CallSid": CALL_SID},
            )
            caller = TwilioCaller(http, bridge.ws_url)
            await caller.connect()
            sent = await caller.send_audio(tone(0.2))

            for state in ("full", "draining"):
                if state == "draining":
                    bridge.signal(signal.SIGTERM)
                    await eventually(
                        lambda: asyncio.to_thread(bridge.get, "/readyz"),
                        lambda answer: answer[1].get("reason") == "draining",
                    )
                status, content_type, twiml = await post(http, bridge, "/twilio/voice", body, FORM)
                assert status == 200 and content_type.startswith("text/xml"), (state, twiml)
                root = ET.fromstring(twiml)
                assert [child.tag for child in root] == ["Say", "Hangup"], state
                assert root.findtext("Say") == "All lines <busy> & then some."
            sent += await caller.send_audio(tone(0.2))
            # The live call kept its audio through the drain: every frame came back.
            await caller.hears_back(sent)
            await caller.stop()
            await caller.close()
        assert bridge.proc.wait(30) == 0
    log = bridge.log()
    assert "answered busy: the bridge is full" in log
    assert "answered busy: the bridge is draining" in log


def _bad_requests() -> list[tuple[str, str, bytes, dict[str, str], int]]:
    """(what, path, body, headers, expected status) of every refusal the webhooks document."""
    voice_body = urlencode(RINGING).encode()
    no_sid = [pair for pair in RINGING if pair[0] != "CallSid"]
    bad_sid = [("CallSid", "CA\n<3>forged"), *RINGING[2:]]
    wrong_type = [*RINGING[:4], ("CallStatus", "completed"), ("CallDuration", "forty")]
    no_status = RINGING[:4]
    huge = urlencode([*RINGING, ("Pad", "x" * 70_000)]).encode()
    return [
        ("unsigned", "/twilio/voice", voice_body, FORM, 403),
        ("forged", "/twilio/voice", voice_body, signed(VOICE_URL, RINGING, "not-the-token"), 403),
        ("other url", "/twilio/voice", voice_body, signed(STATUS_URL, RINGING), 403),
        (
            "tampered",
            "/twilio/voice",
            voice_body.replace(b"0100", b"0101"),
            signed(VOICE_URL, RINGING),
            403,
        ),
        ("unsigned status", "/twilio/status", voice_body, FORM, 403),
        ("json", "/twilio/voice", b'{"CallSid": "CA1"}', {"Content-Type": "application/json"}, 415),
        ("oversize", "/twilio/voice", huge, FORM, 413),
        ("not a form", "/twilio/voice", b"CallSid", FORM, 400),
        ("raw bytes", "/twilio/voice", b"CallSid=CA1&From=\xff\xfe", FORM, 400),
        ("bad escape", "/twilio/voice", b"CallSid=CA1&From=%ff", FORM, 400),
        ("no CallSid", "/twilio/voice", urlencode(no_sid).encode(), signed(VOICE_URL, no_sid), 400),
        (
            "forged CallSid",
            "/twilio/voice",
            urlencode(bad_sid).encode(),
            signed(VOICE_URL, bad_sid),
            400,
        ),
        (
            "wrong type",
            "/twilio/status",
            urlencode(wrong_type).encode(),
            signed(STATUS_URL, wrong_type),
            400,
        ),
        (
            "no CallStatus",
            "/twilio/status",
            urlencode(no_status).encode(),
            signed(STATUS_URL, no_status),
            400,
        ),
    ]


async def test_bad_webhook_requests_are_refused_and_a_live_call_keeps_its_audio(
    signed_bridge: BridgeProcess,
) -> None:
    bridge = signed_bridge
    async with aiohttp.ClientSession() as http, ControlClient(http, bridge.ws_url) as control:
        stream_headers = {
            "X-Twilio-Signature": twilio.expected_signature(TOKEN, PUBLIC + "/twilio", {})
        }
        caller = TwilioCaller(http, bridge.ws_url, headers=stream_headers)
        token = twilio.stream_token(TOKEN, caller.call_sid, int(time.time()) + 60)
        await caller.connect(custom={twilio.STREAM_TOKEN_PARAMETER: token})
        talking = asyncio.create_task(caller.send_audio(tone(3.0)))
        await asyncio.sleep(0.3)
        for what, path, body, headers, expected in _bad_requests():
            status, _, text = await post(http, bridge, path, body, headers)
            assert status == expected, (what, status, text)
            if status != 413:
                assert text.startswith('{"error": '), (what, text)
        async with http.get(bridge.http_url + "/twilio/voice") as response:
            assert response.status == 405
        sent = await talking
        # The live call kept its audio: every frame came back.
        await caller.hears_back(sent)
        assert caller.close_code is None
        await caller.stop()
        await caller.close()
        assert not control.of_type("carrier_status"), "no refused request reached /control"
    metrics = bridge.get("/metrics")[1]
    assert 'xswarm_calls_rejected_total{reason="auth"} 5' in metrics
    log = bridge.log()
    assert "<3>forged" not in log
