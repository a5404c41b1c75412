"""A Twilio Media Streams caller run INSIDE the test container with a release's own python.

It uses the shipped wire format (``xswarm.protocol.twilio``) over aiohttp, paces 20 ms frames
in real time and writes what happened as JSON, so the tests judge calls by their outcome:

    python call_client.py hold --port 9998 --seconds 20 --out /run/call1.json
    python call_client.py loop --port 9998 --seconds 60 --call-seconds 1 --out /run/loop.json

``hold`` keeps one call up; ``loop`` places short calls back to back (counting failures).
A ``.started`` file appears next to ``--out`` once the first reply frame came back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aiohttp

from xswarm.protocol import twilio

FRAME = bytes((i * 37) & 0xFF for i in range(160))


async def one_call(port: int, seconds: float, started: Path | None = None) -> dict[str, object]:
    sid, call_sid = twilio.new_stream_sid(), twilio.new_call_sid()
    media = twilio.InboundMedia(sid)
    result: dict[str, object] = {"ok": False, "sent": 0, "received": 0, "error": ""}
    received = 0
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                f"ws://127.0.0.1:{port}/twilio",
                timeout=aiohttp.ClientWSTimeout(ws_close=5),
            ) as ws,
        ):
            await ws.send_str(twilio.connected_message())
            await ws.send_str(twilio.start_message(sid, call_sid))

            async def reader() -> None:
                nonlocal received
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT and '"media"' in message.data:
                        received += 1
                        if received == 1 and started is not None:
                            await asyncio.to_thread(started.write_text, str(time.time()))

            task = asyncio.create_task(reader())
            begin = time.monotonic()
            sequence = 2
            while time.monotonic() - begin < seconds:
                if ws.closed:
                    result["error"] = f"server closed the call (code {ws.close_code})"
                    break
                await ws.send_str(media.message(sequence, sequence - 1, (sequence - 2) * 20, FRAME))
                sequence += 1
                await asyncio.sleep(max(0.0, begin + (sequence - 2) * 0.02 - time.monotonic()))
            result["sent"] = sequence - 2
            if not ws.closed:
                await ws.send_str(
                    json.dumps({"event": "stop", "streamSid": sid, "sequenceNumber": str(sequence)})
                )
                await asyncio.sleep(0.3)  # a grace for the bridge to end the call on stop
                await ws.close()
            task.cancel()
            result["close_code"] = ws.close_code
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["received"] = received
    result["ok"] = not result["error"] and received > 0
    return result


async def loop(port: int, seconds: float, call_seconds: float) -> dict[str, object]:
    outcomes = []
    durations = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        begin = time.monotonic()
        outcomes.append(await one_call(port, call_seconds))
        durations.append(time.monotonic() - begin)
    failed = [o for o in outcomes if not o["ok"]]
    return {
        "calls": len(outcomes),
        "failed": len(failed),
        "slowest_s": round(max(durations, default=0.0), 2),
        "errors": sorted({str(o["error"]) or "no media back" for o in failed})[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("hold", "loop"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--call-seconds", type=float, default=1.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.mode == "hold":
        started = args.out.with_suffix(".started")
        outcome = asyncio.run(one_call(args.port, args.seconds, started))
    else:
        outcome = asyncio.run(loop(args.port, args.seconds, args.call_seconds))
    staging = args.out.with_suffix(".tmp")
    staging.write_text(json.dumps(outcome))
    staging.replace(args.out)


if __name__ == "__main__":
    main()
