"""The browser client end to end: Debian's chromium, a fake microphone playing
samples/hello.wav, the real ``xswarm-voice`` with the echo engine, driven over CDP."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.bridge import BridgeProcess, running_bridge
from tests.support.calls import ControlClient
from tests.support.waiting import eventually
from tests.web.cdp import Page, chromium_page, find_chromium

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "samples" / "hello.wav"
SCREENSHOT = ROOT / "docs" / "web-client.png"
ECHO_WEB = '[voice.bridge]\nengine = "echo"\nweb_client = true\n'
RATE = 24000


def chromium_or_skip() -> str:
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get("XSWARM_REQUIRE_SYSTEMD"):
            pytest.fail(
                "chromium is missing and XSWARM_REQUIRE_SYSTEMD is set: run deploy/ci/system-deps.sh"
            )
        pytest.skip(
            "chromium is not installed (apt-get install chromium; deploy/ci/system-deps.sh)"
        )
    return chromium


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, MSB first, no reflection), bit by bit."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def ogg_page(packet: bytes, granule: int, serial: int, sequence: int, flags: int) -> bytes:
    lacing = [255] * (len(packet) // 255) + [len(packet) % 255]
    header = b"OggS" + struct.pack("<BBqIII", 0, flags, granule, serial, sequence, 0)
    page = bytearray(header + bytes([len(lacing)]) + bytes(lacing) + packet)
    page[22:26] = struct.pack("<I", ogg_crc(bytes(page)))
    return bytes(page)


async def test_the_pages_ogg_framing_is_byte_for_byte_rfc_7845(tmp_path: Path) -> None:
    chromium = chromium_or_skip()
    with running_bridge(tmp_path, ECHO_WEB) as bridge:
        async with chromium_page(chromium, tmp_path / "profile", bridge.http_url + "/") as page:
            await wait_loaded(page)
            pages = await page.evaluate(
                """import('/web/ogg.js').then((ogg) => {
                  const w = new ogg.OggOpusWriter({channels: 1, inputRate: 24000, preSkip: 312, serial: 0x1234abcd});
                  const big = new Uint8Array(600).map((_, i) => i % 251);
                  const out = [...w.headerPages(), w.packetPage(new Uint8Array([1, 2, 3]), 20000),
                               w.packetPage(big, 20000)];
                  const reader = new ogg.OggReader();
                  const joined = out.map((p) => Array.from(p)).flat();
                  const back = [...reader.push(new Uint8Array(joined.slice(0, 50))),
                                ...reader.push(new Uint8Array(joined.slice(50)))];
                  return {pages: out.map((p) => Array.from(p)), back: back.map((p) => p.length),
                          crc: ogg.oggCrc(new TextEncoder().encode('OggS'))};
                })"""
            )
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 312, 24000, 0, 0)
    vendor = b"xswarm web client"
    tags = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)
    big = bytes(i % 251 for i in range(600))
    serial = 0x1234ABCD
    expected = [
        ogg_page(head, 0, serial, 0, 0x02),
        ogg_page(tags, 0, serial, 1, 0),
        ogg_page(b"\x01\x02\x03", 960, serial, 2, 0),
        ogg_page(big, 1920, serial, 3, 0),
    ]
    assert [bytes(p) for p in pages["pages"]] == expected
    assert pages["back"] == [19, len(tags), 3, 600]
    assert pages["crc"] == ogg_crc(b"OggS")


async def test_a_browser_calls_the_echo_bridge_and_hears_itself(tmp_path: Path) -> None:
    chromium = chromium_or_skip()
    flags = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={HELLO}",
        "--autoplay-policy=no-user-gesture-required",
    ]
    words = "hello from the operator"
    with running_bridge(tmp_path, ECHO_WEB) as bridge:
        async with (
            aiohttp.ClientSession() as http,
            ControlClient(http, bridge.ws_url) as control,
            chromium_page(
                chromium, tmp_path / "profile", bridge.http_url + "/?test", flags
            ) as page,
        ):
            await wait_loaded(page)
            await page.click("#call")
            started = await control.wait_for("call_started", timeout=20)
            assert started["transport"] == "moshi", page.console
            call_id = started["call_id"]
            await control.send(
                {"type": "inject_suggestion", "call_id": call_id, "text": words, "request_id": 1}
            )
            # hello.wav (3 s, looped by chromium) goes up and comes back for a while.
            stats = await wait_for_stats(
                page,
                lambda s: (
                    s["sentSamples"] > 4 * RATE
                    and s["playedSamples"] > 2 * RATE
                    and s["latencyMs"] is not None
                    and words in s["text"]
                ),
            )
            shown = await page.evaluate(
                "({latency: document.querySelector('#latency').textContent,"
                " transcript: document.querySelector('#transcript').textContent,"
                " state: document.querySelector('#state').textContent})"
            )
            png = await page.screenshot()
            await asyncio.to_thread((tmp_path / "web-client.png").write_bytes, png)
            await page.click("#hangup")
            ended = await control.wait_for("call_ended", call_id=call_id, timeout=10)
            speech = control.of_type("user_speech", call_id=call_id)
            final = await page.evaluate("window.__xswarm")
    if os.environ.get("XSWARM_UPDATE_SCREENSHOT"):  # the README's picture; off by default so
        shutil.copyfile(tmp_path / "web-client.png", SCREENSHOT)  # tests leave the tree clean
    assert ended["reason"] == "caller_hangup"
    # The bridge heard the caller: one 20 ms packet in per frame, for the whole call...
    sent_seconds = final["sentSamples"] / RATE
    assert sent_seconds > 4
    assert ended["frames_in"] >= 0.9 * sent_seconds / 0.02, (ended, final)
    assert ended["frames_in"] <= 1.1 * sent_seconds / 0.02 + 5, (ended, final)
    # ...and it was speech: the bridge's own speech detector found the sample's words.
    assert speech and max(e["duration_ms"] for e in speech) >= 500, speech
    # Audio came back and was played, loud enough to be the echo of a voice, not silence.
    assert 0.8 * sent_seconds - 1 <= final["decodedSamples"] / RATE <= sent_seconds + 0.5, final
    played_rms = (final["playedEnergy"] / final["playedSamples"]) ** 0.5
    assert played_rms > 0.01, final
    assert stats["errors"] == [] and final["errors"] == [], final
    # The page showed the call's words and a latency.
    assert words in shown["transcript"]
    assert shown["latency"].endswith(" ms") and 0 < stats["latencyMs"] < 2000, shown
    assert "In call" in shown["state"]


async def test_the_page_is_served_only_when_enabled_with_strict_headers(tmp_path: Path) -> None:
    with running_bridge(tmp_path, ECHO_WEB, name="on") as bridge:
        status, body, headers = await fetch(bridge, "/")
        assert status == 200 and 'src="/web/app.js"' in body
        assert headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert "<script>" not in body and "style=" not in body  # nothing inline for CSP to allow
        for path in ("/web/app.js", "/web/ogg.js", "/web/worklets.js"):
            status, _, headers = await fetch(bridge, path)
            assert status == 200 and headers["Content-Type"].startswith("text/javascript")
        assert (await fetch(bridge, "/web/../config.toml"))[0] == 404
        assert (await fetch(bridge, "/web/missing.js"))[0] == 404
    with running_bridge(tmp_path, '[voice.bridge]\nengine = "echo"\n', name="off") as bridge:
        assert (await fetch(bridge, "/"))[0] == 404
        assert (await fetch(bridge, "/web/app.js"))[0] == 404


async def test_a_call_token_is_required_on_api_chat_as_query_or_bearer(tmp_path: Path) -> None:
    token = "t0ken-for-callers-only-0123456789"
    env = {"XSWARM_CALL_TOKEN": token, "XSWARM_CONTROL_TOKEN": "another-secret-for-control"}
    with running_bridge(tmp_path, ECHO_WEB, env=env) as bridge:
        async with aiohttp.ClientSession() as http:
            url = bridge.ws_url + "/api/chat"
            for query, headers, status in (
                ("", {}, 401),
                ("?token=wrong", {}, 401),
                ("", {"Authorization": "Bearer wrong"}, 401),
            ):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(url + query, headers=headers)
                assert refused.value.status == status
            for query, headers in (
                ("?token=" + token, {}),
                ("", {"Authorization": f"Bearer {token}"}),
            ):
                async with http.ws_connect(url + query, headers=headers) as ws:
                    assert (await ws.receive(timeout=5)).data == b"\x00"
            status, _, _ = await fetch(bridge, "/")
            assert status == 200  # the page itself is public; it asks for the token


async def fetch(bridge: BridgeProcess, path: str) -> tuple[int, str, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(bridge.http_url + path) as response,
    ):
        return response.status, await response.text(), dict(response.headers)


async def wait_loaded(page: Page) -> None:
    async def loaded() -> bool:
        return bool(
            await page.evaluate(
                "document.readyState === 'complete' && !!document.querySelector('#call')"
            )
        )

    await eventually(loaded, within=20, detail=lambda: "\n".join(page.console))


async def wait_for_stats(page: Page, ok: Any, within: float = 20) -> dict[str, Any]:
    last: dict[str, Any] = {}

    async def good() -> bool:
        nonlocal last
        last = await page.evaluate("window.__xswarm")
        return bool(last and ok(last))

    await eventually(
        good, within=within, detail=lambda: json.dumps(last) + "\n" + "\n".join(page.console)
    )
    return last
