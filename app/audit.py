"""The audit trail: who asked for what about whom, on ``nudge.audit``, with no personal data in it.

Each record says which action was taken (``consent``, ``export``, ``erasure_requested`` by the API;
``consent_applied`` and ``erasure`` by the worker), when, by which API key (a fingerprint, never the key) or channel,
and about which person -- as a keyed hash of the user id (:func:`subject`), so the trail can prove what was done for
a person who asks, with their id in hand, without holding that id itself.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
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


def consent_applied(
    secret: bytes,
    *,
    user_id: str,
    before: Mapping[str, bool],
    after: Mapping[str, bool],
    message_id: str,
    at: str,
    source: str,
) -> bytes | None:
    """The record of a consent change as the worker applied it, whatever the channel (an event's context, the SDK,
    the API), or ``None`` if the event changed nothing.

    Its ``id`` is derived from the event's ``messageId``, so a redelivered event yields the same record: a reader
    drops repeats by ``id``.
    """
    changed = {purpose: value for purpose, value in sorted(after.items()) if before.get(purpose) != value}
    if not changed:
        return None
    record_id = hmac.new(secret, b"consent applied\x00" + message_id.encode("utf-8", "surrogatepass"), "sha256")
    record = {
        "action": "consent_applied",
        "id": record_id.hexdigest()[:24],
        "subject": subject(secret, user_id),
        "by": f"event:{source}",
        "at": at,
        "categoryPreferences": changed,
    }
    return orjson.dumps(record)
