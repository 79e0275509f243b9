"""Start-up check that the broker's topics match the settings, before Faust subscribes to them."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer

from app.settings import Settings, SettingsError


async def check_partitions(settings: Settings) -> None:
    """Raise :class:`SettingsError` if a Nudge topic exists with a partition count other than ``NUDGE_PARTITIONS``.

    Routing assumes every user-keyed topic has exactly that many partitions: with fewer, events forwarded to
    their user's partition would come back misrouted forever.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        topics = await consumer.topics()
        for topic in (settings.events_topic, settings.dlq_topic):
            if topic in topics:
                found = len(consumer.partitions_for_topic(topic) or ())
                if found != settings.partitions:
                    raise SettingsError(
                        f"topic {topic} has {found} partitions but NUDGE_PARTITIONS={settings.partitions}: "
                        "set NUDGE_PARTITIONS to match, or recreate the topic"
                    )
    finally:
        await consumer.stop()
