"""Tokens from a private file or the environment; every unsafe case is a one-line exit 78."""

from __future__ import annotations

from pathlib import Path

import pytest

from xswarm.tokens import TokenError, read_token, require_token_off_loopback

VAR = "XSWARM_CONTROL_TOKEN"


def private(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "token"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_a_private_file_or_the_environment() -> None:
    assert read_token(VAR, {}) is None
    assert read_token(VAR, {VAR: "abc"}) == "abc"


def test_a_private_file_is_read_and_trimmed(tmp_path: Path) -> None:
    assert read_token(VAR, {VAR + "_FILE": private(tmp_path, "tok-1\n")}) == "tok-1"


@pytest.mark.parametrize(
    ("text", "mode", "problem"),
    [
        ("tok", 0o640, "chmod 600"),
        ("tok", 0o604, "chmod 600"),
        ("", 0o600, "exactly one token"),
        ("two\ntokens", 0o600, "exactly one token"),
        ("x" * 5000, 0o600, "over 4096 bytes"),
    ],
)
def test_unsafe_or_malformed_files_are_refused(
    tmp_path: Path, text: str, mode: int, problem: str
) -> None:
    with pytest.raises(TokenError) as refused:
        read_token(VAR, {VAR + "_FILE": private(tmp_path, text, mode)})
    assert refused.value.exit_status == 78 and problem in str(refused.value)
    assert "\n" not in str(refused.value)


def test_missing_file_and_both_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="cannot be read"):
        read_token(VAR, {VAR + "_FILE": str(tmp_path / "absent")})
    with pytest.raises(TokenError, match="keep only one"):
        read_token(VAR, {VAR: "a", VAR + "_FILE": private(tmp_path, "b")})


def test_no_token_beyond_loopback_is_refused() -> None:
    require_token_off_loopback(None, VAR, ["127.0.0.1", "::1"])
    require_token_off_loopback("t", VAR, ["0.0.0.0"])
    with pytest.raises(TokenError, match=f"{VAR} is not set but the service listens on 0.0.0.0"):
        require_token_off_loopback(None, VAR, ["0.0.0.0"])
