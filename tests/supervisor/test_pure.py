"""Auth, throttling, flood control, operator message parsing and backoff: plain functions."""

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


def test_tokens_match_only_exactly() -> None:
    assert auth.tokens_match("s3cret", "s3cret")
    assert not auth.tokens_match("s3cre", "s3cret")
    assert not auth.tokens_match(None, "s3cret")
    assert not auth.tokens_match("", "")
    assert not auth.tokens_match("\udcff", "s3cret")


@pytest.mark.parametrize(
    "address,loopback",
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("", True),
        ("10.0.0.1", False),
        ("203.0.113.9", False),
        ("::ffff:10.0.0.1", False),
        (None, False),
        ("not an ip", False),
        ("fe80::1%eth0", False),
    ],
)
def test_loopback_detection(address: str | None, loopback: bool) -> None:
    assert auth.is_loopback(address) is loopback


def test_check_with_and_without_a_configured_token() -> None:
    assert check("t", "t", "203.0.113.9").ok
    assert not check("t", "x", "127.0.0.1").ok
    assert not check("t", None, "127.0.0.1").ok
    dev = check(None, None, "127.0.0.1")
    assert dev.ok and "development" in dev.message
    remote = check(None, "anything", "203.0.113.9")
    assert not remote.ok and "only loopback peers" in remote.message


def test_bad_tokens_slow_down_per_address_and_are_forgiven() -> None:
    throttle = auth.BadTokenThrottle(base=0.25, cap=2.0, forget_after=60, max_addresses=3)
    delays = [throttle.record_failure("10.0.0.1", now=float(n * 10)) for n in range(6)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert throttle.record_failure("10.0.0.2", now=60.0) == 0.25
    assert throttle.failures("10.0.0.1", now=200.0) == 0
    throttle.record_failure("10.0.0.3", now=1.0)
    throttle.record_success("10.0.0.3")
    assert throttle.failures("10.0.0.3", now=2.0) == 0
    for n in range(10):
        throttle.record_failure(f"192.0.2.{n}", now=1.0)
    assert len(throttle._failures) == 3


def test_parallel_failures_queue_behind_each_other_then_lock_out() -> None:
    throttle = auth.BadTokenThrottle(base=0.25, cap=2.0, max_wait=10.0)
    # Eight guesses on eight sockets at the same instant are answered one after another.
    delays = [throttle.record_failure("10.0.0.1", now=0.0) for _ in range(8)]
    assert delays == [0.25, 0.75, 1.75, 3.75, 5.75, 7.75, 9.75, 11.75]
    assert throttle.locked_out("10.0.0.1", now=0.0) == 11.75
    assert throttle.locked_out("10.0.0.1", now=2.0) == 0.0
    assert throttle.locked_out("10.0.0.2", now=0.0) == 0.0
    throttle.record_success("10.0.0.1")
    assert throttle.locked_out("10.0.0.1", now=0.0) == 0.0


def test_flood_guard_allows_a_burst_then_the_sustained_rate() -> None:
    guard = auth.FloodGuard(rate=200, burst=400)
    assert sum(guard.allow(0.0) for _ in range(1000)) == 400
    assert not guard.allow(0.0)
    assert sum(guard.allow(1.0) for _ in range(1000)) == 200
    quiet = auth.FloodGuard(rate=200, burst=400)
    assert all(quiet.allow(n / 100) for n in range(10_000))


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
