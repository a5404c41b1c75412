"""Issue 9, items 4 and 6: Twilio's signature and stream token, and logs no peer can forge."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import aiohttp
import pytest

from tests.security.support import genuine_call, run_service
from tests.support.bridge import free_port, running_bridge
from tests.support.calls import TwilioCaller
from tests.support.waiting import eventually
from xswarm import logs
from xswarm.protocol import twilio

ECHO = '[voice.bridge]\nengine = "echo"\n'
TWILIO_TOKEN = "twilio-auth-token-for-security-tests"
PUBLIC = "wss://voice.example.com/prefix"


def signed(url: str) -> dict[str, str]:
    return {"X-Twilio-Signature": twilio.expected_signature(TWILIO_TOKEN, url, {})}


def test_a_twilio_token_without_public_url_refuses_to_start(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'{ECHO}port = {free_port()}\n[paths]\nstate_dir = "{tmp_path}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XSWARM_", "TWILIO_"))}
    env["TWILIO_AUTH_TOKEN"] = TWILIO_TOKEN
    done = run_service("xswarm-voice", ["--config", str(config)], env, tmp_path)
    assert done.returncode == 78, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "[voice.bridge] public_url: is required" in lines[0]


async def test_forwarded_headers_cannot_choose_the_signed_url_and_the_prefix_is_kept(
    tmp_path: Path,
) -> None:
    """Signed for the attacker's own X-Forwarded-Host: refused. Genuine, behind /prefix: in."""
    config = f'{ECHO}public_url = "{PUBLIC}"\n'
    with running_bridge(tmp_path, config, env={"TWILIO_AUTH_TOKEN": TWILIO_TOKEN}) as bridge:
        async with aiohttp.ClientSession() as http:
            forged = {"X-Forwarded-Host": "attacker.example", "X-Forwarded-Proto": "https"}
            forged |= signed("wss://attacker.example/twilio")
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(bridge.ws_url + "/twilio", headers=forged)
            assert refused.value.status == 403
        await genuine_call(bridge, headers=signed(PUBLIC + "/twilio"))


async def test_a_leaked_signature_needs_a_fresh_stream_token_per_call(tmp_path: Path) -> None:
    config = f'{ECHO}public_url = "{PUBLIC}"\ntwilio_stream_token = true\n'
    headers = signed(PUBLIC + "/twilio")
    with running_bridge(tmp_path, config, env={"TWILIO_AUTH_TOKEN": TWILIO_TOKEN}) as bridge:
        async with aiohttp.ClientSession() as http:
            now = int(time.time())
            replays = [
                None,
                twilio.stream_token(TWILIO_TOKEN, "CAsomeothercall", now + 60),
                twilio.stream_token(TWILIO_TOKEN, "CAfixed", now - 1),
                twilio.stream_token("not-the-secret", "CAfixed", now + 60),
            ]
            for token in replays:
                caller = TwilioCaller(http, bridge.ws_url, headers=headers)
                caller.call_sid = "CAfixed"
                custom = {} if token is None else {twilio.STREAM_TOKEN_PARAMETER: token}
                await caller.connect(custom=custom)
                assert await caller.wait_closed() == 1008
            caller = TwilioCaller(http, bridge.ws_url, headers=headers)
            token = twilio.stream_token(TWILIO_TOKEN, caller.call_sid, now + 60)
            await caller.connect(custom={twilio.STREAM_TOKEN_PARAMETER: token})
            sent = await caller.send_audio(np_tone())
            await caller.hears_back(sent)
            await caller.stop()
            await caller.close()
        assert 'xswarm_calls_rejected_total{reason="auth"} 4' in bridge.get("/metrics")[1]


def np_tone():  # type: ignore[no-untyped-def]
    from tests.support.calls import tone

    return tone(0.3)


@pytest.mark.parametrize(
    "stream_sid",
    ["MZ\n<3>xswarm.supervisor: operator root logged in", "MZ\u2028forged", "MZ" + "a" * 500],
    ids=["newline", "line-separator", "too-long"],
)
async def test_a_forged_stream_sid_is_refused_and_forges_no_log_line(
    tmp_path: Path, stream_sid: str
) -> None:
    with running_bridge(tmp_path, ECHO) as bridge:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(bridge.ws_url + "/twilio") as ws:
                await ws.send_str(twilio.connected_message())
                await ws.send_str(twilio.start_message(stream_sid, twilio.new_call_sid()))
                await ws.receive(timeout=10)
                assert ws.close_code == 1007
        await genuine_call(bridge)
        log = await eventually(bridge.log, lambda text: "must be 1 to 64 letters or digits" in text)
        assert not any(line.startswith("<3>xswarm.supervisor") for line in log.splitlines())
        assert "forged" not in log.replace("\\u2028forged", "")


async def test_a_flood_of_invented_event_names_is_counted_not_logged(tmp_path: Path) -> None:
    with running_bridge(tmp_path, ECHO) as bridge:
        async with aiohttp.ClientSession() as http:
            caller = TwilioCaller(http, bridge.ws_url)
            await caller.connect()
            for n in range(300):
                await caller.send(json.dumps({"event": f"invented-{n}\n<3>x", "streamSid": "MZ1"}))
            sent = await caller.send_audio(np_tone())
            # The call itself went on: every frame came back.
            await caller.hears_back(sent)
            await caller.stop()
            await caller.close()
        await genuine_call(bridge)
        lines = [line for line in bridge.log().splitlines() if "unknown Twilio event" in line]
        assert len(lines) == 4, lines
        assert all("\\n<3>x" in line for line in lines)
        assert "xswarm_twilio_unknown_events_total 300" in bridge.get("/metrics")[1]


def test_the_formatter_writes_one_journal_line_per_record() -> None:
    """The issue: a \\n and a U+2028 in a streamSid produced two forged supervisor lines."""
    formatter = logs.JournalFormatter(with_time=False)
    forged = "MZ1\n<3>xswarm.supervisor: forged\u2028<3>again\r\x1b[2J\x85\u2029\x00"
    record = logging.LogRecord(
        "xswarm.twilio", logging.WARNING, __file__, 1, "bad streamSid %s", (forged,), None
    )
    record.call_id = "c-1\nx"
    text = formatter.format(record)
    assert len(text.split("\n")) == 1 and len(text.splitlines()) == 1
    assert text.startswith("<4>xswarm.twilio: call=c-1\\nx bad streamSid MZ1\\n<3>xswarm")
    for escaped in ("\\u2028", "\\r", "\\x1b", "\\x85", "\\u2029", "\\x00"):
        assert escaped in text
    try:
        raise ValueError("boom\n<3>forged")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    lines = formatter.format(record).split("\n")
    assert all(line.startswith("<4>") for line in lines)
    assert lines[-1] == "<4>ValueError: boom\\n<3>forged"
