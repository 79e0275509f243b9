"""The read API's credential check, shared by the worker's HTTP API and the gateway's ``/metrics``."""

from __future__ import annotations

import hmac
from collections.abc import Iterable


def has_api_key(authorization: str, api_keys: Iterable[str]) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <one of api_keys>`` (compared in constant time)."""
    scheme, _, key = authorization.partition(" ")
    # Header bytes that are not UTF-8 arrive as lone surrogates (surrogateescape), which strict encoding refuses.
    return scheme.lower() == "bearer" and any(hmac.compare_digest(_bytes(key), _bytes(k)) for k in api_keys)


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")
