"""The HTTP collector: Segment's HTTP Tracking API on the worker's web server.

``POST /v1/track|identify|page|screen|group|alias|batch`` with the write key as the HTTP Basic user (or
``writeKey`` in the body, as Segment allows), so ``segment-analytics-python`` or ``rudder-sdk-python`` pointed at
Nudge just work. Valid events are produced to ``nudge.events`` in batch envelopes, one per partition per flush
(:mod:`app.batching`); the response is sent once the broker has them.

Responses: 200 ``{"success": true}`` (a batch also reports ``rejected`` events by index, the good ones are kept);
400 with a reason for malformed JSON or an invalid event; 401 for a missing or wrong write key; 413 past 32 KB per
event or 500 KB per batch.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from typing import Any, cast

import orjson
from aiohttp import web
from faust.web import Request, Response, View
from redis.asyncio import Redis

from app.batching import PartitionBatcher
from app.events import MAX_BATCH_BYTES, MAX_EVENT_BYTES, InvalidEvent, encode_event, normalise, user_key
from app.keys import KeyStore
from app.main import app, events_topic, settings
from app.partitioning import partition_for
from app.pii import encrypt_fields, has_personal_fields


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _send(partition: int, value: bytes) -> Any:
    return await app.producer.send(events_topic.get_topic_name(), None, value, partition, None, None)


batcher = PartitionBatcher(_send, linger_s=settings.collector_linger_ms / 1000)
key_store = KeyStore(Redis.from_url(settings.redis_url or ""), settings.app_id)


class _CollectorView(View):
    """One Segment endpoint. Subclasses set ``event_type`` (``None`` for ``/v1/batch``)."""

    event_type: str | None = None

    async def post(self, request: Request) -> Response:
        try:
            body = await _read_body(request, MAX_BATCH_BYTES if self.event_type is None else MAX_EVENT_BYTES)
            payload = _parse_json(body)
            _authenticate(request, payload)
            now_ms = int(time.time() * 1000)
            if self.event_type is None:
                return await self._batch(payload, now_ms)
            event = normalise(payload, now_ms=now_ms, default_type=self.event_type)
            event.pop("writeKey", None)
            await produce([event])
            return self.json({"success": True})
        except HttpError as error:
            return self.json({"success": False, "message": str(error)}, status=error.status)
        except InvalidEvent as error:
            return self.json({"success": False, "message": str(error)}, status=400)

    async def _batch(self, payload: Any, now_ms: int) -> Response:
        if not isinstance(payload, dict) or not isinstance(payload.get("batch"), list):
            raise HttpError(400, 'a batch body must be an object with a "batch" array')
        accepted: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        for index, raw in enumerate(payload["batch"]):
            try:
                if len(encode_event(raw)) > MAX_EVENT_BYTES:
                    raise InvalidEvent(f"event is over the {MAX_EVENT_BYTES} byte limit")
                accepted.append(normalise(raw, now_ms=now_ms))
            except InvalidEvent as error:
                rejected.append({"index": index, "message": str(error)})
        if not accepted and rejected:
            return self.json({"success": False, "message": "no valid event", "rejected": rejected}, status=400)
        await produce(accepted)
        response: dict[str, Any] = {"success": True}
        if rejected:
            response.update(accepted=len(accepted), rejected=rejected)
        return self.json(response)


def _encoded(event: dict[str, Any]) -> tuple[int, bytes]:
    """The partition of a normalised event and its bytes for the topic."""
    return partition_for(user_key(event), settings.partitions), encode_event(event)


async def _produce(events: list[tuple[int, bytes]]) -> None:
    await batcher.submit(events)


async def produce_record(user_id: str, record: bytes) -> None:
    """Produce one prepared record to the user's partition of ``nudge.events``; return once the broker has it."""
    await _produce([(partition_for(user_id, settings.partitions), record)])


async def produce(events: list[dict[str, Any]]) -> None:
    """Produce normalised events to ``nudge.events`` with their personal fields encrypted (:mod:`app.pii`); return
    once the broker has them."""
    fields = settings.all_personal_fields
    personal = [user_key(event) for event in events if has_personal_fields(event, fields)]
    if personal:
        keys = await key_store.keys_for(personal, create=True)
        events = [
            encrypt_fields(event, key, user_key(event), fields) if (key := keys.get(user_key(event))) else event
            for event in events
        ]
    await _produce([_encoded(event) for event in events])


async def _read_body(request: Request, limit: int) -> bytes:
    declared = cast(web.Request, request).content_length
    if declared is not None and declared > limit:
        raise HttpError(413, f"body of {declared} bytes is over the {limit} byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):  # type: ignore[attr-defined]
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"body is over the {limit} byte limit")
        chunks.append(chunk)
    # aiohttp inflates gzip bodies as they stream in, so the limit counts inflated bytes (no zip bombs).
    return b"".join(chunks)


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise HttpError(400, f"body is not valid JSON: {error}") from None


def _authenticate(request: Request, payload: Any) -> None:
    key = _basic_user(request.headers.get("Authorization", ""))
    if key is None and isinstance(payload, dict) and isinstance(payload.get("writeKey"), str):
        key = payload["writeKey"]
    if key is None:
        raise HttpError(401, "missing write key: send it as the HTTP Basic user name")
    if not any(hmac.compare_digest(key.encode(), known.encode()) for known in settings.write_keys):
        raise HttpError(401, "unknown write key")


def _basic_user(header: str) -> str | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        user, _, _ = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user or None


def _endpoint(event_type: str | None) -> type[_CollectorView]:
    name = f"{(event_type or 'batch').title()}View"
    view = type(name, (_CollectorView,), {"event_type": event_type})
    app.page(f"/v1/{event_type or 'batch'}")(view)
    return view


for _type in ("track", "identify", "page", "screen", "group", "alias", None):
    _endpoint(_type)
