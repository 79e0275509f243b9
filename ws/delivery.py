"""The Redis side of message delivery: per-user inbox, presence, and a pub/sub channel per gateway node.

Key schema (``<prefix>`` is ``NUDGE_APP_ID``)::

    <prefix>:inbox:<user id>      HASH  message id -> {"id", "payload", "at_ms"} (JSON); expires inbox_ttl_s after
                                        the latest message, so an offline user's messages do not live forever
    <prefix>:presence:<user id>   SET   ids of the gateway nodes holding a socket of the user; expires ttl_s after
                                        the node last refreshed it, so a crashed node drops out by itself
    <prefix>:node:<node id>       pub/sub channel the node subscribes to: {"user", "id", "payload"} (JSON)

:func:`deliver` writes the inbox first and publishes second: a browser that reconnects in between finds the message
in its inbox, and one that was connected gets it over the channel; either way the hub (:mod:`ws.protocol`) sends it
once per tab and the browser drops repeats by id. :func:`acknowledge` removes an acked message from the inbox.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

DEFAULT_INBOX_TTL_S = 86_400
DEFAULT_PRESENCE_TTL_S = 30


def inbox_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:inbox:{user_id}"


def presence_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:presence:{user_id}"


def channel(prefix: str, node_id: str) -> str:
    return f"{prefix}:node:{node_id}"


async def deliver(
    redis: Redis,
    prefix: str,
    user_id: str,
    message_id: str,
    payload: dict[str, Any],
    *,
    at_ms: int,
    inbox_ttl_s: int = DEFAULT_INBOX_TTL_S,
) -> int:
    """Keep the message in the user's inbox, then publish it to every node holding a socket of the user.

    Returns how many nodes it was published to (0: the user is offline; the inbox has it for their next visit).
    Idempotent per message id: a redelivery rewrites the same inbox entry and republishes.
    """
    key = inbox_key(prefix, user_id)
    entry = orjson.dumps({"id": message_id, "payload": payload, "at_ms": at_ms})
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, message_id, entry)
        pipe.expire(key, inbox_ttl_s)
        pipe.smembers(presence_key(prefix, user_id))
        *_, nodes = await pipe.execute()
    published = orjson.dumps({"user": user_id, "id": message_id, "payload": payload})
    for node in sorted(n.decode() if isinstance(n, bytes) else n for n in nodes):
        await redis.publish(channel(prefix, node), published)
    return len(nodes)


async def inbox(redis: Redis, prefix: str, user_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The user's unacknowledged messages, oldest first, as ``(message id, payload)``."""
    entries = [orjson.loads(raw) for raw in (await redis.hgetall(inbox_key(prefix, user_id))).values()]
    entries.sort(key=lambda entry: (entry["at_ms"], entry["id"]))
    return [(entry["id"], entry["payload"]) for entry in entries]


async def acknowledge(redis: Redis, prefix: str, user_id: str, message_id: str) -> None:
    await redis.hdel(inbox_key(prefix, user_id), message_id)


async def present(
    redis: Redis, prefix: str, user_id: str, node_id: str, *, ttl_s: int = DEFAULT_PRESENCE_TTL_S
) -> None:
    """Record that ``node_id`` holds a socket of the user; call again within ``ttl_s`` while it does."""
    key = presence_key(prefix, user_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.sadd(key, node_id)
        pipe.expire(key, ttl_s)
        await pipe.execute()


async def absent(redis: Redis, prefix: str, user_id: str, node_id: str) -> None:
    """The node's last socket of the user closed."""
    await redis.srem(presence_key(prefix, user_id), node_id)
