"""Write table values straight into the producer's record batches instead of through ``Table.__setitem__``.

``Table.__setitem__`` costs 50-140 µs per write (it wraps each changelog record in Faust's send buffer); appending
the same record to aiokafka's open batch for the partition costs a few µs. The values are the same bytes Faust
would write, so table recovery reads them unchanged.

Consistency with Faust's recovery: Faust only knows the changelog offsets it wrote or read itself. After a rebalance
that keeps a partition here, it would re-read everything written since its last recovery and apply it over the live
values -- and a value still in flight is then replaced by an older one, so later events fold onto a stale profile
(seen here: a restarted worker that went through two generations lost two thirds of its work). Each delivered batch
therefore advances the recovery's offset for its partition past our own writes.

Consistency with offsets (quix-streams' checkpoint order): the writers only queue records in the producer; the
commit (``agents/commit.py``) waits for :meth:`StagedWrites.settled` and ``producer.flush()`` before it commits the
source offsets, so a committed offset never points past a changelog write that was lost. A crash before the commit
replays the source records, and the idempotent fold (:func:`tables.profile.record_steps`) skips what the changelog
already holds -- which, thanks to :class:`StagedWrites`, includes everything the record caused.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from faust.tables.table import Table
from faust.types import TP, AppT, TableT

#: A pending delete: the changelog gets a tombstone (a record with no value).
_DELETED = object()
#: Pending writes: partition -> key -> value (or ``_DELETED``); the last write of a key replaces earlier ones.
Pending = dict[int, dict[Any, Any]]


class BulkTableWriter:
    """Collects ``(key, value)`` writes for one table and sends them as one batch per changelog partition.

    Call :meth:`put` for each changed value, then :meth:`flush` (or :class:`StagedWrites`) before the source record
    counts as processed. Only the last value of a key is sent: the changelog is compacted to it anyway, and a user
    who acts ten times between two flushes costs the broker one record instead of ten.
    """

    def __init__(
        self,
        table: TableT,
        *,
        encode_key: Callable[[Any], bytes],
        encode_value: Callable[[Any], bytes],
    ) -> None:
        self._table = table
        self._encode_key = encode_key
        self._encode_value = encode_value
        self._pending: Pending = {}

    def put(self, key: Any, value: Any, *, partition: int) -> None:
        """Store ``value`` under ``key`` now (reads see it at once); its changelog record waits for :meth:`flush`.

        ``value`` is encoded when sent, so it must not be changed in place afterwards (table values are immutable).
        """
        self._table.data[key] = value
        self._pending.setdefault(partition, {})[key] = value

    def delete(self, key: Any, *, partition: int) -> None:
        """Remove ``key`` now; its changelog gets a tombstone at :meth:`flush`."""
        self._table.data.pop(key, None)
        self._pending.setdefault(partition, {})[key] = _DELETED

    def take(self) -> Pending:
        """The writes since the last :meth:`take` or :meth:`flush`, for :meth:`send`; the writer starts afresh."""
        pending, self._pending = self._pending, {}
        return pending

    async def flush(self) -> None:
        """Queue the pending changelog records in the producer's open batch of each partition."""
        await self.send(self.take())

    async def send(self, pending: Pending) -> None:
        """Queue ``pending`` in the producer's open batch of each partition.

        ``producer.send`` appends to the batch the producer is filling (it waits only when its buffer is full);
        ``send_batch`` would wait for the partition's previous batch to leave first -- a linger per record, measured
        as 76% of the agent's time at 2,000 records/s.
        """
        if not pending:
            return
        producer = self._table.app.producer._ensure_producer()  # type: ignore[attr-defined]
        topic = self._table.changelog_topic.get_topic_name()
        encode_key, encode_value = self._encode_key, self._encode_value
        for partition, values in pending.items():
            delivery = None
            for key, value in values.items():
                encoded = None if value is _DELETED else encode_value(value)
                delivery = await producer.send(topic, encoded, key=encode_key(key), partition=partition)
            if delivery is not None:
                delivery.add_done_callback(functools.partial(self._delivered, tp=TP(topic, partition)))

    def _delivered(self, delivery: asyncio.Future[Any], *, tp: TP) -> None:
        """Tell Faust's recovery our records up to this flush's last offset are already in the table."""
        if delivery.cancelled() or delivery.exception() is not None:
            return
        recovery = self._table.app.tables.recovery  # type: ignore[attr-defined]
        if tp not in recovery.active_tps:
            return  # revoked meanwhile: the next owner reads everything
        last = delivery.result().offset
        current = recovery.active_offsets.get(tp)
        if current is None or last > current:
            recovery.active_offsets[tp] = last


