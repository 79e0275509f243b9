"""The audit trail: who asked for what about whom, on ``nudge.audit``, with no personal data in it.

Each record says which action was taken (``consent``, ``export``), when, by which API key (a fingerprint, never the
key) and about which person -- as a keyed hash of the user id (:func:`subject`), so the trail can prove what was done
for a person who asks, with their id in hand, without holding that id itself.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

_SUBJECT_LABEL = b"nudge audit subject v1"


def subject(secret: bytes, user_id: str) -> str:
    """The audit trail's name for ``user_id``: the same for the same id, meaningless without the secret."""
    key = hmac.new(secret, _SUBJECT_LABEL, hashlib.sha256).digest()
    return hmac.new(key, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]


def key_fingerprint(api_key: str) -> str:
    """Which API key asked, without the key: the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


def audit_record(action: str, *, secret: bytes, user_id: str, api_key: str, at: str, **details: Any) -> bytes:
    """One ``nudge.audit`` record (produce it keyed by :func:`subject`)."""
    record = {
        "action": action,
        "subject": subject(secret, user_id),
        "by": key_fingerprint(api_key),
        "at": at,
        **details,
    }
    return orjson.dumps(record)
