"""Which source records are processed, in order, with no holes: the guard behind "nothing lost".

Faust's consumer can drop records it already fetched (a flow-control pause or a generation change in the middle of a
fetched batch) and then treats the jump in offsets as a legitimate gap that it commits across: the records are
silently skipped. Measured here: after a worker restart with a backlog, 41 to 74 consecutive records of every
partition were never delivered to the agent, and Faust committed past them.

``nudge.events`` is neither compacted nor written by transactional producers, so within one assignment its offsets
are contiguous. :class:`OffsetTracker` checks every record against the next expected offset of its partition; on a
:attr:`Verdict.HOLE` the agent reads the missing range itself (:class:`RangeReader`, outside Faust's consumer) and
processes it before the record at hand. Offsets are committed only up to what was processed without a hole
(``agents/commit.py``), so a crash never skips records either.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

READ_RANGE_TIMEOUT_S = 30.0


class Verdict(enum.Enum):
    PROCESS = "process"
    ALREADY_DONE = "already done"
    HOLE = "hole"


@dataclass
class OffsetTracker:
    """Per-partition next expected offset and what is ready to commit. Pure bookkeeping, no I/O."""

    expected: dict[int, int] = field(default_factory=dict)
    committed: dict[int, int] = field(default_factory=dict)

    def reset(self, restart: dict[int, int]) -> None:
        """Start over on a new assignment: the consumer restarts each partition at its committed offset (``restart``).

        Expecting those offsets, rather than whatever comes first, catches the hole Faust's consumer can leave right
        at the restart (measured in the fault suite: a partition kept through a rebalance lost its first 25 records
        after the seek, with no warning, and the commit then went past them).
        """
        self.expected = dict(restart)

    def check(self, partition: int, offset: int) -> Verdict:
        """What to do with the record at ``offset``; on a hole, first process ``next_offset(partition)..offset-1``."""
        expected = self.expected.get(partition)
        if expected is None or offset == expected:
            return Verdict.PROCESS
        return Verdict.ALREADY_DONE if offset < expected else Verdict.HOLE

    def next_offset(self, partition: int) -> int:
        return self.expected[partition]

    def processed(self, partition: int, offset: int) -> None:
        """Record that ``offset`` was processed; the next expected one follows it."""
        self.expected[partition] = offset + 1

    def committable(self) -> dict[int, int]:
        """Partitions whose processed position moved since the last commit, with the offset to commit."""
        return {p: o for p, o in self.expected.items() if self.committed.get(p) != o}

    def mark_committed(self, offsets: dict[int, int]) -> None:
        self.committed.update(offsets)


class RangeReader:
    """Reads record ranges with one consumer of its own, started on first use and kept until :meth:`stop`.

    The worker's reader: a consumer per read leaves a whole client's worth of reference cycles behind (metadata,
    sockets, futures), which only a full collection frees, and the worker's tuned collector runs full collections
    rarely (:mod:`app.gc_tuning`). Measured in a soak whose broker made partitions stall: after four minutes, 2,087
    partition metadata objects and 56 sockets of stopped consumers were still waiting for one.
    """

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def read(self, topic: str, partition: int, start: int, end: int) -> list[Any]:
        """Records ``start..end-1``, in offset order; fewer if the log really has a hole there."""
        if end <= start:
            return []  # also spares aiokafka a stop() right after assign(), which it answers with CancelledError
        async with self._lock:
            if self._consumer is None:
                consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
                await consumer.start()
                self._consumer = consumer
            try:
                return await _read(self._consumer, topic, partition, start, end)
            finally:
                self._consumer.unsubscribe()  # nothing assigned between reads: no background fetching

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()


async def read_range(bootstrap: str, topic: str, partition: int, start: int, end: int) -> list[Any]:
    """Read records ``start..end-1`` of one partition with a short-lived consumer (tools and tests).

    Returns them in offset order; fewer than asked if the log really has a hole there (then the caller goes on).
    """
    reader = RangeReader(bootstrap)
    try:
        return await reader.read(topic, partition, start, end)
    finally:
        await reader.stop()


async def _read(consumer: AIOKafkaConsumer, topic: str, partition: int, start: int, end: int) -> list[Any]:
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    consumer.seek(tp, start)
    records: list[Any] = []
    deadline = asyncio.get_running_loop().time() + READ_RANGE_TIMEOUT_S
    while await consumer.position(tp) < end and asyncio.get_running_loop().time() < deadline:
        fetched = await consumer.getmany(tp, timeout_ms=200)
        records.extend(r for r in fetched.get(tp, ()) if r.offset < end)
    return records
