"""Per-user encryption keys in Redis: created on a user's first personal field, destroyed on erasure.

Key schema: ``<app id>:key:<user id>`` STRING, 32 random bytes, no expiry. Every collector (on any worker) and every
gateway encrypts with the same key, so it lives in the one store they share; run that Redis with persistence
(AOF): losing a key makes that user's personal fields unreadable, which is safe but loses data.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis

from app.pii import new_key


def key_name(prefix: str, user_id: str) -> str:
    return f"{prefix}:key:{user_id}"


class KeyStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    async def keys_for(self, user_ids: Iterable[str], *, create: bool) -> dict[str, bytes | None]:
        """Each user's key; with ``create``, a missing one is made (first writer wins, so all writers agree)."""
        users = list(dict.fromkeys(user_ids))
        if not users:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id in users:
                if create:
                    pipe.set(key_name(self._prefix, user_id), new_key(), nx=True)
                pipe.get(key_name(self._prefix, user_id))
            replies = await pipe.execute()
        values = replies[1::2] if create else replies
        return dict(zip(users, values, strict=True))

    async def destroy(self, user_id: str) -> bool:
        """Delete the user's key: every copy of their personal fields becomes unreadable. True if one existed."""
        return bool(await self._redis.delete(key_name(self._prefix, user_id)))
