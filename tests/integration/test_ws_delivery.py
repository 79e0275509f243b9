"""The Redis side of delivery against a real Redis: inbox, presence, and publishing to the node holding a socket."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
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
    skipped: Counter[str] = Counter()
    with caplog.at_level(logging.WARNING, logger="ws.delivery"):
        assert await inbox(client, prefix, "ann", skipped=skipped) == [("m1", {}), ("m2", {"title": "second"})]
    assert skipped == {"not_json": 1, "shape": 3}
    # One warning per skip, without the user id.
    assert sorted(record.getMessage() for record in caplog.records) == [
        "skipped an unreadable inbox entry of a user: not_json",
        *["skipped an unreadable inbox entry of a user: shape"] * 3,
    ]
    assert await inbox(client, prefix, "ann", skipped=skipped) == [("m1", {}), ("m2", {"title": "second"})]
    assert skipped == {"not_json": 2, "shape": 6}  # still there: skipped on every read until the inbox expires


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


async def test_a_withdrawal_is_published_to_the_nodes_holding_that_users_sockets_only(
    redis: tuple[Redis, str],
) -> None:
    client, prefix = redis
    pubsub = client.pubsub()
    await pubsub.subscribe(channel(prefix, "node-a"), channel(prefix, "node-b"))
    await present(client, prefix, ["ann"], "node-a", ttl_s=30)
    await present(client, prefix, ["bob"], "node-b", ttl_s=30)
    await deliver(client, prefix, [Outgoing("ann", "offer", {"title": "offer"}, 1, "marketing")])

    assert await withdraw(client, prefix, [Withdrawal("ann", frozenset({"personalization", "marketing"}))]) == 1

    async def publishes(count: int) -> list[tuple[str, dict[str, Any]]]:
        received = []
        while len(received) < count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                received.append((message["channel"].decode().rsplit(":", 1)[1], orjson.loads(message["data"])))
        return received

    # The offer's publish, then the withdrawal; a ping on node-b's channel marks the end of what came before it.
    await client.publish(channel(prefix, "node-b"), b"{}")
    assert await asyncio.wait_for(publishes(3), timeout=5) == [
        ("node-a", {"user": "ann", "id": "offer", "payload": {"title": "offer"}}),
        ("node-a", {"type": "withdrawn", "user": "ann", "purposes": ["marketing", "personalization"]}),
        ("node-b", {}),
    ]
    await pubsub.aclose()


async def test_a_withdrawal_batch_takes_two_round_trips_whatever_its_size(
    redis: tuple[Redis, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, prefix = redis
    users = [f"user-{n}" for n in range(5)]
    messages = [
        Outgoing(user, f"{user}-{n}", {}, n, "marketing" if n else "analytics") for user in users for n in (0, 1, 2)
    ]
    await deliver(client, prefix, messages)
    # Every command sent alone is a write of its own on the connection; a pipeline is one write for all of them.
    writes = 0
    send_packed_command = client.connection_pool.connection_class.send_packed_command

    async def counted(connection: Any, command: Any, check_health: bool = True) -> None:
        nonlocal writes
        writes += 1
        await send_packed_command(connection, command, check_health)

    monkeypatch.setattr(client.connection_pool.connection_class, "send_packed_command", counted)
    withdrawals = [Withdrawal(user, frozenset({"marketing"})) for user in users]
    assert await withdraw(client, prefix, withdrawals) == 10
    assert writes == 2  # read the inboxes; remove and read presence (no one online: nothing to publish)
    monkeypatch.undo()
    for user in users:
        assert await inbox(client, prefix, user) == [(f"{user}-0", {})]
