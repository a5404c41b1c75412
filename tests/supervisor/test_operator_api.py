"""The operator surface of a real ``xswarm-dashboard`` under bad, hostile and excessive input.

No bridge is needed: the supervisor watches a port nobody listens on, so it stays up with one
instance down. Every malformed message must get a precise error and leave the connection usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.supervisor.support import SupervisorProcess, operator, running_supervisor
from tests.support.bridge import free_port
from tests.support.waiting import eventually

TOKEN = "operator-api-token-9c2e"


@pytest.fixture(scope="module")
def sup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupervisorProcess]:
    tmp = tmp_path_factory.mktemp("operator-api")
    nowhere = f"ws://127.0.0.1:{free_port()}/control"
    with running_supervisor(tmp, [nowhere], env={"XSWARM_SUPERVISOR_TOKEN": TOKEN}) as process:
        yield process


async def authed(op) -> None:  # type: ignore[no-untyped-def]
    await op.send({"type": "auth", "token": TOKEN})
    assert (await op.next())["success"] is True


MALFORMED = [
    ("{not json", "invalid JSON: Expecting property name enclosed in double quotes"),
    ("[1, 2]", "expected a JSON object, got an array"),
    ('"subscribe"', "expected a JSON object, got a string"),
    ("42", "expected a JSON object, got a number"),
    ("null", "expected a JSON object, got null"),
    ("{}", 'missing "type"'),
    ('{"type": 5}', '"type" must be a string, got a number'),
    ('{"type": "reboot"}', "unknown type 'reboot'"),
    ('{"type": "' + "x" * 500 + '"}', "unknown type 'xxxxxxxx"),
    ('{"type": "auth"}', 'auth: missing "token"'),
    ('{"type": "auth", "token": 12}', 'auth: "token" must be a string, got a number'),
    ('{"type": "inject_suggestion"}', 'inject_suggestion: missing "text"'),
    ('{"type": "inject_suggestion", "text": ["a"]}', '"text" must be a string, got an array'),
    (
        '{"type": "inject_suggestion", "text": "a", "priority": "urgent"}',
        '"priority" must be one of low, normal, high',
    ),
    (
        '{"type": "inject_suggestion", "text": "a", "call_id": 3}',
        '"call_id" must be a string, got a number',
    ),
    (
        '{"type": "inject_suggestion", "text": "a", "request_id": 1.5}',
        '"request_id" must be a string or an integer, got a number',
    ),
    (
        '{"type": "inject_suggestion", "text": "a", "request_id": true}',
        '"request_id" must be a string or an integer, got a boolean',
    ),
    (
        '{"type": "inject_suggestion", "text": "a", "request_id": "' + "r" * 200 + '"}',
        '"request_id" is longer than 128 characters',
    ),
    ('{"type": "hangup"}', 'hangup: missing "call_id"'),
    ('{"type": "hangup", "call_id": {"a": 1}}', '"call_id" must be a string, got an object'),
    ('{"type": "hangup", "call_id": ""}', '"call_id" must not be empty'),
    ('{"type": "ping", "id": []}', '"id" must be a string or an integer, got an array'),
    ("[" * 50_000, "invalid JSON"),
]


async def test_every_malformed_message_gets_a_precise_error_and_the_socket_stays_usable(
    sup: SupervisorProcess,
) -> None:
    async with operator(sup.ws_url) as op:
        await authed(op)
        for raw, expected in MALFORMED:
            await op.send(raw)
            reply = await op.next()
            assert reply["type"] == "error", raw[:60]
            assert expected in reply["message"], (raw[:60], reply["message"])
        await op.ws.send_bytes(b"\x00\x01binary")
        reply = await op.next()
        assert reply == {
            "type": "error",
            "message": "binary messages are not accepted; send JSON text",
        }
        await op.send({"type": "ping", "id": "still-here"})
        assert await op.next() == {"type": "pong", "id": "still-here"}


async def test_oversized_messages_are_refused_but_the_connection_stays(
    sup: SupervisorProcess,
) -> None:
    async with operator(sup.ws_url) as op:
        await authed(op)
        big = json.dumps({"type": "inject_suggestion", "text": "x" * 100_000})
        await op.send(big)
        reply = await op.next()
        assert reply["type"] == "error"
        assert reply["message"] == f"message is {len(big)} bytes; the limit is 65536"
        await op.send({"type": "ping"})
        assert await op.next() == {"type": "pong"}


async def test_a_message_beyond_the_transport_limit_closes_with_1009(
    sup: SupervisorProcess,
) -> None:
    async with operator(sup.ws_url) as op:
        await authed(op)
        # The server answers 1009 and closes; when it closes while the rest of the frame is
        # still arriving, the kernel resets the connection: the client's write fails, or it
        # sees only 1006. Either way the server refused the frame and kept serving (below).
        with contextlib.suppress(ConnectionError):
            await op.send("x" * (2 << 20))
        assert await op.closed() in (1009, 1006)
    async with operator(sup.ws_url) as op:
        await authed(op)


async def test_a_flood_is_closed_with_1008(sup: SupervisorProcess) -> None:
    async with operator(sup.ws_url) as op:
        await authed(op)
        for _ in range(3000):
            await op.send('{"type":"ping"}')
        replies: list[dict] = []
        code = None
        while code is None:
            msg = await op.ws.receive(timeout=20)
            if msg.type == aiohttp.WSMsgType.TEXT:
                replies.append(json.loads(msg.data))
            else:
                code = op.ws.close_code
        assert code == 1008
        assert replies[-1]["type"] == "error" and replies[-1]["message"].startswith("flood")
    status, text = sup.get("/metrics")
    assert 'xswarm_supervisor_operators_dropped_total{reason="flood"} 1' in text


async def test_commands_before_auth_are_refused_without_closing(sup: SupervisorProcess) -> None:
    async with operator(sup.ws_url) as op:
        await op.send({"type": "subscribe"})
        reply = await op.next()
        assert reply["type"] == "error" and reply["message"].startswith("not authenticated")
        await op.send("{broken")
        assert (await op.next())["type"] == "error"
        await authed(op)
        await op.send({"type": "subscribe"})
        snap = await op.next()
        assert snap["type"] == "snapshot"
        assert snap["instances"][0]["state"] == "down"
        assert snap["calls"] == []


async def test_a_wrong_token_gets_auth_result_false_and_1008(sup: SupervisorProcess) -> None:
    async with operator(sup.ws_url) as op:
        await op.send({"type": "auth", "token": "guess"})
        result = await op.next()
        assert result["type"] == "auth_result" and result["success"] is False
        assert "invalid token" in result["message"]
        assert await op.closed() == 1008


async def test_a_wrong_bearer_header_is_refused_at_once(sup: SupervisorProcess) -> None:
    async with operator(sup.ws_url, token="nope", header=True) as op:
        result = await op.next()
        assert result["success"] is False
        assert await op.closed() == 1008


async def test_a_good_bearer_header_is_authenticated_immediately(sup: SupervisorProcess) -> None:
    async with operator(sup.ws_url, token=TOKEN, header=True) as op:
        assert await op.next() == {
            "type": "auth_result",
            "success": True,
            "message": "authenticated",
        }
        await op.send({"type": "auth", "token": TOKEN})
        assert (await op.next())["success"] is True
        await op.send({"type": "hangup", "call_id": "c-1"})
        assert await op.next() == {"type": "error", "message": "no live call c-1"}


async def test_repeated_bad_tokens_are_counted(sup: SupervisorProcess) -> None:
    _, before = sup.get("/metrics")
    for n in range(3):
        async with operator(sup.ws_url) as op:
            await op.send({"type": "auth", "token": f"wrong-{n}"})
            assert (await op.next())["success"] is False

    def failures(text: str) -> int:
        line = next(
            x for x in text.splitlines() if x.startswith("xswarm_supervisor_auth_failures_total")
        )
        return int(line.split()[-1])

    _, after = sup.get("/metrics")
    assert failures(after) - failures(before) == 3
    # One success from the address forgives it.
    async with operator(sup.ws_url) as op:
        await authed(op)


def test_http_endpoints_and_their_auth(sup: SupervisorProcess) -> None:
    assert sup.get("/healthz") == (200, {"status": "ok"})
    # With a token configured the API needs it from loopback too (caller data is in there).
    status, body = sup.get("/api/instances")
    assert status == 401 and "token is required" in body["error"]
    status, instances = sup.get("/api/instances", token=TOKEN)
    assert status == 200 and instances[0]["state"] == "down"
    status, body = sup.get("/api/instances", token="wrong")
    assert status == 401 and "invalid token" in body["error"]
    status, body = sup.get("/api/calls", token="wrong")
    assert status == 401
    status, text = sup.get("/metrics")
    assert status == 200
    assert "# TYPE xswarm_supervisor_instance_up gauge" in text
    assert "xswarm_supervisor_instance_up{instance=" in text


def test_a_proxied_request_is_not_trusted_as_loopback(sup: SupervisorProcess) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        sup.http_url + "/api/instances", headers={"X-Forwarded-For": "203.0.113.9"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    refused.value.close()
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "abc", "1.5", "", "99999999999999999999"])
def test_history_limit_is_validated(sup: SupervisorProcess, limit: str) -> None:
    status, body = sup.get(f"/api/calls?limit={limit}", token=TOKEN)
    assert status == 400
    assert body["error"].startswith("limit must be a whole number from 1 to 1000")


@pytest.mark.parametrize("limit", ["1", "1000"])
def test_history_limit_bounds_are_accepted(sup: SupervisorProcess, limit: str) -> None:
    assert sup.get(f"/api/calls?limit={limit}", token=TOKEN) == (200, [])


async def test_without_a_token_only_loopback_is_trusted(tmp_path: Path) -> None:
    nowhere = f"ws://127.0.0.1:{free_port()}/control"
    with running_supervisor(tmp_path, [nowhere]) as dev:
        async with operator(dev.ws_url) as op:
            await op.send({"type": "auth", "token": "anything"})
            result = await op.next()
            assert result["success"] is True
            assert "XSWARM_SUPERVISOR_TOKEN is not set" in result["message"]
        async with operator(dev.ws_url) as op:
            await op.send({"type": "subscribe"})
            assert (await op.next())["type"] == "snapshot"
        async with aiohttp.ClientSession() as session:
            async with session.get(
                dev.http_url + "/api/calls", headers={"X-Forwarded-For": "203.0.113.9"}
            ) as response:
                assert response.status == 401
                assert "only loopback peers" in (await response.json())["error"]


async def failures(session: aiohttp.ClientSession, base: str) -> int:
    async with session.get(base + "/metrics") as response:
        text = await response.text()
    line = next(
        x for x in text.splitlines() if x.startswith("xswarm_supervisor_auth_failures_total")
    )
    return int(line.split()[-1])


async def test_parallel_guessing_gains_nothing_and_ends_in_a_lockout(tmp_path: Path) -> None:
    nowhere = f"ws://127.0.0.1:{free_port()}/control"
    with running_supervisor(tmp_path, [nowhere], env={"XSWARM_SUPERVISOR_TOKEN": TOKEN}) as s:
        async with aiohttp.ClientSession() as session:

            async def guess(n: int) -> int:
                headers = {"Authorization": f"Bearer guess-{n}"}
                async with session.get(s.http_url + "/api/instances", headers=headers) as r:
                    return r.status

            # Failures from one address are answered one after another (0.25 s, 0.5 s, …),
            # so the eleventh guess finds a backlog of over 30 s and is not even checked.
            pending = [asyncio.create_task(guess(n)) for n in range(10)]
            await eventually(lambda: failures(session, s.http_url), lambda n: n >= 10)
            assert await guess(99) == 429
            async with operator(s.ws_url, token="guess-100", header=True) as op:
                refused = await op.next()
                assert refused["success"] is False
                assert refused["message"].startswith("too many failed authentications")
                assert await op.closed() == 1008
            # The right token is never held up by the lockout: it is checked first.
            async with operator(s.ws_url, token=TOKEN, header=True) as op:
                assert (await op.next())["success"] is True
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
