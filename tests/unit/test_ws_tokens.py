"""Websocket tokens: they round-trip, and every forged, tampered, expired, malformed or overlong one is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from ws.tokens import (
    BAD_SIGNATURE,
    DEFAULT_TTL_S,
    EXPIRED,
    MALFORMED,
    MAX_TOKEN_LENGTH,
    TOO_LONG,
    USER_ID_INVALID,
    TokenError,
    issue_token,
    token_expiry,
    verify_token,
)

SECRET = b"0123456789abcdef-test-secret"
OTHER_SECRET = b"fedcba9876543210-other-secret"
NOW = 1_772_366_400.0  # 2026-03-01T12:00:00Z
EXPIRES_AT = int(NOW) + DEFAULT_TTL_S


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signature_for(secret: bytes, signed: str) -> str:
    """The documented signature, computed independently of the module: HMAC-SHA256 under the derived token key."""
    key = hmac.new(secret, b"nudge websocket token v1", hashlib.sha256).digest()
    return b64(hmac.new(key, signed.encode(), hashlib.sha256).digest())


def hand_made(user_part: str, expiry_part: str, secret: bytes = SECRET) -> str:
    signed = f"v1.{user_part}.{expiry_part}"
    return f"{signed}.{signature_for(secret, signed)}"


def refusal(token: str, *, now: float = NOW) -> str:
    with pytest.raises(TokenError) as caught:
        verify_token(SECRET, token, now=now)
    return caught.value.reason


@pytest.mark.parametrize("user_id", ["user-1", "u", "ünïcødé 用户 🛒", "a" * 256, "email@example.com"])
def test_a_token_round_trips_to_its_user_id(user_id: str) -> None:
    token = issue_token(SECRET, user_id, expires_at=EXPIRES_AT)
    assert verify_token(SECRET, token, now=NOW) == user_id


def test_the_token_has_the_documented_layout() -> None:
    token = issue_token(SECRET, "user-1", expires_at=EXPIRES_AT)
    assert token == hand_made(b64(b"user-1"), str(EXPIRES_AT))
    assert "=" not in token
    assert token.isascii()


def test_a_token_signed_with_another_secret_is_refused() -> None:
    forged = issue_token(OTHER_SECRET, "user-1", expires_at=EXPIRES_AT)
    assert refusal(forged) == BAD_SIGNATURE


def test_a_token_with_its_user_swapped_is_refused() -> None:
    version, _user, expiry, signature = issue_token(SECRET, "user-1", expires_at=EXPIRES_AT).split(".")
    assert refusal(f"{version}.{b64(b'admin')}.{expiry}.{signature}") == BAD_SIGNATURE


def test_a_token_with_its_expiry_extended_is_refused() -> None:
    version, user, _expiry, signature = issue_token(SECRET, "user-1", expires_at=EXPIRES_AT).split(".")
    assert refusal(f"{version}.{user}.{EXPIRES_AT + 86_400}.{signature}") == BAD_SIGNATURE


def test_a_token_with_a_truncated_or_altered_signature_is_refused() -> None:
    token = issue_token(SECRET, "user-1", expires_at=EXPIRES_AT)
    assert refusal(token[:-4]) == BAD_SIGNATURE
    last = token[-1]
    assert refusal(token[:-1] + ("A" if last != "A" else "B")) == BAD_SIGNATURE


def test_a_token_is_valid_until_its_expiry_and_not_at_it() -> None:
    token = issue_token(SECRET, "user-1", expires_at=EXPIRES_AT)
    assert verify_token(SECRET, token, now=EXPIRES_AT - 0.001) == "user-1"
    assert refusal(token, now=EXPIRES_AT) == EXPIRED
    assert refusal(token, now=EXPIRES_AT + 3600) == EXPIRED


def test_a_verified_tokens_expiry_is_known_to_close_its_socket_then() -> None:
    token = issue_token(SECRET, "user-1", expires_at=EXPIRES_AT)
    assert verify_token(SECRET, token, now=EXPIRES_AT - 1) == "user-1"
    assert token_expiry(token) == EXPIRES_AT


def test_a_signed_token_with_an_invalid_user_id_is_refused() -> None:
    assert refusal(hand_made(b64(b"a\nb"), str(EXPIRES_AT))) == USER_ID_INVALID
    assert refusal(hand_made(b64(b"\xff\xfe"), str(EXPIRES_AT))) == USER_ID_INVALID
    assert refusal(hand_made(b64(b"a" * 257), str(EXPIRES_AT))) == USER_ID_INVALID


@pytest.mark.parametrize(
    "token",
    [
        "",
        "v1",
        "v1.dXNlcg.123",
        "v1.dXNlcg.123.sig.extra",
        "v2.dXNlcg.1772367300.c2ln",
        "v1.dXNlcg.-1.c2ln",
        "v1.dXNlcg.17e8.c2ln",
        "v1.dXNlcg.12345678901234567.c2ln",
        "v1..1772367300.c2ln",
        "v1.dXNlcg.1772367300.",
        "v1.dXNlcg==.1772367300.c2ln",
        "v1.dXN+cg.1772367300.c2ln",
        "v1.dXNlc.1772367300.c2ln",
        "v1.dXNlcg.١٢٣.c2ln",
        "v1.dXNlcg.1772367300.c2ln\u00e9",
    ],
)
def test_a_malformed_token_is_refused_as_malformed(token: str) -> None:
    assert refusal(token) == MALFORMED


def test_an_overlong_token_is_refused_before_it_is_parsed() -> None:
    assert refusal("v1." + "A" * MAX_TOKEN_LENGTH) == TOO_LONG
    assert refusal("x" * 100_000) == TOO_LONG


def test_a_user_id_too_long_once_encoded_cannot_be_issued() -> None:
    with pytest.raises(TokenError) as caught:
        issue_token(SECRET, "🛒" * 256, expires_at=EXPIRES_AT)
    assert caught.value.reason == TOO_LONG


@pytest.mark.parametrize("user_id", ["", "a" * 257, "a\nb", "tab\there", "del\x7f", "c1\x85", "lone\ud800"])
def test_an_invalid_user_id_cannot_be_issued(user_id: str) -> None:
    with pytest.raises(TokenError) as caught:
        issue_token(SECRET, user_id, expires_at=EXPIRES_AT)
    assert caught.value.reason == USER_ID_INVALID


def test_a_short_secret_or_a_bad_expiry_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        issue_token(b"short", "user-1", expires_at=EXPIRES_AT)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        verify_token(b"", "v1.dXNlcg.1.c2ln", now=NOW)
    with pytest.raises(ValueError, match="expires_at"):
        issue_token(SECRET, "user-1", expires_at=-1)


def test_token_errors_are_value_errors_whose_message_is_the_reason() -> None:
    error = TokenError(EXPIRED)
    assert isinstance(error, ValueError)
    assert str(error) == EXPIRED == error.reason
