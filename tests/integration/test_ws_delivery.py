"""The Redis side of delivery against a real Redis: inbox, presence, and publishing to the node holding a socket."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from app.devstack import EmbeddedRedis
from ws.delivery import Outgoing, Withdrawal, absent, acknowledge, channel, deliver, inbox, inbox_key, present, withdraw

pytestmark = pytest.mark.integration


@pytest.fixture
async def redis() -> AsyncIterator[tuple[Redis, str]]:
    server = EmbeddedRedis()
    server.start()
    client = Redis.from_url(server.url)
    prefix = f"test-{secrets.token_hex(4)}"  # the machine's Redis is shared: keys of this test only
    try:
        yield client, prefix
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        server.stop()


async def test_an_offline_users_messages_wait_in_the_inbox_until_acknowledged(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    second, first = Outgoing("ann", "m2", {"title": "second"}, 2), Outgoing("ann", "m1", {"title": "first"}, 1)
    assert await deliver(client, prefix, [second, first], inbox_ttl_s=600) == 0
    assert await deliver(client, prefix, [first], inbox_ttl_s=600) == 0  # again
    assert await inbox(client, prefix, "ann") == [("m1", {"title": "first"}), ("m2", {"title": "second"})]
    assert 0 < await client.ttl(inbox_key(prefix, "ann")) <= 600
    assert await inbox(client, prefix, "bob") == []
    await acknowledge(client, prefix, "ann", "m1")
    assert await inbox(client, prefix, "ann") == [("m2", {"title": "second"})]


async def test_a_message_is_published_only_to_the_nodes_holding_the_users_sockets(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    received: dict[str, list[dict[str, Any]]] = {"node-a": [], "node-b": []}
    pubsub = client.pubsub()
    await pubsub.subscribe(channel(prefix, "node-a"), channel(prefix, "node-b"))
    await present(client, prefix, ["ann"], "node-a", ttl_s=30)
    await present(client, prefix, ["bob"], "node-b", ttl_s=30)

    assert await deliver(client, prefix, [Outgoing("ann", "m1", {"title": "for ann"}, 1)]) == 1

    async def next_message() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                node = message["channel"].decode().rsplit(":", 1)[1]
                received[node].append(orjson.loads(message["data"]))
                return

    await asyncio.wait_for(next_message(), timeout=5)
    assert received == {"node-a": [{"user": "ann", "id": "m1", "payload": {"title": "for ann"}}], "node-b": []}

    await absent(client, prefix, "ann", "node-a")
    assert await deliver(client, prefix, [Outgoing("ann", "m2", {"title": "later"}, 2)]) == 0
    assert [m for m, _ in await inbox(client, prefix, "ann")] == ["m1", "m2"]
    await pubsub.aclose()


async def test_damaged_inbox_entries_are_skipped_and_the_rest_delivered(
    redis: tuple[Redis, str], caplog: pytest.LogCaptureFixture
) -> None:
    client, prefix = redis
    await deliver(client, prefix, [Outgoing("ann", "m2", {"title": "second"}, 2), Outgoing("ann", "m1", {}, 1)])
    damaged = {
        "bad-1": "not json",
        "bad-2": '{"id": "bad-2"}',
        "bad-3": '{"id": 3, "payload": {}, "at_ms": 3}',
        "x": "[]",
    }
    await client.hset(inbox_key(prefix, "ann"), mapping=damaged)
    with caplog.at_level(logging.WARNING, logger="ws.delivery"):
        assert await inbox(client, prefix, "ann") == [("m1", {}), ("m2", {"title": "second"})]
    [warning] = caplog.records
    assert warning.getMessage() == "skipped 4 unreadable inbox entries of a user"


async def test_a_withdrawal_empties_the_inbox_of_that_purpose_only(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    await deliver(
        client,
        prefix,
        [
            Outgoing("ann", "offer", {"title": "offer"}, 1, "marketing"),
            Outgoing("ann", "tip", {"title": "tip"}, 2, "personalization"),
            Outgoing("bob", "offer-b", {"title": "offer"}, 3, "marketing"),
        ],
    )
    assert await withdraw(client, prefix, [Withdrawal("ann", frozenset({"marketing"}))]) == 1
    assert await inbox(client, prefix, "ann") == [("tip", {"title": "tip"})]
    assert await inbox(client, prefix, "bob") == [("offer-b", {"title": "offer"})]
    assert await withdraw(client, prefix, [Withdrawal("ann", frozenset({"marketing"}))]) == 0  # again: nothing
