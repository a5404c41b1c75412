"""The sans-I/O budgets of one call and whom a call counts against (xswarm.protocol.budgets)."""

from __future__ import annotations

from xswarm.protocol.budgets import (
    InputBudget,
    Limits,
    call_source,
    forwarded_client,
    trusted_networks,
)

LIMITS = Limits(
    max_buffered_bytes=1000, audio_speed=1.5, audio_burst_seconds=3.0, messages_per_second=10
)


def test_bytes_without_audio_are_capped_and_audio_resets_the_count() -> None:
    budget = InputBudget(LIMITS)
    assert budget.message(600, 0.0) is None
    assert budget.audio(0.0, 0.0) is None  # a frame dropped unheard still is audio
    assert budget.message(600, 0.1) is None
    exceeded = budget.message(600, 0.2)
    assert exceeded is not None and exceeded.budget == "buffered_bytes"
    assert exceeded.close_code == 1009 and exceeded.detail.startswith("abuse")


def test_audio_faster_than_the_speed_limit_is_refused_real_time_is_not() -> None:
    steady = InputBudget(LIMITS)
    assert all(steady.audio(0.08, n * 0.08) is None for n in range(10_000))
    burst = InputBudget(LIMITS)
    exceeded = burst.audio(4.0, 0.0)  # one message, 4 s of audio
    assert exceeded is not None and exceeded.budget == "audio_rate" and exceeded.close_code == 1008


def test_messages_are_limited_per_second_with_a_two_second_burst() -> None:
    budget = InputBudget(LIMITS)
    assert all(budget.message(1, 0.0) is None or budget.audio(0, 0) for _ in range(20))
    exceeded = budget.message(1, 0.0)
    assert exceeded is not None and exceeded.budget == "message_rate"
    assert budget.message(1, 0.2) is None  # 0.1 s refills one message


def test_forwarded_for_counts_only_from_a_trusted_proxy_and_from_the_right() -> None:
    proxies = trusted_networks(["127.0.0.1", "10.0.0.0/8"])
    assert call_source("203.0.113.9", ["198.51.100.1"], proxies) == "203.0.113.9"
    assert call_source("127.0.0.1", [], proxies) == "127.0.0.1"
    assert call_source("127.0.0.1", ["198.51.100.1"], proxies) == "198.51.100.1"
    chain = ["6.6.6.6, 198.51.100.1", "10.1.2.3"]  # client-written, client, inner proxy
    assert call_source("127.0.0.1", chain, proxies) == "198.51.100.1"
    assert call_source("127.0.0.1", ["2001:db8:1:2::5"], proxies) == "2001:db8:1:2::/64"
    assert call_source("::ffff:127.0.0.1", ["198.51.100.1"], proxies) == "198.51.100.1"
    assert call_source("127.0.0.1", ["not-an-address"], proxies) == "unknown"


def test_the_forwarded_client_is_named_only_by_a_trusted_proxy() -> None:
    proxies = trusted_networks(["127.0.0.1", "10.0.0.0/8"])
    assert forwarded_client("203.0.113.9", ["198.51.100.1"], proxies) is None
    assert forwarded_client("127.0.0.1", [], proxies) is None
    assert forwarded_client("127.0.0.1", ["6.6.6.6, 198.51.100.1", "10.1.2.3"], proxies) == (
        "198.51.100.1"
    )
    assert forwarded_client("127.0.0.1", ["[2001:db8::5]"], proxies) == "2001:db8::5"
