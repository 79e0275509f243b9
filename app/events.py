"""The event contract: Segment / RudderStack tracking events, validated and normalised.

Pure functions only. The collector uses :func:`normalise` at the HTTP edge (a bad event is a 400 with the reason);
the ingest agent uses :func:`decode_record` and :func:`to_event` for every record on ``nudge.events``, whoever
produced it (a bad one goes to the dead-letter topic with the reason).

A record on ``nudge.events`` holds either one event object or a batch envelope ``{"batch": [event, ...]}`` (the
body of Segment's ``/v1/batch``), so producers that control batching pay the per-record cost once per batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from models.consent import PURPOSES, parse_preferences

MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
#: The most events a batch envelope may hold, on ``/v1/batch`` and on the topic. Segment's SDKs send at most a few
#: hundred (500 KB of 200-byte events is 2,500); a gzip body of a few hundred bytes, or a 1 MB record of
#: ``[1,1,1,...]``, holds hundreds of thousands of tiny items, too many to validate and dead-letter one by one.
MAX_BATCH_EVENTS = 2_500
MAX_FUTURE_SKEW_MS = 24 * 3600 * 1000
#: The instants a timestamp may name: the profile reads epoch ms of 0 and below as "never", and :func:`iso_from_ms`
#: cannot format an instant past year 9999.
EARLIEST_TIMESTAMP_MS = 0  # 1970-01-01T00:00:00Z
LATEST_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_ID_LENGTH = 256
MAX_NAME_LENGTH = 200

EVENT_TYPES = frozenset({"track", "identify", "page", "screen", "group", "alias"})
_OBJECT_FIELDS = ("properties", "context", "traits")


class InvalidEvent(ValueError):
    """The event breaks the contract; ``str(error)`` is the reason given to the sender."""


@dataclass(frozen=True, slots=True)
class Event:
    """One validated behaviour event, as the profile fold sees it.

    ``user_id`` is the id the event is keyed by (:func:`user_key`). ``name`` is the track event name, or
    ``"Page Viewed"``, ``"Identify"``... for the other types. Identity links (:mod:`app.identity`):
    ``anonymous_id`` is the ``anonymousId`` of an event keyed by its ``userId``, and ``alias_to`` the ``userId``
    of an ``alias`` event (keyed by its ``previousId``).
    """

    type: str
    name: str
    user_id: str
    message_id: str
    timestamp_ms: int
    properties: Mapping[str, Any]
    context: Mapping[str, Any]
    anonymous_id: str | None = None
    alias_to: str | None = None

    @property
    def session_id(self) -> str | None:
        sid = self.context.get("sessionId", self.context.get("session_id"))
        return sid if isinstance(sid, str) and sid else None


def normalise(
    raw: object,
    *,
    now_ms: int,
    default_type: str | None = None,
    received: bool = False,
    batch_sent_at: object = None,
    position: int = 0,
) -> dict[str, Any]:
    """Validate one incoming event and return it ready for the topic, or raise :class:`InvalidEvent`.

    The HTTP edge passes ``received=True`` (``now_ms`` is then the time of receipt) and the ``sentAt`` of a batch
    body, if any, to have the client's clock corrected, and ``position``, the event's index in its batch: see
    :func:`validate`.
    """
    return validate(
        raw, now_ms=now_ms, default_type=default_type, received=received, batch_sent_at=batch_sent_at, position=position
    )[0]


def validate(
    raw: object,
    *,
    now_ms: int,
    default_type: str | None = None,
    received: bool = False,
    batch_sent_at: object = None,
    position: int = 0,
) -> tuple[dict[str, Any], int]:
    """Like :func:`normalise`, also returning the event's timestamp in epoch ms (parsed once, here).

    Fills what the Segment API fills for its callers: ``type`` from the endpoint, ``timestamp`` from
    ``originalTimestamp`` or the time of receipt, a ``messageId`` derived from the content and the client's timestamp
    when missing (so a retried request is recognised as a duplicate; ``position``, the event's index in its batch or
    record, keeps identical events sent without a timestamp in one request apart), and ``receivedAt``.

    With ``received`` (the event has just arrived from its client, at ``now_ms``), a client timestamp sent with a
    ``sentAt`` (the event's own, else ``batch_sent_at``) is corrected for the client's clock skew as Segment does:
    ``timestamp = receivedAt - (sentAt - timestamp)``, the client's value kept as ``originalTimestamp``. Only the edge
    may correct: a record re-read from the topic carries the corrected ``timestamp`` and a ``sentAt`` that must not
    apply twice, and its ``now_ms`` is not when the client sent it.
    """
    if not isinstance(raw, dict):
        raise InvalidEvent(f"an event must be a JSON object, not {_json_type(raw)}")
    event = dict(raw)
    if default_type is not None and "type" not in event:
        event["type"] = default_type
    type_ = event.get("type")
    if not isinstance(type_, str) or type_ not in EVENT_TYPES:
        # A list or object is named, not shown: it is unhashable here, and the repr of a deep one overflows the stack.
        shown = _json_type(type_) if isinstance(type_, (list, dict)) else f"{type_!r:.40}"
        raise InvalidEvent(f"type must be one of {', '.join(sorted(EVENT_TYPES))}, not {shown}")
    if default_type is not None and type_ != default_type:
        raise InvalidEvent(f"type {type_!r} sent to the /v1/{default_type} endpoint")

    user_id = _optional_id(event, "userId")
    anonymous_id = _optional_id(event, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise InvalidEvent("userId or anonymousId is required")
    if type_ == "track":
        name = event.get("event")
        if not isinstance(name, str) or not name.strip():
            raise InvalidEvent("a track event needs an event name (string)")
        if len(name) > MAX_NAME_LENGTH:
            raise InvalidEvent(f"event name longer than {MAX_NAME_LENGTH} characters")
    if type_ == "alias":
        previous_id = _optional_id(event, "previousId")
        if previous_id is None or user_id is None:
            raise InvalidEvent("an alias event needs previousId and userId (strings)")
        if previous_id == user_id:
            raise InvalidEvent("an alias event's previousId and userId must differ")
    for field in _OBJECT_FIELDS:
        value = event.get(field)
        if value is not None and not isinstance(value, dict):
            raise InvalidEvent(f"{field} must be an object, not {_json_type(value)}")
    consent = (event.get("context") or {}).get("consent")
    if consent is not None:
        if not isinstance(consent, dict) or "categoryPreferences" not in consent:
            raise InvalidEvent("context.consent must be an object with categoryPreferences")
        preferences = consent["categoryPreferences"]
        if isinstance(preferences, dict):
            # Consent managers (Segment's, OneTrust) state their own categories ("C0001", "Advertising") on every
            # event: refusing them would lose all of a site's events, so only the purposes Nudge knows are checked.
            preferences = {purpose: preferences[purpose] for purpose in PURPOSES if purpose in preferences}
        try:
            parse_preferences(preferences, where="context.consent.categoryPreferences")
        except ValueError as error:
            raise InvalidEvent(str(error)) from None

    stamp = event.get("timestamp")
    if stamp is None:
        stamp = event.get("originalTimestamp")
    sent_at = (batch_sent_at if event.get("sentAt") is None else event["sentAt"]) if received else None
    sent_at_ms = None if sent_at is None else parse_timestamp(sent_at, field="sentAt")
    if stamp is None:
        timestamp_ms = now_ms
        event["timestamp"] = iso_from_ms(now_ms)
    elif sent_at_ms is None:
        timestamp_ms = event_timestamp(stamp, now_ms=now_ms)
        event["timestamp"] = stamp
    else:
        timestamp_ms = skew_corrected(parse_timestamp(stamp, field="timestamp"), sent_at_ms, received_ms=now_ms)
        event["timestamp"] = iso_from_ms(timestamp_ms)
        # A client that sent both keeps its own originalTimestamp: nothing it sent is dropped.
        event.setdefault("originalTimestamp", stamp)
        event["sentAt"] = sent_at
    # The clock-skew correction moves with the time of receipt; a retry must not, so the client's own value counts.
    identity_stamp = event["timestamp"] if stamp is None else stamp
    if stamp is None and position:
        identity_stamp = f"{identity_stamp}#{position}"  # without it, two like events in one batch would be one
    if "messageId" in event and event["messageId"] is not None:
        if not isinstance(event["messageId"], str) or not event["messageId"]:
            raise InvalidEvent("messageId must be a non-empty string")
        if len(event["messageId"]) > MAX_ID_LENGTH:
            raise InvalidEvent(f"messageId longer than {MAX_ID_LENGTH} characters")
    else:
        # Derived from the content and the client's timestamp (else the time of receipt): a retried request with
        # the same timestamp is recognised, while two identical events sent without a timestamp stay two events.
        # Not from sentAt: a client stamps it anew on every attempt.
        content_fields = {key: value for key, value in raw.items() if key != "sentAt"}
        try:
            content = orjson.dumps(content_fields, option=orjson.OPT_SORT_KEYS) + str(identity_stamp).encode()
        except orjson.JSONEncodeError as error:
            raise InvalidEvent(f"event cannot be encoded as JSON: {error}") from None
        event["messageId"] = "auto-" + hashlib.blake2b(content, digest_size=12).hexdigest()

    event.setdefault("receivedAt", iso_from_ms(now_ms))
    return event, timestamp_ms


def to_event(raw: object, *, now_ms: int) -> Event:
    """Validate one event taken from a topic record and return its internal form, or raise :class:`InvalidEvent`."""
    return event_from(*validate(raw, now_ms=now_ms))


def event_from(event: Mapping[str, Any], timestamp_ms: int) -> Event:
    """The internal form of an event that :func:`validate` accepted, with the timestamp it parsed."""
    type_ = event["type"]
    return Event(
        type=type_,
        name=event["event"] if type_ == "track" else _TYPE_NAMES[type_],
        user_id=user_key(event),
        message_id=event["messageId"],
        timestamp_ms=timestamp_ms,
        # An identify event carries traits where others carry properties.
        properties=(event.get("traits") if type_ == "identify" else event.get("properties")) or {},
        context=event.get("context") or {},
        anonymous_id=_linked_anonymous_id(event) if type_ != "alias" else None,
        alias_to=event.get("userId") if type_ == "alias" else None,
    )


def _linked_anonymous_id(event: Mapping[str, Any]) -> str | None:
    anonymous_id = event.get("anonymousId")
    if event.get("userId") and anonymous_id and anonymous_id != event["userId"]:
        return str(anonymous_id)
    return None


def decode_record(value: bytes | None) -> list[object]:
    """Split a ``nudge.events`` record into its events, or raise :class:`InvalidEvent` for the whole record (also
    for a batch of more than :data:`MAX_BATCH_EVENTS` events, checked before any of them is looked at)."""
    if value is None:
        raise InvalidEvent("record has no value")
    if len(value) > 2 * MAX_BATCH_BYTES:
        raise InvalidEvent(f"record of {len(value)} bytes is over the {2 * MAX_BATCH_BYTES} byte limit")
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        raise InvalidEvent(f"record is not valid JSON: {error}") from None
    if isinstance(body, dict) and "batch" in body:
        batch = body["batch"]
        if not isinstance(batch, list):
            raise InvalidEvent(f"batch must be an array, not {_json_type(batch)}")
        if len(batch) > MAX_BATCH_EVENTS:
            raise InvalidEvent(f"batch of {len(batch)} events is over the {MAX_BATCH_EVENTS} event limit")
        return batch
    if isinstance(body, dict):
        return [body]
    raise InvalidEvent(f"record must be an event object or a batch envelope, not {_json_type(body)}")


def encode_event(event: object) -> bytes:
    """Encode an event as JSON, or raise :class:`InvalidEvent` (orjson refuses nesting past 254 levels)."""
    try:
        return orjson.dumps(event)
    except orjson.JSONEncodeError as error:
        raise InvalidEvent(f"event cannot be encoded as JSON: {error}") from None


def encode_batch(events: list[bytes]) -> bytes:
    """Join already-encoded events into one batch envelope without re-encoding them."""
    return b'{"batch":[' + b",".join(events) + b"]}"


def user_key(event: Mapping[str, Any]) -> str:
    """The id a normalised event is keyed by: ``userId``, else ``anonymousId``; an ``alias`` by its ``previousId``,
    the identity it retires, whose partition holds the state to hand over (see :mod:`app.identity`)."""
    if event.get("type") == "alias":
        return str(event["previousId"])
    return event.get("userId") or event["anonymousId"]


def event_timestamp(value: object, *, now_ms: int) -> int:
    """An event's ``timestamp`` in epoch milliseconds, refused unless :func:`parse_timestamp` reads it and it is at
    most :data:`MAX_FUTURE_SKEW_MS` after ``now_ms``."""
    timestamp_ms = parse_timestamp(value, field="timestamp")
    if timestamp_ms > now_ms + MAX_FUTURE_SKEW_MS:
        raise InvalidEvent("timestamp is more than 24 h in the future")
    return timestamp_ms


def skew_corrected(client_ms: int, sent_at_ms: int, *, received_ms: int) -> int:
    """The instant an event stamped ``client_ms`` by a client clock that read ``sent_at_ms`` when the request left
    happened by the server's clock, which received it at ``received_ms``; :class:`InvalidEvent` unless it is from
    1970 to 9999 and at most :data:`MAX_FUTURE_SKEW_MS` ahead (an event stamped after it was sent)."""
    corrected_ms = received_ms - (sent_at_ms - client_ms)
    if not EARLIEST_TIMESTAMP_MS <= corrected_ms <= LATEST_TIMESTAMP_MS:
        raise InvalidEvent(
            "timestamp corrected by sentAt (receivedAt - (sentAt - timestamp)) is not between "
            f"1970-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: {corrected_ms} ms since 1970"
        )
    if corrected_ms > received_ms + MAX_FUTURE_SKEW_MS:
        raise InvalidEvent("timestamp is more than 24 h after sentAt: corrected, it is more than 24 h in the future")
    return corrected_ms


def parse_timestamp(value: object, *, field: str) -> int:
    """Parse an ISO-8601 timestamp (naive means UTC) into epoch milliseconds, from 1970 to the end of 9999."""
    if not isinstance(value, str):
        raise InvalidEvent(f"{field} must be an ISO-8601 string, not {_json_type(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(f"{field} is not an ISO-8601 date-time: {value!r:.60}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # An offset can carry an instant out of the datetime range ("0001-01-01T00:00:00+14:00"): timestamp() still
    # computes it, and it must be refused here, before it reaches code that formats it.
    ms = int(moment.timestamp() * 1000)
    if not EARLIEST_TIMESTAMP_MS <= ms <= LATEST_TIMESTAMP_MS:
        raise InvalidEvent(f"{field} must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: {value!r:.60}")
    return ms


@lru_cache(maxsize=4096)
def iso_from_ms(ms: int) -> str:
    """Format epoch milliseconds the way Segment does: ``2026-11-23T02:52:16.123Z``.

    Cached: :func:`validate` stamps every event of a record with the same receipt time, and formatting a datetime
    costs more than the rest of that stamping.
    """
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_TYPE_NAMES = {
    "identify": "Identify",
    "page": "Page Viewed",
    "screen": "Screen Viewed",
    "group": "Group",
    "alias": "Alias",
}


def _optional_id(event: Mapping[str, Any], field: str) -> str | None:
    value = event.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{field} must be a string, not {_json_type(value)}")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidEvent(f"{field} longer than {MAX_ID_LENGTH} characters")
    return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
