"""The Redis read model: each user's segments, cluster and intent score, for services that do not ask the workers.

Key schema (``<app id>`` is ``NUDGE_APP_ID``, ``nudge`` by default)::

    <app id>:user:<user id>   HASH
        segments      JSON array of segment names, sorted, e.g. ["cart_waiting"]
        cluster       behavioural cluster number ("" until assigned)
        intent        purchase-intent score in [0, 1], 3 decimals ("" until scored)
        intent_model  the model version that produced it, e.g. "p3.v1042"
        updated_ms    event time of the change

Each key expires ``NUDGE_READ_MODEL_TTL_S`` after its last write. Writes happen when the public part of a user's
insight changes; they are coalesced (latest value per user) and sent in one pipeline per flush. The read model is a
projection: if Redis is down, the pending writes are kept and retried; if a worker dies, its successor rewrites the
users of the partitions it takes over.
"""

from __future__ import annotations

import logging
import time

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.keys import key_name
from models.insight import Insight
from ws.delivery import inbox_key, presence_key

log = logging.getLogger(__name__)
MAX_PENDING_USERS = 200_000


def user_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:user:{user_id}"


def fields(insight: Insight) -> dict[str, str | int]:
    return {
        "segments": orjson.dumps(list(insight.segments)).decode(),
        "cluster": "" if insight.cluster is None else insight.cluster,
        "intent": "" if insight.intent is None else f"{insight.intent:.3f}",
        "intent_model": insight.model_version,
        "updated_ms": insight.as_of_ms,
    }


class ReadModel:
    def __init__(self, redis: Redis, *, prefix: str, ttl_s: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl_s = ttl_s
        #: The latest insight per user, or ``None``: the user was erased, delete their keys.
        self._pending: dict[str, Insight | None] = {}
        self._warned_at = 0.0
        self.written = 0

    def update(self, user_id: str, insight: Insight) -> None:
        """Queue ``insight`` as the user's latest; call :meth:`flush` to send."""
        if len(self._pending) >= MAX_PENDING_USERS and user_id not in self._pending:
            return  # Redis has been down for long: the next change or a takeover rewrites this user
        self._pending[user_id] = insight

    def forget(self, user_id: str) -> None:
        """Queue the deletion of everything Redis holds for the user: read model, websocket inbox, presence and the
        key of their personal fields (crypto-shredding, see :mod:`app.pii`)."""
        self._pending[user_id] = None

    async def flush(self) -> int:
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        pipe = self._redis.pipeline(transaction=False)
        for user_id, insight in batch.items():
            key = user_key(self._prefix, user_id)
            if insight is None:
                personal = (inbox_key(self._prefix, user_id), presence_key(self._prefix, user_id))
                # The encryption key last: once it is gone, every copy of the user's personal fields is unreadable.
                pipe.delete(key, *personal, key_name(self._prefix, user_id))
                continue
            pipe.hset(key, mapping=fields(insight))  # type: ignore[arg-type]
            pipe.expire(key, self._ttl_s)
        try:
            await pipe.execute()
        except (RedisError, OSError) as error:
            for user_id, insight in batch.items():
                self._pending.setdefault(user_id, insight)
            if time.monotonic() - self._warned_at > 10:
                self._warned_at = time.monotonic()
                log.warning("Redis read model: %d users not written, retrying: %r", len(self._pending), error)
            return 0
        self.written += len(batch)
        return len(batch)
