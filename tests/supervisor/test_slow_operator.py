"""An operator that cannot keep up is cut loose; the others and the hub carry on.

The supervisor's app runs in-process on a free loopback port, so the test can push a burst
of events through the real hub faster than any socket drains them.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
from aiohttp import web

from xswarm.supervisor.api import build_app
from xswarm.supervisor.hub import OPERATOR_QUEUE, OperatorHub
from xswarm.supervisor.store import Store


async def test_an_operator_that_falls_behind_is_closed_with_1008(tmp_path: Path) -> None:
    store = Store(tmp_path / "xswarm.db", history_limit=100)
    hub = OperatorHub(store, stale_after=2.0, token=None)
    await hub.start([])
    runner = web.AppRunner(build_app(hub))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            async with (
                session.ws_connect(f"ws://127.0.0.1:{port}/ws") as slow,
                session.ws_connect(f"ws://127.0.0.1:{port}/ws") as idle,
            ):
                await slow.send_str(json.dumps({"type": "subscribe"}))
                assert json.loads((await slow.receive(timeout=10)).data)["type"] == "snapshot"
                for n in range(OPERATOR_QUEUE * 3):
                    hub.broadcast({"type": "text", "call_id": "c1", "text": f"{n:06d}" * 100})
                received = 0
                while True:
                    msg = await slow.receive(timeout=10)
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    received += 1
                assert slow.close_code == 1008
                assert received <= OPERATOR_QUEUE
                assert hub.counters.operators_dropped_slow == 1
                # The unsubscribed operator was never queued anything and is still served.
                await idle.send_str(json.dumps({"type": "ping", "id": 1}))
                assert json.loads((await idle.receive(timeout=10)).data) == {
                    "type": "pong",
                    "id": 1,
                }
    finally:
        await hub.close()
        await runner.cleanup()
        store.close()
