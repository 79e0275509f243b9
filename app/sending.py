"""Send events into Nudge the way real producers do: over the collector's HTTP API, or straight to the topic.

Used by ``nudge simulate``, ``nudge replay``, the demo and the benchmarks. Both senders pace themselves to a rate
(0 = as fast as possible) and report progress.
"""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TextIO

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

#: Statuses after which the collector produced nothing and says when to come back (``Retry-After``): over the write
#: key's rate limit, or Redis away for events with personal fields.
RETRYABLE = frozenset({429, 503})
#: How often one request is retried on a :data:`RETRYABLE` answer, and the longest wait taken between tries.
MAX_RETRIES = 20
MAX_RETRY_WAIT_S = 30.0


@dataclass
class Progress:
    """Prints ``label: done/total (rate/s)`` to stderr at most once a second, and a final line."""

    label: str
    total: int | None = None
    #: Where progress lines go; ``None`` keeps quiet.
    stream: TextIO | None = field(default_factory=lambda: sys.stderr)
    done: int = 0
    rejected: int = 0
    _started: float = field(default_factory=time.monotonic)
    _printed: float = 0.0

    def add(self, count: int, rejected: int = 0) -> None:
        self.done += count
        self.rejected += rejected
        now = time.monotonic()
        if now - self._printed >= 1.0:
            self._printed = now
            self._print()

    def finish(self) -> None:
        self._print()

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self._started, 1e-9)

    def _print(self) -> None:
        if self.stream is None:
            return
        total = f"/{self.total:,}" if self.total else ""
        extra = f", {self.rejected:,} rejected" if self.rejected else ""
        print(f"{self.label}: {self.done:,}{total} ({self.rate:,.0f}/s{extra})", file=self.stream, flush=True)


class Pacer:
    """Sleeps so that ``count`` items take at least ``count / rate`` seconds (``rate`` 0: never sleeps)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._start = time.monotonic()
        self._count = 0

    async def advance(self, count: int) -> None:
        self._count += count
        if self.rate > 0:
            delay = self._start + self._count / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


class EventTimePacer:
    """Sleeps so that events go out as they happened in event time, ``speed`` times faster."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._origin: tuple[int, float] | None = None

    async def wait_for(self, event: dict[str, Any]) -> None:
        from app.replay import event_time_ms

        stamp = event_time_ms(event)
        if self._origin is None:
            self._origin = (stamp, time.monotonic())
        delay = self._origin[1] + (stamp - self._origin[0]) / 1000 / self.speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


async def send_http(
    events: Iterable[dict[str, Any] | bytes],
    *,
    url: str,
    write_key: str,
    rate: float = 0,
    batch_size: int = 100,
    progress: Progress | None = None,
    concurrency: int = 4,
    speed: float = 0,
) -> tuple[int, int]:
    """POST events to the collector in ``/v1/batch`` requests; malformed ``bytes`` items go alone to ``/v1/track``.

    ``speed`` > 0 paces by the events' own timestamps instead of ``rate`` (a replay at ``speed`` times real time).
    A request answered 429 or 503 (nothing was produced) is sent again after the answer's ``Retry-After``, up to
    :data:`MAX_RETRIES` times. Returns ``(accepted, rejected)`` as the collector reported them.
    """
    clock = EventTimePacer(speed) if speed > 0 else None
    auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    pacer = Pacer(rate)
    accepted = rejected = 0
    slots = asyncio.Semaphore(concurrency)

    async def post(session: aiohttp.ClientSession, path: str, body: bytes, count: int) -> None:
        nonlocal accepted, rejected
        async with slots:
            status, reply = await _post_retrying(session, url + path, body, headers)
            if status == 200:
                bad = len(reply.get("rejected", ()))
            elif status == 400:
                bad = len(reply.get("rejected", ())) or count
            else:
                raise RuntimeError(f"collector answered {status}: {reply}")
            accepted += count - bad
            rejected += bad
            if progress:
                progress.add(count, bad)

    async with aiohttp.ClientSession() as session:
        tasks: set[asyncio.Task[None]] = set()
        try:
            for chunk in chunks(events, batch_size):
                good = [e for e in chunk if isinstance(e, dict)]
                if clock is not None and good:
                    await clock.wait_for(good[0])
                for raw in (e for e in chunk if isinstance(e, bytes)):
                    tasks.add(asyncio.create_task(post(session, "/v1/track", raw, 1)))
                if good:
                    body = orjson.dumps({"batch": good})
                    tasks.add(asyncio.create_task(post(session, "/v1/batch", body, len(good))))
                if len(tasks) >= concurrency * 2:
                    done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()  # re-raise a failed request
                await pacer.advance(len(chunk))
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            # Stopped (Ctrl-C) or failed: the requests still in flight go with it, rather than failing later, on
            # their own, against a collector that is shutting down ("Task exception was never retrieved").
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return accepted, rejected


async def _post_retrying(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    """POST ``body``; while the answer is :data:`RETRYABLE`, wait its ``Retry-After`` and send it again."""
    retries = 0
    while True:
        async with session.post(url, data=body, headers=headers) as response:
            reply = await response.json(content_type=None)
            if response.status not in RETRYABLE or retries == MAX_RETRIES:
                return response.status, reply
            wait_s = retry_after_s(response.headers.get("Retry-After"))
        print(f"collector answered {response.status}, retrying in {wait_s:g} s: {reply}", file=sys.stderr, flush=True)
        await asyncio.sleep(wait_s)
        retries += 1


def retry_after_s(header: str | None) -> float:
    """The wait a ``Retry-After`` header of seconds asks for, from 0.1 to :data:`MAX_RETRY_WAIT_S`; 1 s if absent or
    not a number (the HTTP-date form is not used by the collector)."""
    try:
        seconds = float(header) if header is not None else 1.0
    except ValueError:
        seconds = 1.0
    if seconds != seconds:  # NaN
        seconds = 1.0
    return min(max(seconds, 0.1), MAX_RETRY_WAIT_S)


async def send_kafka(
    events: Iterable[dict[str, Any] | bytes],
    *,
    bootstrap: str,
    topic: str,
    rate: float = 0,
    progress: Progress | None = None,
) -> int:
    """Produce one record per event keyed by user id, as another system's producer would. Returns the count."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, max_batch_size=256 * 1024)
    await producer.start()
    pacer = Pacer(rate)
    sent = 0
    try:
        for chunk in chunks(events, 500):
            for item in chunk:
                if isinstance(item, bytes):
                    await producer.send(topic, item)
                    continue
                user = item.get("userId") or item.get("anonymousId")
                key = user.encode() if isinstance(user, str) else None
                await producer.send(topic, orjson.dumps(item), key=key)
            sent += len(chunk)
            if progress:
                progress.add(len(chunk))
            await pacer.advance(len(chunk))
        await producer.flush()
    finally:
        await producer.stop()
    return sent
