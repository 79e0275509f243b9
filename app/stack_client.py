"""A running :class:`app.devstack.DevStack` seen from outside: feed it a stream, wait on it, read what it shows.

The fault suite (:mod:`app.faults`) and the integration tests drive stacks the same way, so they share these: a
producer that packs events per partition the way the collector does, a bounded condition wait, and readers for the
HTTP API (profiles, stats) and the broker (end offsets). Failed expectations raise ``AssertionError``, so a test
reports them as failures and the fault suite as a broken run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from app.batching import topic_batcher
from app.devstack import DevStack, create_topic
from app.events import user_key
from app.partitioning import partition_for
from app.sending import Pacer, chunks


async def wait_for(condition: Callable[[], Awaitable[bool]], *, timeout: float, what: str) -> None:
    """Poll ``condition`` until it is true; :class:`TimeoutError` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


async def get_json(url: str, *, api_key: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {api_key}"}) as session,
        session.get(url) as response,
    ):
        return response.status, await response.json(content_type=None)


async def fetch_profiles(stack: DevStack, users: Iterable[str], *, base_url: str | None = None) -> dict[str, Any]:
    """GET every user's profile (concurrently); missing users map to ``None``."""
    base = base_url or stack.http
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    slots = asyncio.Semaphore(32)

    async def one(session: aiohttp.ClientSession, user: str) -> tuple[str, Any]:
        async with slots, session.get(f"{base}/v1/users/{user}/profile") as response:
            if response.status == 404:
                return user, None
            assert response.status == 200, await response.text()
            return user, await response.json()

    async with aiohttp.ClientSession(headers=headers) as session:
        return dict(await asyncio.gather(*(one(session, user) for user in users)))


def stable(view: dict[str, Any]) -> dict[str, Any]:
    """A profile view without the parts that depend on the reading time (RFM recency, decayed affinity)."""
    return {k: v for k, v in view.items() if k not in {"rfm", "category_affinity"}}


async def stats(stack: DevStack, url: str | None = None) -> dict[str, Any]:
    status, body = await get_json(f"{url or stack.http}/v1/stats", api_key=stack.api_key)
    assert status == 200, body
    return body


async def produce_batched(
    bootstrap: str,
    events: list[dict[str, Any]],
    *,
    partitions: int,
    rate: float = 0,
    linger_s: float = 0.005,
    chunk: int = 100,
) -> None:
    """Produce events the way the collector does (batch envelopes per partition, held ``linger_s``), optionally
    paced at ``rate`` events/s.

    ``chunk`` events are submitted at a time, and each submit waits for its delivery: unpaced, that makes envelopes
    of about ``chunk / partitions`` events.
    """
    await create_topic(bootstrap, "nudge.events", partitions)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=round(linger_s * 1000), max_batch_size=1024 * 1024
    )
    await producer.start()
    try:
        batcher = topic_batcher(producer, "nudge.events", linger_s=linger_s)
        pacer = Pacer(rate)
        for part in chunks(events, chunk):
            await batcher.submit((partition_for(user_key(e), partitions), orjson.dumps(e)) for e in part)
            await pacer.advance(len(part))
        await batcher.drain()
    finally:
        await producer.stop()


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """The offset after the last record of each partition, read from fetch responses (Tansu-safe)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from app.tansu_compat import true_end_offsets

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        listed = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in (await true_end_offsets(bootstrap, listed)).items()}


async def read_topic(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    """Every record of ``topic`` now, partition by partition, each in offset order (tools and tests)."""
    from app.offsets import read_range

    records: list[Any] = []
    for partition, end in (await end_offsets(bootstrap, topic, partitions)).items():
        records += await read_range(bootstrap, topic, partition, 0, end)
    return records
