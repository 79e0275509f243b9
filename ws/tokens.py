"""Short-lived signed tokens that let a browser open a websocket as one user.

A shop's backend, which knows who is logged in, asks Nudge for a token (``POST /v1/ws-token`` with its API key) and
hands it to the browser; the browser presents it when it connects, and the gateway calls :func:`verify_token` to learn
the user id and :func:`token_expiry` to learn when to close the socket. The browser never chooses its own user id.

Format, all ASCII, at most :data:`MAX_TOKEN_LENGTH` characters::

    v1.<base64url(user id, UTF-8)>.<expiry, unix seconds>.<base64url(HMAC-SHA256 over "v1.<b64 user>.<expiry>")>

base64url without padding. The HMAC key is derived from the deployment secret for this purpose only, so a token
signature can never be mistaken for any other signature made with the same secret (model snapshots).

A token is a bearer credential: whoever holds it receives that user's messages until it expires (the gateway closes
a socket when its token expires, with 4001), and nothing can revoke it earlier. Keep expiries short --
:data:`DEFAULT_TTL_S` (15 minutes) is the suggested lifetime; the browser asks its backend for a fresh token when it
reconnects. Never log tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import unicodedata
from typing import Final

VERSION: Final = "v1"
#: Suggested lifetime of a token, in seconds: ``issue_token(..., expires_at=int(now) + DEFAULT_TTL_S)``.
DEFAULT_TTL_S: Final = 900
MAX_USER_ID_LENGTH: Final = 256
MAX_TOKEN_LENGTH: Final = 1024
#: The same floor as ``app.settings.MIN_SECRET_LENGTH``: a short secret makes every token guessable.
MIN_SECRET_BYTES: Final = 16

# The reasons a token is refused, as TokenError.reason.
MALFORMED: Final = "malformed"
BAD_SIGNATURE: Final = "bad signature"
EXPIRED: Final = "expired"
USER_ID_INVALID: Final = "user id invalid"
TOO_LONG: Final = "token too long"

_KEY_LABEL = b"nudge websocket token v1"
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_EXPIRY = re.compile(r"[0-9]{1,16}")
_MAX_EXPIRY = 10**16 - 1


class TokenError(ValueError):
    """A token cannot be issued or is refused; ``reason`` is one of the module's reason constants.

    The gateway should refuse the connection (HTTP 401 on the upgrade) and may show ``reason`` to the client:
    it says what is wrong with the token, never anything about the secret.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def issue_token(secret: bytes, user_id: str, *, expires_at: int) -> str:
    """Return a token that proves ``user_id`` until ``expires_at`` (unix seconds, exclusive).

    Raises :class:`TokenError` (``user id invalid`` or ``token too long``) when the user id cannot be carried, and
    :class:`ValueError` for a secret shorter than :data:`MIN_SECRET_BYTES` or an expiry outside 0..10**16-1.
    """
    key = _signing_key(secret)
    if not 0 <= expires_at <= _MAX_EXPIRY:
        raise ValueError(f"expires_at must be unix seconds between 0 and {_MAX_EXPIRY}, not {expires_at}")
    _check_user_id(user_id)
    signed = f"{VERSION}.{_b64encode(user_id.encode())}.{expires_at}"
    token = f"{signed}.{_b64encode(_sign(key, signed))}"
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError(TOO_LONG)
    return token


def verify_token(secret: bytes, token: str, *, now: float) -> str:
    """Return the user id a token proves, or raise :class:`TokenError` with the reason it is refused.

    Checks, in order: length, shape, signature (constant-time), expiry (``now`` in unix seconds must be before
    it), user id. Nothing inside the token is trusted before its signature is checked.
    """
    key = _signing_key(secret)
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError(TOO_LONG)
    parts = token.split(".")
    if len(parts) != 4 or not token.isascii():
        raise TokenError(MALFORMED)
    version, user_part, expiry_part, signature_part = parts
    if version != VERSION or not _EXPIRY.fullmatch(expiry_part):
        raise TokenError(MALFORMED)
    user_bytes = _b64decode(user_part)
    _b64decode(signature_part)  # for its shape: a malformed signature is refused as malformed
    expected = _b64encode(_sign(key, f"{version}.{user_part}.{expiry_part}"))
    # Compared as text, not as decoded bytes: decoding ignores the last character's unused low bits, so a byte
    # comparison would accept other spellings of the same signature.
    if not hmac.compare_digest(signature_part, expected):
        raise TokenError(BAD_SIGNATURE)
    if now >= int(expiry_part):
        raise TokenError(EXPIRED)
    try:
        user_id = user_bytes.decode()
    except UnicodeDecodeError:
        raise TokenError(USER_ID_INVALID) from None
    _check_user_id(user_id)
    return user_id


def token_expiry(token: str) -> int:
    """When a token that :func:`verify_token` accepted expires, in unix seconds (exclusive): close its socket then."""
    return int(token.split(".")[2])


def _signing_key(secret: bytes) -> bytes:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the token secret must be at least {MIN_SECRET_BYTES} bytes")
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def _sign(key: bytes, signed: str) -> bytes:
    return hmac.new(key, signed.encode(), hashlib.sha256).digest()


def _check_user_id(user_id: str) -> None:
    if not 1 <= len(user_id) <= MAX_USER_ID_LENGTH:
        raise TokenError(USER_ID_INVALID)
    # Cc: C0 and C1 controls and DEL; Cs: lone surrogates, which have no UTF-8 form.
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in user_id):
        raise TokenError(USER_ID_INVALID)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    # b64decode silently skips characters outside the alphabet, so the alphabet is checked first.
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise TokenError(MALFORMED)
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(MALFORMED) from None
