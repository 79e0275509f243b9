"""Commit ``nudge.events`` offsets ourselves: only what was processed without a hole, after the writes it caused.

Faust's own acking is off for the events topic (see :mod:`app.offsets` for why). Every second this timer waits until
the producer has delivered everything queued so far (changelog records, including the staged ones of
:class:`tables.changelog.StagedWrites`, DLQ records, forwards, and the snapshots of models that learned since the
last commit), then commits, per partition, the offset after the last record processed contiguously -- quix-streams'
checkpoint order.

The model snapshots are also written when the group takes partitions away (a rebalance) and before a clean shutdown
(SIGTERM): otherwise the next owner would continue the models from the previous snapshot while skipping, as already
folded, the records that taught them the rest (measured by ``nudge faults --only worker-sigterm-rebalance``).
"""

from __future__ import annotations

import logging
from typing import Any

from faust.types import TP

from agents.ingest import offsets, pipeline, processing
from app.main import app, events_topic
from tables.models import snapshot_writer

log = logging.getLogger(__name__)
COMMIT_INTERVAL_S = 1.0


@app.timer(COMMIT_INTERVAL_S, name="commit_events_offsets")
async def commit_events_offsets() -> None:
    pending = offsets.committable()
    snapshotted = await _snapshot_models()
    if not pending and not snapshotted:
        return
    await pipeline.settled()
    await app.producer.flush()
    pipeline.learning.delivered(snapshotted)
    if not pending:
        return
    topic = events_topic.get_topic_name()
    assigned = app.consumer.assignment()
    to_commit = {TP(topic, p): o for p, o in pending.items() if TP(topic, p) in assigned}
    if not to_commit:
        return
    try:
        committed = await app.consumer._commit(to_commit)  # type: ignore[attr-defined]
    except Exception as error:  # a rebalance may revoke partitions mid-commit: the next owner re-reads, idempotently
        log.warning("commit of %s failed: %r", to_commit, error)
        return
    if committed:
        offsets.mark_committed({tp.partition: o for tp, o in to_commit.items()})


async def _snapshot_models() -> dict[int, int]:
    """Queue a snapshot of each held partition's models that learned since the last; ``partition -> learned``."""
    async with processing:
        held = pipeline.held
        snapshots = {p: s for p, s in pipeline.learning.snapshots().items() if p in held}
        for partition, (_, snapshot) in snapshots.items():
            snapshot_writer.put(str(partition), snapshot, partition=partition)
        await snapshot_writer.flush()
    return {p: learned for p, (learned, _) in snapshots.items()}


async def _deliver_snapshots(*_: Any, **__: Any) -> None:
    """Before the partitions move (a rebalance) or the worker stops: snapshot the models and wait for delivery.

    No offset commit here: the next owner re-reads the uncommitted records and skips them as folded.
    """
    try:
        snapshotted = await _snapshot_models()
        await pipeline.settled()  # the table writes too: a late write would land after the next owner's
        await app.producer.flush()
        pipeline.learning.delivered(snapshotted)
    except Exception as error:  # then only the learning since the last snapshot is lost, as after a crash
        log.warning("model snapshot before a rebalance or shutdown failed: %r", error)


app.on_partitions_revoked.connect(_deliver_snapshots)
app.on_before_shutdown.connect(_deliver_snapshots)
