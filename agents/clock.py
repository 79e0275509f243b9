"""Fire due deadlines on the wall clock: labels whose horizon passed, segments that change with time alone.

The ingest agent fires them too, after each record (that is all the event clock needs); this timer covers quiet
partitions when live. It also notices a rebalance before the first record arrives, so a partition taken over from a
crashed worker has its deadlines rebuilt and its models loaded even if no new event comes.
"""

from __future__ import annotations

from typing import cast

from faust.tables.manager import TableManager

from agents.ingest import pipeline, processing
from app.main import app

TICK_S = 0.5


@app.timer(TICK_S, name="fire_due_deadlines")
async def fire_due_deadlines() -> None:
    if app.rebalancing or not cast(TableManager, app.tables).recovery.completed.is_set():
        return
    async with processing:
        pipeline.sync_assignment()
        for partition in pipeline.held:
            await pipeline.fire_due(partition)
        await pipeline.flush()
