"""The read API's credential check, shared by the worker's HTTP API and the gateway's ``/metrics``."""

from __future__ import annotations

import hmac
from collections.abc import Iterable


def has_api_key(authorization: str, api_keys: Iterable[str]) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <one of api_keys>`` (compared in constant time)."""
    scheme, _, key = authorization.partition(" ")
    return scheme.lower() == "bearer" and any(hmac.compare_digest(key.encode(), k.encode()) for k in api_keys)
