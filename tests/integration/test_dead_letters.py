"""Bad input on the topic: every malformed record lands in the DLQ with a reason; valid traffic keeps flowing."""

from __future__ import annotations

import itertools
import time
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.devstack import DevStack
from app.events import iso_from_ms
from app.simulate import simulate_events
from tables.profile_view import profile_view
from tests.integration.conftest import expected_profiles, fetch_profiles, stats, wait_for

pytestmark = pytest.mark.integration

NOW_MS = int(time.time() * 1000)


def malformed_records() -> list[tuple[bytes, str]]:
    """1,000 records of ten kinds, each with a fragment of the reason ingest must give."""
    future = iso_from_ms(NOW_MS + 3 * 24 * 3600 * 1000)
    kinds: list[tuple[bytes, str]] = [
        (b"\x00\xffnot json", "not valid JSON"),
        (b"[1, 2, 3]", "not an array"),
        (b'"just a string"', "not a string"),
        (b'{"batch": {"type": "track"}}', "batch must be an array"),
        (orjson.dumps({"type": "track", "event": "E"}), "userId or anonymousId is required"),
        (orjson.dumps({"type": "track", "event": "E", "userId": ["x"]}), "userId must be a string"),
        (orjson.dumps({"type": "spam", "userId": "x"}), "type must be one of"),
        (orjson.dumps({"type": "track", "userId": "x", "event": "E", "properties": 7}), "properties must be"),
        (orjson.dumps({"type": "track", "userId": "x", "event": "E", "timestamp": future}), "24 h in the future"),
        (orjson.dumps({"type": "track", "userId": "x", "event": "E", "timestamp": "yesterday"}), "not an ISO-8601"),
    ]
    return [kinds[i % len(kinds)] for i in range(1_000)]


async def test_malformed_records_go_to_the_dlq_while_valid_ones_are_folded(stack: DevStack) -> None:
    valid = [e for e in simulate_events(users=300, events=5_000, seed=9, start_ms=NOW_MS - 3_600_000)]
    assert all(isinstance(e, dict) for e in valid)
    bad = malformed_records()
    producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap, linger_ms=5)
    await producer.start()
    try:
        # Interleave: five valid single-event records per bad one. Every tenth valid record is keyed by a session id,
        # as a foreign producer might do: ingest must forward it to its user's partition, not lose it.
        for index, (good, wrong) in enumerate(itertools.zip_longest(_chunks(valid, 5), bad)):
            for event in good or []:
                assert isinstance(event, dict)
                key = event["context"]["sessionId"] if index % 10 == 0 else _user(event)
                await producer.send("nudge.events", orjson.dumps(event), key=key.encode())
            if wrong is not None:
                await producer.send("nudge.events", wrong[0], key=b"junk")
        await producer.flush()
    finally:
        await producer.stop()

    async def all_accounted_for() -> bool:
        current = await stats(stack)
        return current["folded"] >= len(valid) and current["rejected"] >= len(bad)

    await wait_for(all_accounted_for, timeout=60, what="every valid event folded and every bad one rejected")
    totals = await stats(stack)
    assert totals["rejected"] == 1_000
    assert totals["folded"] == len(valid)
    assert totals["forwarded"] > 0

    dead = await _read_topic(stack.broker.bootstrap, "nudge.events.dlq", count=1_000)
    assert len(dead) == 1_000
    expected_reasons = {raw: reason for raw, reason in bad}
    for record in dead:
        headers = dict(record.headers)
        assert record.value in expected_reasons, record.value[:80]
        assert expected_reasons[record.value] in headers["nudge-reason"].decode()
        assert headers["nudge-source"].decode().startswith("nudge.events/")

    # Forwarded events join their user's partition behind later events, so compare what does not depend on order:
    # nothing valid was lost and nothing was counted twice.
    now_ms = int(time.time() * 1000)
    expected = expected_profiles(valid)  # type: ignore[arg-type]
    actual = await fetch_profiles(stack, expected)
    differing = [
        user
        for user, profile in expected.items()
        if _order_free(actual[user]) != _order_free(profile_view(profile, now_ms=now_ms))
    ]
    assert differing == []


def _order_free(view: dict[str, Any]) -> tuple[Any, ...]:
    return view["event_counts"], view["orders"]["count"], view["orders"]["revenue"], view["first_seen"]


def _user(event: dict[str, Any]) -> str:
    return str(event.get("userId") or event.get("anonymousId"))


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def _read_topic(bootstrap: str, topic: str, *, count: int, partitions_count: int = 8) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(partitions_count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + 30
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
        return records
    finally:
        await consumer.stop()
