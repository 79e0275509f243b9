"""Catch up a partition that Faust's consumer stopped delivering.

Measured here: after a worker restart with a backlog, now and then one partition's records stopped reaching the
agent (no error, no log) while the consumer had already seen that partition's high watermark. Every few seconds
this timer compares each partition's processed position with that high watermark; a partition that is behind and
made no progress since the last tick is read directly (``agents.ingest.read_directly``). When the agent sees those
records later, the offset tracker marks them as already done. A healthy worker never reads anything here.

Nothing is read while the group rebalances: the partitions may be on their way to another worker, and what this one
processed after the revocation would be work its successor skips as done (measured by ``nudge faults --only
worker-sigterm-rebalance``: learning done after the revocation's model snapshot was lost).
"""

from __future__ import annotations

import logging

from faust.types import TP

from agents.ingest import offsets, processing, read_directly
from app.main import app, events_topic

log = logging.getLogger(__name__)
CHECK_EVERY_S = 2.0
MAX_RECORDS_PER_TICK = 2_000

_position_at_last_check: dict[int, int] = {}


@app.timer(CHECK_EVERY_S, name="catch_up_stalled_partitions")
async def catch_up_stalled_partitions() -> None:
    if app.rebalancing:
        return
    topic = events_topic.get_topic_name()
    for partition, position in list(offsets.expected.items()):
        previous = _position_at_last_check.get(partition)
        _position_at_last_check[partition] = position
        tp = TP(topic, partition)
        if position != previous or tp not in app.consumer.assignment():
            continue
        highwater = app.consumer.highwater(tp)
        if highwater is None or highwater <= position:
            continue
        end = min(highwater, position + MAX_RECORDS_PER_TICK)
        log.warning(
            "partition %s/%d stalled at %d (high watermark %d); reading directly", topic, partition, position, highwater
        )
        async with processing:
            if not app.rebalancing and offsets.expected.get(partition) == position:
                await read_directly(topic, partition, position, end)
