"""The Tansu compatibility layer: without it, the end offset Faust recovers tables up to is wrong."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.devstack import EmbeddedBroker, create_topic
from app.tansu_compat import true_end_offsets

pytestmark = pytest.mark.integration


async def test_true_end_offsets_counts_every_record_of_the_last_batch(tmp_path: object) -> None:
    broker = EmbeddedBroker()
    broker.start()
    try:
        await create_topic(broker.bootstrap, "changelog", 2)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        for first in (0, 7):  # two record batches on partition 0: offsets 0..6 and 7..11
            batch = producer.create_batch()
            for index in range(first, first + (7 if first == 0 else 5)):
                batch.append(key=b"k", value=str(index).encode(), timestamp=None)
            await (await producer.send_batch(batch, "changelog", partition=0))
        await producer.stop()

        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
        await consumer.start()
        written, empty = TopicPartition("changelog", 0), TopicPartition("changelog", 1)
        listed = await consumer.end_offsets([written, empty])
        await consumer.stop()

        # The gap this layer exists for: Tansu reports base offset of the last batch + 1.
        assert listed[written] == 8
        assert await true_end_offsets(broker.bootstrap, listed) == {written: 12, empty: 0}
    finally:
        broker.stop()
