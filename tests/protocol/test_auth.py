"""The one authentication rule both services apply, as plain function calls."""

from __future__ import annotations

import pytest

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
