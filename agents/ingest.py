"""The ingest agent: every record on ``nudge.events``, from any producer, into live profiles.

Per record: validate and sort its events (:func:`app.records.split_record`), fold each user's events once
(:func:`tables.profile.apply_record`), write every touched profile once, send rejects to the dead-letter topic and
forward events that belong to another partition. Nothing here raises on input: a bad record costs a DLQ entry.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from app.main import app, dlq_topic, events_topic, settings
from app.offsets import OffsetTracker, Verdict
from app.records import split_record
from app.stats import ingest_stats
from tables.profile import apply_record
from tables.profiles import profile_writer, profiles

log = logging.getLogger(__name__)

#: Processed source offsets; committed by ``agents/commit.py``.
offsets = OffsetTracker()


@app.agent(events_topic, name="ingest")
async def ingest(stream: Any) -> None:
    """Fold each record's events into the profiles table, strictly in offset order per partition (app/offsets.py)."""
    generation = None
    async for event in stream.events():
        message = event.message
        partition, offset = message.partition, message.offset
        if app.consumer_generation_id != generation:
            generation = app.consumer_generation_id
            offsets.reset()
        verdict = offsets.check(partition, offset)
        if verdict is Verdict.REWIND:
            expected = offsets.next_offset(partition)
            log.warning(
                "records %d..%d of %s/%d were skipped by the consumer; rewinding to %d",
                expected,
                offset - 1,
                message.topic,
                partition,
                expected,
            )
            await app.consumer.seek(message.tp, expected)
            continue
        if verdict is not Verdict.PROCESS:
            continue
        plan = split_record(
            message.value, partition=partition, partitions=settings.partitions, now_ms=int(time.time() * 1000)
        )
        folded = 0
        for user_id, user_events in plan.by_user.items():
            updated = apply_record(profiles.data.get(user_id), user_id, user_events, partition=partition, offset=offset)
            if updated is not None:
                profile_writer.put(user_id, updated, partition=partition)
                folded += len(user_events)
        await profile_writer.flush()
        for reject in plan.rejects:
            await dlq_topic.send(
                key=message.key,
                value=reject.original,
                headers={
                    "nudge-reason": reject.reason.encode(),
                    "nudge-source": f"{message.topic}/{partition}/{offset}".encode(),
                },
            )
        for user_id, raw in plan.misrouted:
            await events_topic.send(key=user_id.encode(), value=raw)
        offsets.processed(partition, offset)
        ingest_stats.add(
            partition=partition,
            offset=offset,
            events=plan.accepted + len(plan.rejects) + len(plan.misrouted),
            folded=folded,
            rejected=len(plan.rejects),
            forwarded=len(plan.misrouted),
        )
