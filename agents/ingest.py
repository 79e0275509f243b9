"""The ingest agent: every record on ``nudge.events``, from any producer, into live profiles, scores and segments.

Per record: validate and sort its events (:func:`app.records.split_record`), fold, score and segment each user's
events once (:class:`app.pipeline.Pipeline`), write every touched profile and insight once, send rejects to the
dead-letter topic and forward events that belong to another partition. Records are processed strictly in offset
order per partition (:mod:`app.offsets`). Nothing here raises on input: a bad record costs a DLQ entry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.asyncio import Redis

from app.deadlines import PartitionClocks
from app.learning import Learning
from app.main import app, audit_topic, dlq_topic, events_topic, messages_topic, metrics, segments_topic, settings
from app.offsets import OffsetTracker, RangeReader, Verdict
from app.pipeline import Pipeline
from app.read_model import ReadModel
from app.records import split_record
from app.rules import Rules
from app.stats import ingest_stats
from tables.aliases import alias_writer, aliases
from tables.erasures import erasure_writer, erasures
from tables.insights import insight_writer, insights
from tables.messages import message_writer, messages
from tables.models import model_snapshots
from tables.profiles import profile_writer, profiles

log = logging.getLogger(__name__)

#: Processed source offsets; committed by ``agents/commit.py``.
offsets = OffsetTracker()
#: Reads what Faust's consumer skipped or stalled on (holes, ``agents/catch_up.py``).
direct_reader = RangeReader(settings.bootstrap_servers)
#: Held while a record is checked and processed: the agent and ``agents/catch_up.py`` both process records.
processing = asyncio.Lock()
#: Rule files in service; ``agents/reload.py`` reloads them when they change.
rules = Rules(
    settings.segments_file, settings.content_file, settings.triggers_file, default_consent=settings.default_consent
)
assert settings.redis_url is not None
read_model = ReadModel(Redis.from_url(settings.redis_url), prefix=settings.app_id, ttl_s=settings.read_model_ttl_s)
pipeline = Pipeline(
    app=app,
    events_topic=events_topic,
    segments_topic=segments_topic,
    messages_topic=messages_topic,
    messages=messages,
    message_writer=message_writer,
    profiles=profiles,
    profile_writer=profile_writer,
    insights=insights,
    insight_writer=insight_writer,
    model_snapshots=model_snapshots,
    aliases=aliases,
    alias_writer=alias_writer,
    erasures=erasures,
    erasure_writer=erasure_writer,
    audit_topic=audit_topic,
    secret=settings.secret.encode(),
    learning=Learning(kind=settings.intent_model, secret=settings.secret.encode()),  # type: ignore[arg-type]
    rules=rules,
    read_model=read_model,
    clocks=PartitionClocks(settings.clock),
    partitions=settings.partitions,
    horizon_ms=settings.label_horizon_ms,
    metrics=metrics,
)


@app.agent(events_topic, name="ingest")
async def ingest(stream: Any) -> None:
    """Process each record once, in offset order per partition, filling any hole the consumer left."""
    generation = None
    async for event in stream.events():
        message = event.message
        if app.consumer_generation_id != generation:
            generation = app.consumer_generation_id
            restart = restart_offsets()
            offsets.reset(restart)
            log.info("generation %s: %s resumes at committed offsets %s", generation, message.topic, restart)
        async with processing:
            verdict = offsets.check(message.partition, message.offset)
            if verdict is Verdict.ALREADY_DONE:
                continue
            if verdict is Verdict.HOLE:
                start = offsets.next_offset(message.partition)
                log.warning("%s/%d: records %d..%d skipped by the consumer; reading them directly",
                            message.topic, message.partition, start, message.offset - 1)  # fmt: skip
                await read_directly(message.topic, message.partition, start, message.offset)
            stamp = None if message.timestamp is None else round(message.timestamp * 1000)  # Faust: seconds
            await _process(message.topic, message.partition, message.offset, message.key, message.value, stamp)


def restart_offsets() -> dict[int, int]:
    """Where the consumer restarted each held ``nudge.events`` partition after the last assignment.

    Faust seeks every assigned partition to its committed offset before streams resume, and keeps what it read in
    ``_committed_offset``; a partition never committed (``None``) starts wherever the reset policy says.
    """
    topic = events_topic.get_topic_name()
    assigned = app.consumer.assignment()
    committed = app.consumer._committed_offset  # type: ignore[attr-defined]
    return {tp.partition: o for tp, o in committed.items() if tp.topic == topic and tp in assigned and o is not None}


async def read_directly(topic: str, partition: int, start: int, end: int) -> int:
    """Read records ``start..end-1`` with a consumer of our own and process them; call with ``processing`` held."""
    records = await direct_reader.read(topic, partition, start, end)
    if len(records) != end - start:
        log.error("%s/%d: only %d of records %d..%d exist", topic, partition, len(records), start, end - 1)
    for record in records:
        if offsets.check(partition, record.offset) is not Verdict.ALREADY_DONE:
            await _process(topic, partition, record.offset, record.key, record.value, record.timestamp)
    return len(records)


async def _stop_direct_reader(*_: Any, **__: Any) -> None:
    await direct_reader.stop()


app.on_before_shutdown.connect(_stop_direct_reader)


async def _process(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, record_ms: int | None
) -> None:
    # "Now" for the record's events is when it was produced: an event sent without a timestamp gets the same one
    # when the record is processed again after a crash, and so do the decisions it causes (their ids include it).
    # A record stamped in the future by its producer counts as produced now.
    now_ms = int(time.time() * 1000)
    if record_ms is not None and 0 < record_ms < now_ms:
        now_ms = record_ms
    secret = settings.secret.encode()
    plan = split_record(value, partition=partition, partitions=settings.partitions, now_ms=now_ms, secret=secret)
    folded, forwarded, refused = await pipeline.process(
        plan.by_user, partition=partition, offset=offset, merges=plan.merges, erasures=plan.erasures
    )
    await pipeline.flush()
    rejects = plan.rejects + refused
    if rejects:
        source = f"{topic}/{partition}/{offset}".encode()
        for reject in rejects:
            metrics.rejected("ingest", reject.reason, reject.events)
            headers = {"nudge-reason": reject.reason.encode(), "nudge-source": source}
            await dlq_topic.send(key=key, value=reject.original, headers=headers)
    for user_id, raw in plan.misrouted:
        await events_topic.send(key=user_id.encode(), value=raw)
    offsets.processed(partition, offset)
    events = plan.accepted + plan.rejected + len(plan.misrouted)
    metrics.events_in_topic.inc(events)
    ingest_stats.add(
        partition=partition,
        offset=offset,
        events=events,
        folded=folded,
        rejected=plan.rejected + sum(reject.events for reject in refused),
        forwarded=len(plan.misrouted) + forwarded,
    )
