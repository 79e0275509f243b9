"""Identity resolution across partitions: the signed record that carries an anonymous profile to its known user.

An anonymous visitor (``anonymousId`` A) and the logged-in user (``userId`` U) usually live on different partitions,
and no worker reads another partition's state. So the merge travels through ``nudge.events``, in three hops:

1. U's partition sees an event carrying both ids (typically ``identify``): it produces a Segment ``alias`` event
   ``{"previousId": A, "userId": U}``. Alias events are keyed by ``previousId`` (:func:`app.events.user_key`), so it
   goes to A's partition.
2. A's partition records ``A -> U`` in the ``aliases`` table (later events of A are forwarded to U, rewritten with
   ``userId`` U), removes A's profile and insight, and produces a *merge record* keyed by U holding them.
3. U's partition folds A's profile and insight into U's (:func:`tables.profile.merge_profiles`,
   :func:`models.insight.merge_insights`), once: U's profile remembers the ids merged into it.

A merge record carries a whole profile, so it must come from a worker: it is signed with a key derived from
``NUDGE_SECRET`` and a record with a bad signature is dead-lettered like any malformed event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import orjson

from app.events import InvalidEvent

MERGE_KEY = "nudgeMerge"
_KEY_LABEL = b"nudge merge record v1"


@dataclass(frozen=True, slots=True)
class Merge:
    """Fold ``profile`` and ``insight`` (JSON forms, either may be ``None``) of ``from_id`` into ``into_id``."""

    from_id: str
    into_id: str
    profile: dict[str, Any] | None
    insight: str | None


def merge_record(merge: Merge, secret: bytes) -> bytes:
    """The ``nudge.events`` record of a merge, signed (produce it keyed by ``merge.into_id``)."""
    body = {"from": merge.from_id, "into": merge.into_id, "profile": merge.profile, "insight": merge.insight}
    payload = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return orjson.dumps({MERGE_KEY: body, "sig": _sign(secret, payload)})


def is_merge(item: object) -> bool:
    return isinstance(item, dict) and MERGE_KEY in item


def read_merge(item: dict[str, Any], secret: bytes) -> Merge:
    """Verify and decode a merge record; raise :class:`InvalidEvent` with the reason if it is not one of ours."""
    body, signature = item.get(MERGE_KEY), item.get("sig")
    if not isinstance(body, dict) or not isinstance(signature, str):
        raise InvalidEvent("merge record: expected nudgeMerge (object) and sig (string)")
    payload = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    if not hmac.compare_digest(signature, _sign(secret, payload)):
        raise InvalidEvent("merge record: bad signature (merge records come from Nudge workers only)")
    from_id, into_id = body.get("from"), body.get("into")
    if not isinstance(from_id, str) or not isinstance(into_id, str) or from_id == into_id:
        raise InvalidEvent("merge record: from and into must be two different user ids")
    profile, insight = body.get("profile"), body.get("insight")
    return Merge(from_id, into_id, profile if isinstance(profile, dict) else None, insight if insight else None)


@dataclass(frozen=True, slots=True)
class Erase:
    """Erase everything held about ``user_id``; events of the user stamped ``at_ms`` or earlier stay dropped."""

    user_id: str
    at_ms: int


ERASE_KEY = "nudgeErase"


def erase_record(erase: Erase, secret: bytes) -> bytes:
    """The ``nudge.events`` record of an erasure request, signed (produce it keyed by ``erase.user_id``)."""
    body = {"user": erase.user_id, "at_ms": erase.at_ms}
    return orjson.dumps({ERASE_KEY: body, "sig": _sign(secret, orjson.dumps(body, option=orjson.OPT_SORT_KEYS))})


def is_erase(item: object) -> bool:
    return isinstance(item, dict) and ERASE_KEY in item


def read_erase(item: dict[str, Any], secret: bytes) -> Erase:
    """Verify and decode an erasure record; raise :class:`InvalidEvent` if it is not one of ours."""
    body, signature = item.get(ERASE_KEY), item.get("sig")
    if not isinstance(body, dict) or not isinstance(signature, str):
        raise InvalidEvent("erasure record: expected nudgeErase (object) and sig (string)")
    if not hmac.compare_digest(signature, _sign(secret, orjson.dumps(body, option=orjson.OPT_SORT_KEYS))):
        raise InvalidEvent("erasure record: bad signature (erasures come from the API only)")
    user_id, at_ms = body.get("user"), body.get("at_ms")
    if not isinstance(user_id, str) or not user_id or not isinstance(at_ms, int) or isinstance(at_ms, bool):
        raise InvalidEvent("erasure record: user (string) and at_ms (integer) are required")
    return Erase(user_id, at_ms)


def alias_event(anonymous_id: str, user_id: str, *, timestamp: str) -> dict[str, Any]:
    """The Segment ``alias`` event that asks ``anonymous_id``'s partition to hand its state to ``user_id``."""
    identity = f"{anonymous_id}\x00{user_id}".encode("utf-8", "surrogatepass")
    return {
        "type": "alias",
        "previousId": anonymous_id,
        "userId": user_id,
        "timestamp": timestamp,
        "messageId": "link-" + hashlib.blake2b(identity, digest_size=12).hexdigest(),
    }


def _sign(secret: bytes, payload: bytes) -> str:
    key = hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(hmac.new(key, payload, hashlib.sha256).digest()).decode().rstrip("=")
