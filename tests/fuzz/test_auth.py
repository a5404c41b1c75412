"""Authentication parsing: any header text gives an answer, never an exception, and a
request that names a proxy is never judged loopback."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import examples
from xswarm.protocol import auth

headers_text = st.text(max_size=80)
addresses = (
    st.text(max_size=50)
    | st.ip_addresses().map(str)
    | st.ip_addresses(v=6).map(lambda ip: f"{ip}%eth0")
    | st.none()
)


@examples(200)
@given(headers_text | st.none())
def test_any_authorization_header_is_a_token_or_none(header: str | None) -> None:
    token = auth.bearer_token(header)
    assert token is None or (token and token == token.strip())


@examples(100)
@given(
    st.text(min_size=1, max_size=60).filter(lambda t: t.split() == [t]),
    st.sampled_from(["Bearer", "bearer", "BEARER"]),
)
def test_a_bearer_token_reads_back_as_sent(token: str, scheme: str) -> None:
    assert auth.bearer_token(f"  {scheme} {token} ") == token


@examples(150)
@given(headers_text | st.none(), headers_text)
def test_tokens_match_only_when_equal(given_token: str | None, expected: str) -> None:
    assert auth.tokens_match(given_token, expected) is (bool(expected) and given_token == expected)


@examples(200)
@given(addresses)
def test_any_peer_address_is_judged_without_an_exception(address: str | None) -> None:
    auth.is_loopback(address)
    key = auth.throttle_key(address)
    assert key and "/" not in key or key.endswith("/64")


@examples(150)
@given(
    st.dictionaries(
        st.sampled_from([*auth.PROXY_HEADERS, "Host", "Origin", "User-Agent"]),
        headers_text,
        max_size=4,
    ),
    addresses,
)
def test_a_proxied_request_is_never_loopback(headers: dict[str, str], remote: str | None) -> None:
    peer = auth.trusted_peer(remote, headers)
    if any(name in headers for name in auth.PROXY_HEADERS):
        assert peer is None
        assert auth.decide(None, None, peer) is auth.Decision.NOT_LOOPBACK


@examples(200)
@given(
    st.fixed_dictionaries({}, optional={"Host": headers_text, "Origin": headers_text}),
    st.lists(st.text(max_size=20), max_size=3),
)
def test_browser_refusal_answers_any_host_and_origin(
    headers: dict[str, str], names: list[str]
) -> None:
    refusal = auth.browser_refusal(headers, names)
    assert refusal is None or refusal.isprintable()  # it is logged: one line, no forgery
    if "Origin" in headers and "Host" not in headers:
        assert refusal is not None
