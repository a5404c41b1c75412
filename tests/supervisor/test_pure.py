"""The supervisor's auth wording, operator message parsing and backoff: plain functions."""

from __future__ import annotations

import random

import pytest

from xswarm.protocol import auth
from xswarm.protocol import operator as messages
from xswarm.protocol.values import BadMessage
from xswarm.supervisor.api import check
from xswarm.supervisor.upstream import BACKOFF_CAP, backoff_delay


def test_bearer_token_parsing() -> None:
    assert auth.bearer_token("Bearer abc") == "abc"
    assert auth.bearer_token("bearer   abc  ") == "abc"
    assert auth.bearer_token("Basic abc") is None
    assert auth.bearer_token("Bearer ") is None
    assert auth.bearer_token(None) is None


def test_check_with_and_without_a_configured_token() -> None:
    assert check("t", "t", "203.0.113.9").ok
    assert not check("t", "x", "127.0.0.1").ok
    assert not check("t", None, "127.0.0.1").ok
    dev = check(None, None, "127.0.0.1")
    assert dev.ok and "development" in dev.message
    remote = check(None, "anything", "203.0.113.9")
    assert not remote.ok and "only loopback peers" in remote.message


def test_commands_parse_into_types() -> None:
    assert messages.decode_command('{"type":"auth","token":"t"}') == messages.Auth("t")
    assert messages.decode_command('{"type":"subscribe"}') == messages.Subscribe()
    assert messages.decode_command('{"type":"ping","id":3}') == messages.Ping(3)
    assert messages.decode_command(
        '{"type":"inject_suggestion","text":"hi","priority":"high","call_id":"c1",'
        '"request_id":"r","instance":"a"}'
    ) == messages.InjectSuggestion("hi", "high", "c1", "r", "a")
    assert messages.decode_command(
        '{"type":"inject_suggestion","text":""}'
    ) == messages.InjectSuggestion("")
    assert messages.decode_command('{"type":"hangup","call_id":"c1"}') == messages.Hangup("c1")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"ping"}',
        "{",
        "[]",
        "1e999999",
        '{"type":null}',
        '{"type":"ping","id":{}}',
        "\ud800",
        '{"type":"inject_suggestion","text":"a","priority":1}',
        "x" * 70_000,
    ],
)
def test_every_bad_message_is_a_bad_message(raw: str | bytes) -> None:
    with pytest.raises(BadMessage):
        messages.decode_command(raw)


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, rng) for n in range(40)]
    assert all(0 < d <= BACKOFF_CAP for d in delays)
    assert 0.05 <= delays[0] <= 0.1
    assert all(BACKOFF_CAP / 2 <= d for d in delays[5:])
    assert len({round(d, 6) for d in delays[10:]}) > 1
