"""The operator API wire format and the reconnection schedule, as plain function calls."""

from __future__ import annotations

import json

import pytest

from xswarm.protocol.control import MAX_SUGGESTION_CHARS
from xswarm.tui.client import (
    Backoff,
    auth_message,
    decode,
    hangup_message,
    inject_message,
    subscribe_message,
)


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    backoff = Backoff(initial=0.25, cap=5.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next_delay() == 0.25


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "a JSON list, expected an object"),
        ('"hi"', "a JSON str, expected an object"),
        ('{"type": 3}', "without a string 'type'"),
        (b"\x00\x01", "binary message of 2 bytes"),
    ],
)
def test_decode_names_what_is_wrong(raw: str | bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("[", r"\[")):
        decode(raw)


def test_decode_accepts_an_event() -> None:
    assert decode('{"type":"pong"}') == {"type": "pong"}


def test_commands_match_the_operator_api() -> None:
    assert auth_message("s3cret") == {"type": "auth", "token": "s3cret"}
    assert subscribe_message() == {"type": "subscribe", "batch": True}
    assert hangup_message("c-1") == {"type": "hangup", "call_id": "c-1"}
    message = inject_message("c-1", "  offer a callback  ", "tui-1-1", "high")
    assert message == {
        "type": "inject_suggestion",
        "call_id": "c-1",
        "text": "offer a callback",
        "priority": "high",
        "request_id": "tui-1-1",
    }
    json.dumps(message)


@pytest.mark.parametrize(
    ("text", "priority", "reason"),
    [
        ("   ", "normal", "empty"),
        ("x" * (MAX_SUGGESTION_CHARS + 1), "normal", "the limit is 1000"),
        ("ok", "urgent", "expected one of low, normal, high"),
    ],
)
def test_inject_refuses_what_the_supervisor_would(text: str, priority: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        inject_message("c-1", text, "r", priority)
