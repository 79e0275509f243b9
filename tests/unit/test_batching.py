"""PartitionBatcher: events become one batch envelope per partition, and every caller learns the delivery outcome.

The batcher is driven either by its linger timer or by ``drain()``. Tests that must not depend on the timer use a
one-hour linger and run ``drain()`` in the same ``gather`` after the submits: gather starts its tasks in order, so
the submits have queued their events before drain flushes them. Every wait is bounded by ``wait_for`` so a
batcher that never delivers fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import orjson
import pytest

from app.batching import PartitionBatcher
from app.events import decode_record

HOUR = 3600.0
TIMEOUT = 5.0


class Broker:
    """A recording ``send(partition, value)``; the delivery is an already-resolved (or failed) future."""

    def __init__(self, *, refuse: Exception | None = None, fail_delivery: Exception | None = None) -> None:
        self.records: list[tuple[int, bytes]] = []
        self.refuse = refuse
        self.fail_delivery = fail_delivery

    async def send(self, partition: int, value: bytes) -> asyncio.Future[None]:
        if self.refuse is not None:
            raise self.refuse
        self.records.append((partition, value))
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail_delivery is not None:
            delivery.set_exception(self.fail_delivery)
        else:
            delivery.set_result(None)
        return delivery

    def events(self) -> list[tuple[int, list[object]]]:
        """Each record as (partition, the events decode_record finds in it)."""
        return [(partition, decode_record(value)) for partition, value in self.records]


def event(n: int, pad: int = 0) -> bytes:
    return orjson.dumps({"type": "track", "event": "E", "userId": f"user-{n}", "messageId": f"m{n}", "pad": "x" * pad})


def decoded(*ns: int) -> list[object]:
    return [orjson.loads(event(n)) for n in ns]


async def bounded(*aws: Awaitable[Any], return_exceptions: bool = False) -> list[Any]:
    return await asyncio.wait_for(asyncio.gather(*aws, return_exceptions=return_exceptions), TIMEOUT)


async def test_events_for_one_partition_become_one_batch_record() -> None:
    broker = Broker()
    batcher = PartitionBatcher(broker.send, linger_s=0.001)
    await asyncio.wait_for(batcher.submit([(0, event(1)), (0, event(2)), (0, event(3))]), TIMEOUT)
    assert broker.events() == [(0, decoded(1, 2, 3))]
    assert orjson.loads(broker.records[0][1]) == {"batch": decoded(1, 2, 3)}


async def test_different_partitions_become_different_records() -> None:
    broker = Broker()
    batcher = PartitionBatcher(broker.send, linger_s=0.001)
    await asyncio.wait_for(batcher.submit([(0, event(1)), (5, event(2)), (0, event(3)), (2, event(4))]), TIMEOUT)
    assert sorted(broker.events()) == [(0, decoded(1, 3)), (2, decoded(4)), (5, decoded(2))]


async def test_max_bytes_splits_a_partition_into_several_records_in_order() -> None:
    broker = Broker()
    size = len(event(0, pad=20))
    batcher = PartitionBatcher(broker.send, linger_s=HOUR, max_bytes=3 * size)
    events = [(0, event(n, pad=20)) for n in range(10)]
    await bounded(batcher.submit(events), batcher.drain())
    assert len(broker.records) > 1
    assert all(partition == 0 for partition, _ in broker.records)
    assert [e for _, batch in broker.events() for e in batch] == [orjson.loads(data) for _, data in events]
    for _, batch in broker.events():
        assert sum(len(orjson.dumps(e)) for e in batch) <= 3 * size


async def test_an_event_larger_than_max_bytes_still_goes_alone() -> None:
    broker = Broker()
    batcher = PartitionBatcher(broker.send, linger_s=HOUR, max_bytes=50)
    await bounded(batcher.submit([(0, event(1)), (0, event(2, pad=200)), (0, event(3))]), batcher.drain())
    assert [len(batch) for _, batch in broker.events()] == [1, 1, 1]


async def test_concurrent_submits_within_the_linger_window_share_a_record() -> None:
    broker = Broker()
    batcher = PartitionBatcher(broker.send, linger_s=HOUR)
    await bounded(batcher.submit([(0, event(1))]), batcher.submit([(0, event(2)), (1, event(3))]), batcher.drain())
    assert sorted(broker.events()) == [(0, decoded(1, 2)), (1, decoded(3))]


async def test_the_linger_timer_flushes_without_drain() -> None:
    broker = Broker()
    batcher = PartitionBatcher(broker.send, linger_s=0.001)
    await bounded(batcher.submit([(0, event(1))]), batcher.submit([(0, event(2))]))
    assert broker.events() == [(0, decoded(1, 2))]


async def test_drain_flushes_pending_events_and_waits_for_their_delivery() -> None:
    broker = Broker()
    batcher = PartitionBatcher(broker.send, linger_s=HOUR)
    submits = asyncio.gather(batcher.submit([(0, event(1)), (3, event(2))]), batcher.submit([(3, event(3))]))
    await bounded(batcher.drain())  # runs after the submits have queued their events
    assert sorted(broker.events()) == [(0, decoded(1)), (3, decoded(2, 3))]  # sent before drain returned
    assert await asyncio.wait_for(submits, TIMEOUT) == [None, None]  # and every caller is released


async def test_a_refused_send_fails_every_caller_in_that_record() -> None:
    broker = Broker(refuse=ConnectionError("broker down"))
    batcher = PartitionBatcher(broker.send, linger_s=HOUR)
    first, second, _ = await bounded(
        batcher.submit([(0, event(1))]), batcher.submit([(0, event(2))]), batcher.drain(), return_exceptions=True
    )
    assert isinstance(first, ConnectionError) and str(first) == "broker down"
    assert isinstance(second, ConnectionError)


async def test_a_failed_delivery_fails_every_caller_in_that_record() -> None:
    broker = Broker(fail_delivery=RuntimeError("not enough replicas"))
    batcher = PartitionBatcher(broker.send, linger_s=HOUR)
    first, second, _ = await bounded(
        batcher.submit([(0, event(1))]), batcher.submit([(0, event(2))]), batcher.drain(), return_exceptions=True
    )
    assert isinstance(first, RuntimeError) and str(first) == "not enough replicas"
    assert isinstance(second, RuntimeError)


async def test_a_failure_on_one_partition_does_not_fail_callers_of_another() -> None:
    class Partial(Broker):
        async def send(self, partition: int, value: bytes) -> asyncio.Future[None]:
            if partition == 1:
                raise ConnectionError("partition 1 leader unavailable")
            return await super().send(partition, value)

    broker = Partial()
    batcher = PartitionBatcher(broker.send, linger_s=HOUR)
    ok, failed, both, _ = await bounded(
        batcher.submit([(0, event(1))]),
        batcher.submit([(1, event(2))]),
        batcher.submit([(0, event(3)), (1, event(4))]),
        batcher.drain(),
        return_exceptions=True,
    )
    assert ok is None
    assert isinstance(failed, ConnectionError)
    assert isinstance(both, ConnectionError)  # one of its events was refused
    assert broker.events() == [(0, decoded(1, 3))]


async def test_the_batcher_keeps_working_after_a_failure() -> None:
    broker = Broker(refuse=ConnectionError("broker down"))
    batcher = PartitionBatcher(broker.send, linger_s=0.001)
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(batcher.submit([(0, event(1))]), TIMEOUT)
    broker.refuse = None
    await asyncio.wait_for(batcher.submit([(0, event(2))]), TIMEOUT)
    assert broker.events() == [(0, decoded(2))]


async def test_drain_with_nothing_pending_returns_and_submit_of_nothing_sends_nothing() -> None:
    broker = Broker()
    batcher = PartitionBatcher(broker.send, linger_s=HOUR)
    await asyncio.wait_for(batcher.submit([]), TIMEOUT)
    await asyncio.wait_for(batcher.drain(), TIMEOUT)
    assert broker.records == []
