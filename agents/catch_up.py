"""Catch up a partition that Faust's consumer stopped delivering.

Measured here: after a worker restart with a backlog, now and then one partition's records stopped reaching the
agent (no error, no log) while the consumer had already seen that partition's high watermark. Every few seconds
this timer compares each partition's processed position with that high watermark; a partition that is behind and
made no progress for ``STALLED_AFTER_S`` is read directly (``agents.ingest.read_directly``). When the agent sees
those records later, the offset tracker marks them as already done. A worker that keeps up never reads anything here.

The clock starts when a partition falls behind, not when it went quiet: a partition idle for an hour that receives a
record is not read directly at the next tick. Why 2 s and not longer: when the broker is the bottleneck, Faust's
consumer leaves partitions waiting more often, and reading them directly keeps them moving (measured with 10 s:
event-to-browser p50 9.6 s against 3.8 s after 4.5 minutes of the same soak). It costs the broker a second read of
those records; in ``nudge bench``, where a third of the records were read here, a 30 s threshold gave the same
throughput (ratio 1.40 against 1.39-1.43)."""

from __future__ import annotations

import asyncio
import logging

from faust.types import TP

from agents.ingest import offsets, processing, read_directly
from app.main import app, events_topic

log = logging.getLogger(__name__)
CHECK_EVERY_S = 2.0
STALLED_AFTER_S = 2.0
MAX_RECORDS_PER_TICK = 2_000

#: partition -> (processed position, loop time it was first seen there)
_unmoved_since: dict[int, tuple[int, float]] = {}


@app.timer(CHECK_EVERY_S, name="catch_up_stalled_partitions")
async def catch_up_stalled_partitions() -> None:
    if app.rebalancing:
        return
    topic = events_topic.get_topic_name()
    now = asyncio.get_running_loop().time()
    assigned = app.consumer.assignment()
    for partition, position in list(offsets.expected.items()):
        tp = TP(topic, partition)
        highwater = app.consumer.highwater(tp) if tp in assigned else None
        previous = _unmoved_since.get(partition)
        if highwater is None or highwater <= position or previous is None or previous[0] != position:
            _unmoved_since[partition] = (position, now)  # caught up or moving: the stall clock starts over
            continue
        if now - previous[1] < STALLED_AFTER_S:
            continue
        end = min(highwater, position + MAX_RECORDS_PER_TICK)
        log.warning(
            "partition %s/%d stalled at %d (high watermark %d); reading directly", topic, partition, position, highwater
        )
        async with processing:
            if not app.rebalancing and offsets.expected.get(partition) == position:
                await read_directly(topic, partition, position, end)
