"""The one authentication rule both services apply, as plain function calls."""

from __future__ import annotations

import pytest

from xswarm.protocol import auth
from xswarm.protocol.auth import (
    PROXY_HEADERS,
    Decision,
    bearer_token,
    decide,
    tokens_match,
    trusted_peer,
)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("BEARER abc", "abc"),
        ("Basic abc", None),
        ("Bearer ", None),
        ("Bearer", None),
        ("", None),
        (None, None),
        ("Bearer \xff", "\xff"),
    ],
)
def test_bearer_token_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("offered", ["\xff", "\udcff", "\ud800", "s3cre\u00e9", "ключ", ""])
def test_any_text_is_just_a_wrong_token(offered: str) -> None:
    assert tokens_match(offered, "s3cret") is False
    assert decide("s3cret", offered, "203.0.113.9") is Decision.WRONG


def test_a_token_with_non_ascii_matches_itself() -> None:
    assert tokens_match("ключ\xff", "ключ\xff")


@pytest.mark.parametrize("header", PROXY_HEADERS)
def test_a_proxied_request_is_never_loopback(header: str) -> None:
    assert trusted_peer("127.0.0.1", {header: "203.0.113.9"}) is None
    assert decide(None, None, trusted_peer("127.0.0.1", {header: "x"})) is Decision.NOT_LOOPBACK


def test_a_direct_request_keeps_its_peer() -> None:
    assert trusted_peer("127.0.0.1", {"Authorization": "Bearer x"}) == "127.0.0.1"


@pytest.mark.parametrize(
    ("expected", "given", "peer", "decision"),
    [
        (None, None, "127.0.0.1", Decision.LOOPBACK_OPEN),
        ("", "anything", "::1", Decision.LOOPBACK_OPEN),
        (None, None, "203.0.113.9", Decision.NOT_LOOPBACK),
        (None, None, None, Decision.NOT_LOOPBACK),
        ("t", None, "127.0.0.1", Decision.MISSING),
        ("t", "x", "127.0.0.1", Decision.WRONG),
        ("t", "t", "203.0.113.9", Decision.TOKEN_OK),
    ],
)
def test_decide(
    expected: str | None, given: str | None, peer: str | None, decision: Decision
) -> None:
    assert decide(expected, given, peer) is decision
    assert decision.ok is (decision in (Decision.TOKEN_OK, Decision.LOOPBACK_OPEN))


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


def test_failures_are_keyed_by_ipv4_address_and_ipv6_slash_64() -> None:
    assert auth.throttle_key("203.0.113.7") == "203.0.113.7"
    assert auth.throttle_key("::ffff:203.0.113.7") == "203.0.113.7"
    rotated = {auth.throttle_key(f"2001:db8:1:2::{n:x}") for n in range(1000)}
    assert rotated == {"2001:db8:1:2::/64"}
    assert auth.throttle_key("2001:db8:1:3::1") != auth.throttle_key("2001:db8:1:2::1")
    assert auth.throttle_key(None) == "unknown"


def test_rotating_ipv6_addresses_share_one_allowance_and_everyone_one_more() -> None:
    throttle = auth.AuthThrottle()
    delays = [throttle.record_failure(f"2001:db8::{n:x}", now=0.0) for n in range(4)]
    assert delays == sorted(delays) and delays[-1] > 3.0
    # A different source still waits behind the shared queue, never less than its own.
    assert throttle.record_failure("198.51.100.1", now=0.0) >= 0.25
    throttle.record_success("2001:db8::1234")
    assert throttle.per_source.failures("2001:db8::/64", now=0.0) == 0


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({"Host": "127.0.0.1:9999"}, False),
        ({"Host": "[::1]:9999"}, False),
        ({"Host": "localhost:9999"}, False),
        ({"Host": "10.0.0.5:9999"}, False),
        ({"Host": "dash.example.com"}, False),
        ({"Host": "rebind.attacker.example:9999"}, True),
        ({"Host": "127.0.0.1:9999", "Origin": "http://127.0.0.1:9999"}, False),
        ({"Host": "127.0.0.1:9999", "Origin": "http://attacker.example"}, True),
        ({"Host": "127.0.0.1:9999", "Origin": "null"}, True),
        ({}, False),
    ],
)
def test_host_and_origin_rule(headers: dict[str, str], refused: bool) -> None:
    assert (auth.browser_refusal(headers, {"dash.example.com"}) is not None) is refused


def test_loopback_binds() -> None:
    assert auth.is_loopback_bind("127.0.0.1") and auth.is_loopback_bind("::1")
    assert auth.is_loopback_bind("localhost")
    assert not any(map(auth.is_loopback_bind, ("0.0.0.0", "::", "", "10.0.0.5", "example.com")))
