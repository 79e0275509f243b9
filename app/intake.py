"""The collector's pure core: what a Segment HTTP API request asks for, decided without I/O.

:mod:`app.collector` reads the body (bounded by :func:`body_limit`), then calls :func:`parse_body`,
:func:`check_write_key`, charges the key's rate limit (:mod:`app.ratelimit`) :func:`events_in` the request, calls
:func:`single_event` or :func:`batch_events`, produces what they accept, and answers a batch with
:func:`batch_answer`. A refused request is an :class:`HttpError` (status and reason, sent back as they are); a
refused event is an :class:`~app.events.InvalidEvent` (a 400 with the reason, or one entry of a batch's
``rejected`` list).
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable
from typing import Any

import orjson

from app.events import MAX_BATCH_BYTES, MAX_BATCH_EVENTS, MAX_EVENT_BYTES, InvalidEvent, encode_event, normalise

#: The most refused events a batch answer lists (the first ones); ``rejectedCount`` counts them all.
#: 100: enough reasons for a client to see what it does wrong; the answer to 2,500 refusals stays under 10 KB.
MAX_LISTED_REJECTIONS = 100


class HttpError(Exception):
    """The request is refused with ``status``; ``str(error)`` is the reason for the sender, and ``retry_after_s``
    (when set) the ``Retry-After`` header: whole seconds before the same request can succeed."""

    def __init__(self, status: int, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


def body_limit(event_type: str | None) -> int:
    """The most bytes (after gzip inflation) a request to the endpoint of ``event_type`` may carry (``None``:
    ``/v1/batch``); past it the collector answers 413."""
    return MAX_BATCH_BYTES if event_type is None else MAX_EVENT_BYTES


def parse_body(body: bytes) -> Any:
    """The JSON in a request body, or :class:`HttpError` 400."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise HttpError(400, f"body is not valid JSON: {error}") from None


def check_write_key(authorization: str, payload: Any, write_keys: Iterable[str]) -> str:
    """The write key sent as the HTTP Basic user (or as ``writeKey`` in the body) if it is one of ``write_keys``,
    else :class:`HttpError` 401. The key returned is the configured one, so it can name the key's rate limit."""
    key = basic_user(authorization)
    if key is None and isinstance(payload, dict) and isinstance(payload.get("writeKey"), str):
        key = payload["writeKey"]
    if key is None:
        raise HttpError(401, "missing write key: send it as the HTTP Basic user name")
    known = next((k for k in write_keys if hmac.compare_digest(key.encode(), k.encode())), None)
    if known is None:
        raise HttpError(401, "unknown write key")
    return known


def basic_user(header: str) -> str | None:
    """The user name of an HTTP Basic ``Authorization`` header; ``None`` for any other or a garbled one."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        user, _, _ = base64.b64decode(encoded, validate=True).decode().partition(":")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text, which b64decode refuses
        return None
    return user or None


def single_event(payload: Any, *, event_type: str, now_ms: int) -> dict[str, Any]:
    """The event a ``/v1/<event_type>`` body holds, normalised and known to encode, or :class:`InvalidEvent`.

    Its timestamp is corrected for the client's clock by its ``sentAt`` (:func:`~app.events.validate`); a
    ``writeKey`` in it is dropped: a secret is never stored.
    """
    event = normalise(payload, now_ms=now_ms, default_type=event_type, received=True)
    event.pop("writeKey", None)
    # normalise encodes only events without a messageId; one nested past orjson's 254 levels must be refused here.
    encode_event(event)
    return event


def events_in(payload: Any, *, event_type: str | None) -> int:
    """How many events a request to the endpoint of ``event_type`` (``None``: ``/v1/batch``) counts for the rate
    limit: 1, or a batch's items, valid or not (each costs the collector its work).

    Raises :class:`HttpError` as :func:`batch_events` does for a batch body that is not one.
    """
    return 1 if event_type is not None else len(_batch_items(payload))


def _batch_items(payload: Any) -> list[Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get("batch"), list):
        raise HttpError(400, 'a batch body must be an object with a "batch" array')
    items: list[Any] = payload["batch"]
    if len(items) > MAX_BATCH_EVENTS:
        raise HttpError(413, f"batch of {len(items)} events is over the {MAX_BATCH_EVENTS} event limit: split it")
    return items


def batch_events(payload: Any, *, now_ms: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The accepted events of a ``/v1/batch`` body, and ``{"index", "message"}`` for each refused one.

    Raises :class:`HttpError` 400 when the body is not an object with a ``batch`` array, 413 when the array holds
    more than :data:`MAX_BATCH_EVENTS` items. The body's ``sentAt`` corrects the timestamps of the items that send
    none of their own (:func:`~app.events.validate`). Only the items reach the topic, each without its
    ``writeKey``, and so never the body's: a secret is never stored.
    """
    items = _batch_items(payload)
    accepted: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for index, raw in enumerate(items):
        try:
            if len(encode_event(raw)) > MAX_EVENT_BYTES:
                raise InvalidEvent(f"event is over the {MAX_EVENT_BYTES} byte limit")
            event = normalise(raw, now_ms=now_ms, received=True, batch_sent_at=payload.get("sentAt"), position=index)
            event.pop("writeKey", None)
            accepted.append(event)
        except InvalidEvent as error:
            rejected.append({"index": index, "message": str(error)})
    return accepted, rejected


def batch_answer(accepted: int, rejected: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """The status and body answering a ``/v1/batch`` request of which ``accepted`` events were produced.

    Lists the first :data:`MAX_LISTED_REJECTIONS` of ``rejected`` and counts all of them in ``rejectedCount``.
    """
    if not rejected:
        return 200, {"success": True}
    listed = {"rejected": rejected[:MAX_LISTED_REJECTIONS], "rejectedCount": len(rejected)}
    if not accepted:
        return 400, {"success": False, "message": "no valid event", **listed}
    return 200, {"success": True, "accepted": accepted, **listed}
