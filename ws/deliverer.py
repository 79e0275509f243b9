"""From ``nudge.messages`` to the users' inboxes and the gateway nodes holding their sockets.

Every gateway runs one :class:`Deliverer`; they share one consumer group (``<app id>.gateway``), so each partition of
``nudge.messages`` is delivered by exactly one gateway at a time, whichever node holds the user's sockets. For each
batch of records it writes the inboxes and publishes to the nodes (:func:`ws.delivery.deliver`), and only then
commits the batch's offsets. A crash in between redelivers the batch: at least once, and the hub and the browser SDK
drop repeats by message id. If Redis is away it retries the same batch with backoff instead of moving on.

Suppressed decisions (holdout, consent, cap, cooldown) are on the topic for the record and are not pushed. A
``consent_withdrawn`` record takes back the user's messages of those purposes: those not shown yet, in the batch
(:func:`ws.delivery.apply_withdrawals`) and in the inbox, and those on screen, through the nodes holding the user's
sockets (:func:`ws.delivery.withdraw`). A decision
older than the inbox TTL is not pushed either: the shopper has long moved on. Records that are not decision records
are logged and skipped; they cannot stop delivery for everyone else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import IllegalStateError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.metrics import consumer_lag
from app.settings import Settings
from app.tansu_compat import FETCH_MAX_WAIT_MS
from ws import delivery

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0


class Deliverer:
    """Consumes ``nudge.messages`` and delivers what was sent. :meth:`start`, then :meth:`run` until cancelled."""

    def __init__(self, settings: Settings, redis: Redis, *, inbox_ttl_s: int = delivery.DEFAULT_INBOX_TTL_S) -> None:
        self.settings = settings
        self.redis = redis
        self.inbox_ttl_s = inbox_ttl_s
        self.counts = {
            "delivered": 0,
            "published": 0,
            "batches": 0,
            "suppressed": 0,
            "stale": 0,
            "malformed": 0,
            "withdrawn": 0,
        }
        self._consumer = AIOKafkaConsumer(
            settings.messages_topic,
            bootstrap_servers=settings.bootstrap_servers,
            group_id=f"{settings.app_id}.gateway",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # A push is latency-bound: ask the broker to answer as soon as there is anything, or after 10 ms.
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )
        #: Partition -> the offset after the last batch delivered (or skipped); the consumer's position then.
        self._delivered_to: dict[int, int] = {}

    async def start(self) -> None:
        await self._consumer.start()

    @property
    def partitions(self) -> int:
        """How many partitions of ``nudge.messages`` this deliverer holds now."""
        return len(self._consumer.assignment())

    def lag(self) -> dict[int, int]:
        """Records not delivered yet, per partition held: what a stuck Redis or a slow gateway leaves waiting."""
        highwaters = {tp.partition: self._consumer.highwater(tp) for tp in self._consumer.assignment()}
        return consumer_lag(highwaters, self._delivered_to)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100, max_records=1_000)
            decoded: list[delivery.Outgoing | delivery.Withdrawal] = []
            oldest_ms = int(time.time() * 1000) - self.inbox_ttl_s * 1000
            for records in batches.values():
                for record in records:
                    message = self._decode(record.value or b"", record.topic, record.partition, record.offset)
                    if message is None:
                        continue
                    if isinstance(message, delivery.Outgoing) and message.at_ms < oldest_ms:
                        self.counts["stale"] += 1
                        continue
                    decoded.append(message)
            messages, withdrawals = delivery.apply_withdrawals(decoded)
            self.counts["withdrawn"] += sum(isinstance(m, delivery.Outgoing) for m in decoded) - len(messages)
            if withdrawals:
                await self._retrying(self._withdraw, withdrawals)
            if messages:
                await self._retrying(self._deliver, messages)
            if batches:
                await self._consumer.commit()
            await self._note_positions()

    async def _note_positions(self) -> None:
        """After a batch is delivered (or none came), the consumer's positions are what has been delivered."""
        for tp in self._consumer.assignment():
            try:
                self._delivered_to[tp.partition] = await self._consumer.position(tp)
            except IllegalStateError:  # revoked meanwhile
                self._delivered_to.pop(tp.partition, None)

    def _decode(
        self, raw: bytes, topic: str, partition: int, offset: int
    ) -> delivery.Outgoing | delivery.Withdrawal | None:
        try:
            message = delivery.outgoing(raw)
        except ValueError as error:
            self.counts["malformed"] += 1
            log.warning("skipping %s[%d]@%d: not a decision record: %s", topic, partition, offset, error)
            return None
        if message is None:
            self.counts["suppressed"] += 1
        return message

    async def _retrying(self, action: Callable[[Sequence[Any]], Awaitable[None]], items: Sequence[Any]) -> None:
        """Carry out ``action`` on the batch's items, retrying with backoff while Redis is away."""
        backoff = 0.1
        while True:
            try:
                await action(items)
                return
            except (RedisError, OSError) as error:
                log.warning(
                    "%s of %d records failed, retrying in %.1f s: %s", action.__name__, len(items), backoff, error
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _withdraw(self, withdrawals: Sequence[delivery.Withdrawal]) -> None:
        self.counts["withdrawn"] += await delivery.withdraw(self.redis, self.settings.app_id, withdrawals)

    async def _deliver(self, messages: Sequence[delivery.Outgoing]) -> None:
        prefix, ttl = self.settings.app_id, self.inbox_ttl_s
        self.counts["published"] += await delivery.deliver(self.redis, prefix, messages, inbox_ttl_s=ttl)
        self.counts["delivered"] += len(messages)
        self.counts["batches"] += 1
