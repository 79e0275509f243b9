"""One topic's records leave the producer at once; the other topics' keep lingering (app.send_now)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from app.devstack import EmbeddedBroker, create_topic
from app.send_now import send_now

pytestmark = pytest.mark.integration

LINGER_MS = 6_000


async def test_send_now_ends_the_linger_of_one_topic_and_leaves_the_others_batching() -> None:
    broker = EmbeddedBroker()
    broker.start()
    try:
        await create_topic(broker.bootstrap, "messages", 2)
        await create_topic(broker.bootstrap, "changelog", 2)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=LINGER_MS)
        await producer.start()
        try:
            profile = await producer.send("changelog", b"profile", partition=0)
            first = await producer.send("messages", b"pop-up", partition=0)
            other = await producer.send("messages", b"pop-up", partition=1)
            send_now(producer, "messages")
            # Well inside the linger: without send_now these would wait the whole 6 s.
            await asyncio.wait_for(asyncio.gather(first, other), timeout=LINGER_MS / 2000)
            assert not profile.done(), "the changelog batch left without its linger"

            # A later record opens a new batch; it too leaves at the next call.
            second = await producer.send("messages", b"next", partition=0)
            send_now(producer, "messages")
            assert (await asyncio.wait_for(second, timeout=LINGER_MS / 2000)).offset == 1
            assert not profile.done()

            send_now(producer, "changelog")
            await asyncio.wait_for(profile, timeout=LINGER_MS / 2000)
        finally:
            await producer.stop()
    finally:
        broker.stop()
