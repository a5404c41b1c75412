"""A lean Twilio Media Streams echo: the floor the bridge's own cost is measured against.

    .venv/bin/python benchmarks/baseline_echo.py --port 9990

aiohttp, one handler per call: each media message is parsed, decoded from mu-law,
resampled 8 -> 24 kHz and back with the bridge's own ``StreamResampler`` at the quality the
bridge picks for echo (soxr QQ, padded start), encoded and sent straight back. Nothing else:
no engine loop, no ticks, no admission, events, metrics or pacing. ``benchmarks/bridge_load.py
--baseline`` runs it beside ``xswarm-voice`` with the same client.
"""

from __future__ import annotations

import argparse
import binascii
import json

from aiohttp import WSMsgType, web

from xswarm.audio import mulaw
from xswarm.audio.resample import StreamResampler
from xswarm.bridge.media_stream import resampler_quality

QUALITY = resampler_quality("auto", "echo")


async def twilio(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    up = StreamResampler(8000, 24000, QUALITY, pad_start=True)
    down = StreamResampler(24000, 8000, QUALITY, pad_start=True)
    head = ""
    async for message in ws:
        if message.type != WSMsgType.TEXT:
            break
        event = json.loads(message.data)
        kind = event.get("event")
        if kind == "start":
            head = '{"event":"media","streamSid":' + json.dumps(event["streamSid"])
            head += ',"media":{"payload":"'
        elif kind == "media" and head:
            pcm = down.process(
                up.process(mulaw.decode(binascii.a2b_base64(event["media"]["payload"])))
            )
            if len(pcm):
                payload = binascii.b2a_base64(mulaw.encode(pcm), newline=False).decode()
                await ws.send_str(head + payload + '"}}')
        elif kind == "stop":
            break
    return ws


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"state": "ready"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9990)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/twilio", twilio)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
