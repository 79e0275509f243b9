"""The HTTP collector: Segment's HTTP Tracking API on the worker's web server.

``POST /v1/track|identify|page|screen|group|alias|batch`` with the write key as the HTTP Basic user (or
``writeKey`` in the body, as Segment allows), so ``segment-analytics-python`` or ``rudder-sdk-python`` pointed at
Nudge just work. Valid events are produced to ``nudge.events`` in batch envelopes, one per partition per flush
(:mod:`app.batching`); the response is sent once the broker has them.

Responses: 200 ``{"success": true}`` (a batch also reports ``rejected`` events by index, the first 100 of them, and
``rejectedCount``; the good ones are kept); 400 with a reason for malformed JSON or an invalid event; 401 for a
missing or wrong write key; 413 past 32 KB per event, or 500 KB or 2,500 events per batch, or a batch larger than
the rate limit's burst; 429 with ``Retry-After`` (whole seconds) when the write key is over its rate limit
(``NUDGE_COLLECTOR_RATE`` events/s, ``NUDGE_COLLECTOR_BURST`` at once, per key and per worker process:
:mod:`app.ratelimit`), the request refused whole and nothing produced; 503 with ``Retry-After`` for events with
personal fields while Redis (which holds their keys) is away.
"""

from __future__ import annotations

import time
from typing import Any, cast

from aiohttp import web
from faust.web import Request, Response, View
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.batching import PartitionBatcher
from app.events import InvalidEvent, encode_event, user_key
from app.intake import (
    HttpError,
    batch_answer,
    batch_events,
    body_limit,
    check_write_key,
    events_in,
    parse_body,
    single_event,
)
from app.keys import KeyStore
from app.main import app, events_topic, metrics, settings
from app.partitioning import partition_for
from app.pii import encrypt_fields, has_personal_fields
from app.ratelimit import RateLimit, RateLimiter


async def _send(partition: int, value: bytes) -> Any:
    return await app.producer.send(events_topic.get_topic_name(), None, value, partition, None, None)


#: The ``Retry-After`` of a 503 for want of Redis: it restarts in seconds (the ``redis-restart`` fault is back in 3).
REDIS_RETRY_AFTER_S = 5

batcher = PartitionBatcher(_send, linger_s=settings.collector_linger_ms / 1000)
key_store = KeyStore(Redis.from_url(settings.redis_url or ""), settings.app_id)
limiter = RateLimiter(RateLimit(rate=settings.collector_rate, burst=settings.collector_burst))


class _CollectorView(View):
    """One Segment endpoint. Subclasses set ``event_type`` (``None`` for ``/v1/batch``)."""

    event_type: str | None = None

    async def post(self, request: Request) -> Response:
        try:
            body = await _read_body(request, body_limit(self.event_type))
            payload = parse_body(body)
            write_key = check_write_key(request.headers.get("Authorization", ""), payload, settings.write_keys)
            # Before the events are validated: a flood is turned away for the least work.
            refusal = limiter.admit(write_key, events_in(payload, event_type=self.event_type), now_s=time.monotonic())
            if refusal is not None:
                raise HttpError(refusal.status, refusal.message, retry_after_s=refusal.retry_after_s)
            now_ms = int(time.time() * 1000)
            if self.event_type is None:
                return await self._batch(payload, now_ms)
            await produce([single_event(payload, event_type=self.event_type, now_ms=now_ms)])
            metrics.events_in_http.inc()
            return self.json({"success": True})
        except HttpError as error:
            metrics.rejected("collector", str(error))
            return self._refused(error)
        except InvalidEvent as error:
            metrics.rejected("collector", str(error))
            return self.json({"success": False, "message": str(error)}, status=400)
        except RedisError:
            # Only events with personal fields need Redis (their user's key), and nothing was produced: retryable.
            message = "personal fields cannot be encrypted now: the key store (Redis) is unavailable; retry later"
            return self._refused(HttpError(503, message, retry_after_s=REDIS_RETRY_AFTER_S))

    def _refused(self, error: HttpError) -> Response:
        headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s is not None else None
        return self.json({"success": False, "message": str(error)}, status=error.status, headers=headers)

    async def _batch(self, payload: Any, now_ms: int) -> Response:
        accepted, rejected = batch_events(payload, now_ms=now_ms)
        for refused in rejected:
            metrics.rejected("collector", refused["message"])
        if accepted:
            await produce(accepted)
            metrics.events_in_http.inc(len(accepted))
        status, answer = batch_answer(len(accepted), rejected)
        return self.json(answer, status=status)


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
    try:
        async for chunk in request.content.iter_chunked(64 * 1024):  # type: ignore[attr-defined]
            size += len(chunk)
            if size > limit:
                raise HttpError(413, f"body is over the {limit} byte limit")
            chunks.append(chunk)
    except web.RequestPayloadError as error:
        # A body that does not inflate as its Content-Encoding says, or breaks its chunked framing: the sender's fault.
        raise HttpError(400, f"body cannot be read: {' '.join(str(error).split())}") from None
    # aiohttp inflates gzip bodies as they stream in, so the limit counts inflated bytes (no zip bombs).
    return b"".join(chunks)


def _endpoint(event_type: str | None) -> type[_CollectorView]:
    name = f"{(event_type or 'batch').title()}View"
    view = type(name, (_CollectorView,), {"event_type": event_type})
    app.page(f"/v1/{event_type or 'batch'}")(view)
    return view


for _type in ("track", "identify", "page", "screen", "group", "alias", None):
    _endpoint(_type)