class StagedWrites:
    """Changelog writes sent in stages, each only once everything the producer held before it was delivered.

    Records of different topics are not delivered together: the producer sends a batch when its linger runs out, so
    a profile batch opened a moment before the insight batch leaves first. A worker killed between the two left a
    profile that had folded an event and an insight that never saw it; the next owner skipped the redelivered event
    as folded, and the cart timer it armed was lost. With stages ``[insights, profiles, erasures]``:

    - a delivered profile means its insight, and the decisions, segment changes and audits sent straight away, were
      delivered before it, so skipping a folded record loses nothing;
    - an insight may be delivered without its profile: the insight records which source record it applied
      (:attr:`models.insight.Insight.source`), so the replay folds the profile and leaves the insight alone;
    - an erasure's marker is written after the tombstones it stands for.

    Call :meth:`queue` where the writes of a source record are complete (all its other records sent); a background
    task sends the stages, coalescing everything queued meanwhile. :meth:`settled` waits until what was queued
    before the call is handed to the producer (a ``producer.flush()`` then delivers it).
    """

    def __init__(self, stages: list[BulkTableWriter], *, flush: Callable[[], Awaitable[None]]) -> None:
        self._writers = stages
        self._flush = flush
        self._backlog: list[Pending] = [{} for _ in stages]
        self._queued = self._sent = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._progress: asyncio.Future[None] | None = None

    def queue(self) -> None:
        """Take the stages' pending writes into the backlog the background task sends next."""
        for backlog, writer in zip(self._backlog, self._writers, strict=True):
            for partition, values in writer.take().items():
                backlog.setdefault(partition, {}).update(values)
        self._queued += 1
        if self._task is None:
            self._progress = asyncio.get_running_loop().create_future()
            self._task = asyncio.ensure_future(self._run())
        elif self._task.done():
            self._task.result()  # the task failed: raise its error here, in the caller's record
        self._wake.set()

    async def settled(self) -> None:
        """Wait until every write queued before this call has been handed to the producer."""
        target = self._queued
        while self._sent < target:
            assert self._task is not None and self._progress is not None
            await asyncio.wait([self._task, self._progress], return_when=asyncio.FIRST_COMPLETED)
            if self._task.done():
                self._task.result()
                raise RuntimeError("the staged changelog writer stopped")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            target = self._queued
            stages, self._backlog = self._backlog, [{} for _ in self._writers]
            for writer, pending in zip(self._writers, stages, strict=True):
                if pending:
                    await self._flush()  # everything sent before this stage is delivered
                    await writer.send(pending)
            self._sent = target
            assert self._progress is not None
            self._progress.set_result(None)
            self._progress = asyncio.get_running_loop().create_future()


def changelog_table(
    app: AppT,
    name: str,
    *,
    partitions: int,
    value_serializer: str,
    encode_key: Callable[[Any], bytes],
    encode_value: Callable[[Any], bytes],
    help: str,
) -> tuple[Table, BulkTableWriter]:
    """Declare a table keyed by UTF-8 user id (or partition number) and its bulk writer.

    Faust derives a table's serializers from key_type/value_type only ("json" unless a faust.Record), so it would
    route and recover by JSON-encoded keys. Keys here are the UTF-8 bytes every producer keys by (see
    app.partitioning) and values use the named codec (app.codecs): the changelog topic is declared with them, and
    the serializers are set again on the table because its store is created lazily with them.
    """
    changelog = app.topic(
        f"{app.conf.id}-{name}-changelog",
        partitions=partitions,
        key_serializer="utf8",
        value_serializer=value_serializer,
        compacting=True,
        deleting=False,
        acks=False,
        internal=True,
    )
    table: Table = app.Table(  # type: ignore[assignment]
        name, partitions=partitions, changelog_topic=changelog, recovery_buffer_size=10_000, help=help
    )
    table.key_serializer = "utf8"
    table.value_serializer = value_serializer
    return table, BulkTableWriter(table, encode_key=encode_key, encode_value=encode_value)
