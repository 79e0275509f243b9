"""Compatibility with the embedded Tansu broker: the true end offset of a partition, and short fetch waits.

Tansu 0.6 answers ``ListOffsets(latest)`` with the base offset of the newest record *batch* + 1 instead of the
offset after its last record. Faust takes that answer as the changelog high-water mark, so table recovery after a
restart stops early and silently drops the newest table updates. Fetch responses carry the right high watermark,
so :func:`true_end_offsets` fetches from just before the listed offset and reads it.

Tansu also holds every fetch open for the consumer's whole ``fetch_max_wait_ms``, even when it found records (Kafka
answers as soon as it has ``fetch_min_bytes``). Faust asks for 1,500 ms, which made each event wait about a second
before the worker saw it (measured, one hop at 2,000 records/s: p50 373 ms at 1,500 ms, 8 ms at 10 ms), so the
worker's consumer asks for :data:`FETCH_MAX_WAIT_MS`.

Applied only for the embedded broker (``NUDGE_EMBEDDED_BROKER=1``, set by ``nudge dev``); a real Kafka cluster
answers correctly. ``tests/integration/test_tansu_compat.py`` fails without this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

FETCH_TIMEOUT_S = 10.0
FETCH_MAX_WAIT_MS = 10


async def true_end_offsets(bootstrap: str, listed: Mapping[Any, int]) -> dict[Any, int]:
    """Return, for each partition, the offset after its last record, given what ``ListOffsets`` answered."""
    stale = {tp: offset for tp, offset in listed.items() if offset > 0}
    if not stale:
        return dict(listed)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = {TopicPartition(tp.topic, tp.partition): tp for tp in stale}
        consumer.assign(list(partitions))
        for kafka_tp, tp in partitions.items():
            consumer.seek(kafka_tp, stale[tp] - 1)
        deadline = asyncio.get_running_loop().time() + FETCH_TIMEOUT_S
        while asyncio.get_running_loop().time() < deadline:
            unknown = [kafka_tp for kafka_tp in partitions if consumer.highwater(kafka_tp) is None]
            if not unknown:
                break
            await consumer.getmany(*unknown, timeout_ms=200, max_records=1)
        result = dict(listed)
        for kafka_tp, tp in partitions.items():
            result[tp] = max(stale[tp], consumer.highwater(kafka_tp) or 0)
        return result
    finally:
        await consumer.stop()


def install(bootstrap: str) -> None:
    """Make Faust's consumer use :func:`true_end_offsets` for high-water marks (table recovery) and short fetches."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(thread, "_nudge_tansu_compat", False):
        return
    listed_highwaters = thread._highwaters

    async def _highwaters(self: Any, partitions: Any) -> Mapping[Any, int]:
        return await true_end_offsets(bootstrap, await listed_highwaters(self, partitions))

    create_worker_consumer = thread._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> AIOKafkaConsumer:
        consumer = create_worker_consumer(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts its fetcher
        return consumer

    thread._highwaters = _highwaters  # type: ignore[method-assign]
    thread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    thread._nudge_tansu_compat = True  # type: ignore[attr-defined]
