"""The per-user work of a worker: fold, score, segment, learn; and the state it keeps per partition.

The ingest agent hands each record's events here (:meth:`Pipeline.process`), the clock timer asks for due deadlines
to be fired (:meth:`Pipeline.fire_due`). The logic is in pure functions (:func:`tables.profile.record_steps`,
:func:`models.insight.on_event`, :func:`models.insight.on_clock`); this module carries out their effects: table
writes, learning on the partition's models, ``nudge.segments`` records, Redis read-model updates, deadlines.

Call everything here with ``agents.ingest.processing`` held: the agent and the timers share the tables.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from typing import Any, cast

import orjson
from faust.types import TP, TopicT
from faust.types.tables import TableT

from app.deadlines import Deadlines, PartitionClocks
from app.events import Event, iso_from_ms
from app.learning import Learning
from app.partitioning import partition_for
from app.read_model import ReadModel
from app.rules import Rules
from models.insight import Effect, Insight, SegmentChange, on_clock, on_event
from models.partition import PartitionModels
from models.triggers import Decision
from tables.changelog import BulkTableWriter
from tables.profile import record_steps

log = logging.getLogger(__name__)
#: Decision records kept per user in the ``messages`` table for the API; the topic keeps them all (by retention).
MAX_KEPT_MESSAGES = 50
MAX_ANONYMOUS_NAMES = 256
ASSIGNMENT_RECHECK_S = 1.0


class Pipeline:
    def __init__(
        self,
        *,
        app: Any,
        events_topic: TopicT,
        segments_topic: TopicT,
        messages_topic: TopicT,
        profiles: TableT,
        profile_writer: BulkTableWriter,
        insights: TableT,
        insight_writer: BulkTableWriter,
        model_snapshots: TableT,
        messages: TableT,
        message_writer: BulkTableWriter,
        learning: Learning,
        rules: Rules,
        read_model: ReadModel,
        clocks: PartitionClocks,
        partitions: int,
        horizon_ms: int,
    ) -> None:
        self.app = app
        self.events_topic = events_topic
        self.segments_topic = segments_topic
        self.messages_topic = messages_topic
        self.messages = messages
        self.message_writer = message_writer
        self.profiles = profiles
        self.profile_writer = profile_writer
        self.insights = insights
        self.insight_writer = insight_writer
        self.model_snapshots = model_snapshots
        self.learning = learning
        self.rules = rules
        self.read_model = read_model
        self.clocks = clocks
        self.partitions = partitions
        self.horizon_ms = horizon_ms
        self.deadlines = Deadlines()
        self._held: set[int] = set()
        self._synced: tuple[int | None, float] = (None, 0.0)
        self.segment_changes = 0
        self.decisions: dict[str, int] = {}
        #: Events of users without analytics consent, by event name: the only trace they leave.
        self.anonymous_counts: dict[str, int] = {}

    # -- partitions --------------------------------------------------------------------------------------------------

    def sync_assignment(self) -> None:
        """After a rebalance: release partitions now owned elsewhere, adopt the new ones (models, deadlines).

        Cheap to call per record: the assignment is read again only when the consumer generation changed or a
        second has passed (it costs 6% of the worker's time when read every record).
        """
        now = time.monotonic()
        generation = self.app.consumer_generation_id
        if generation == self._synced[0] and now - self._synced[1] < ASSIGNMENT_RECHECK_S:
            return
        self._synced = (generation, now)
        topic = self.events_topic.get_topic_name()
        assigned = {tp.partition for tp in cast(set[TP], self.app.consumer.assignment()) if tp.topic == topic}
        if assigned == self._held:
            return
        lost, gained = self._held - assigned, assigned - self._held
        self.learning.release(lost)
        for partition in lost:
            self.deadlines.drop(partition)
            self.clocks.drop(partition)
        self._adopt(gained)
        self._held = assigned
        log.info("partitions held: %s (gained %s, released %s)", sorted(assigned), sorted(gained), sorted(lost))

    def _adopt(self, partitions: set[int]) -> None:
        if not partitions:
            return
        for partition in partitions:
            self.learning.take(partition, self.model_snapshots.data.get(str(partition)))
        users = 0
        for user_id, insight in list(self.insights.data.items()):
            partition = partition_for(user_id, self.partitions)
            if partition not in partitions:
                continue
            users += 1
            self.deadlines.schedule(partition, user_id, insight.due_ms(self.horizon_ms))
            self.clocks.observe(partition, insight.as_of_ms)
            self.read_model.update(user_id, insight)
        log.info("adopted partitions %s: %d users, deadlines rebuilt", sorted(partitions), users)

    def models_for(self, partition: int) -> PartitionModels:
        models = self.learning.models.get(partition)
        if models is None:  # a record arrived before the assignment was seen
            models = self.learning.take(partition, self.model_snapshots.data.get(str(partition)))
        return models

    @property
    def held(self) -> set[int]:
        return set(self._held)

    # -- events and clock --------------------------------------------------------------------------------------------

    async def process(self, by_user: dict[str, list[Event]], *, partition: int, offset: int) -> int:
        """Fold, score and segment each user's events from one record; returns how many events were folded."""
        self.sync_assignment()
        models = self.models_for(partition)
        rules = self.rules.current()
        changes: list[SegmentChange] = []
        decisions: list[Decision] = []
        folded = 0
        for user_id, events in by_user.items():
            profile = self.profiles.data.get(user_id)
            consent = rules.default_consent
            steps = record_steps(profile, user_id, events, partition=partition, offset=offset, default_consent=consent)
            if not steps:
                continue
            folded += len(steps)  # applied, as a profile change or, without analytics consent, an anonymous count
            for step in steps:
                if not step.profiled:
                    self._count_anonymously(step.event.name)
            self.profile_writer.put(user_id, steps[-1].after, partition=partition)
            before = insight = self.insights.data.get(user_id)
            for step in steps:
                insight, effects = on_event(
                    insight,
                    step.before,
                    step.after,
                    step.event,
                    models=models,
                    rules=rules,
                    horizon_ms=self.horizon_ms,
                )
                self._carry_out(models, effects, changes, decisions)
                self.clocks.observe(partition, step.event.timestamp_ms)
            assert insight is not None
            self._store(user_id, before, insight, partition)
        self._fire_due(partition, changes, decisions)
        await self._emit(changes, decisions, partition)
        return folded

    def _count_anonymously(self, event_name: str) -> None:
        """An event of a user without ``analytics`` consent: only a count per event name, with no user attached."""
        if event_name in self.anonymous_counts or len(self.anonymous_counts) < MAX_ANONYMOUS_NAMES:
            self.anonymous_counts[event_name] = self.anonymous_counts.get(event_name, 0) + 1

    async def fire_due(self, partition: int) -> None:
        """Carry out what the clock alone brings on ``partition`` (the clock timer's entry point)."""
        changes: list[SegmentChange] = []
        decisions: list[Decision] = []
        self._fire_due(partition, changes, decisions)
        await self._emit(changes, decisions, partition)

    def _fire_due(self, partition: int, changes: list[SegmentChange], decisions: list[Decision]) -> None:
        """Run :func:`models.insight.on_clock` for the users whose deadline passed; collect what to emit."""
        now = self.clocks.now(partition)
        if now is None:
            return
        due = self.deadlines.pop_due(partition, now)
        if not due:
            return
        models = self.models_for(partition)
        rules = self.rules.current()
        for user_id in due:
            insight = self.insights.data.get(user_id)
            profile = self.profiles.data.get(user_id)
            if insight is None or profile is None:
                continue
            updated, effects = on_clock(insight, profile, now, rules=rules, horizon_ms=self.horizon_ms)
            self._carry_out(models, effects, changes, decisions)
            self._store(user_id, insight, updated, partition)

    async def flush(self) -> None:
        """Queue the table writes of everything processed so far (call before the record counts as processed)."""
        await self.profile_writer.flush()
        await self.insight_writer.flush()
        await self.message_writer.flush()

    def _carry_out(
        self,
        models: PartitionModels,
        effects: Iterable[Effect],
        changes: list[SegmentChange],
        decisions: list[Decision],
    ) -> None:
        for effect in effects:
            if isinstance(effect, SegmentChange):
                changes.append(effect)
            elif isinstance(effect, Decision):
                decisions.append(effect)
            else:
                models.apply(effect)

    def _store(self, user_id: str, before: Insight | None, insight: Insight, partition: int) -> None:
        self.insight_writer.put(user_id, insight, partition=partition)
        self.deadlines.schedule(partition, user_id, insight.due_ms(self.horizon_ms))
        if before is None or before.public() != insight.public():
            self.read_model.update(user_id, insight)

    async def _emit(self, changes: list[SegmentChange], decisions: list[Decision], partition: int) -> None:
        for change in changes:
            await self.segments_topic.send(key=change.user_id.encode(), value=segment_record(change))
        self.segment_changes += len(changes)
        for decision in decisions:
            record = decision_record(decision)
            kept = [m for m in self.messages.data.get(decision.user_id, ()) if m["id"] != record["id"]]
            self.message_writer.put(decision.user_id, [*kept, record][-MAX_KEPT_MESSAGES:], partition=partition)
            await self.messages_topic.send(key=decision.user_id.encode(), value=orjson.dumps(record))
            outcome = decision.reason or "sent"
            self.decisions[outcome] = self.decisions.get(outcome, 0) + 1


def decision_record(decision: Decision) -> dict[str, object]:
    """A decision as ``nudge.messages`` and ``GET /v1/users/{id}/messages`` carry it: the message and why."""
    return {
        "id": decision.message_id,
        "userId": decision.user_id,
        "trigger": decision.trigger,
        "rulesVersion": decision.version,
        "timestamp": iso_from_ms(decision.at_ms),
        "cause": decision.cause,
        "outcome": decision.outcome,
        "reason": decision.reason,
        "arm": decision.arm,
        "priority": decision.priority,
        "message": {"title": decision.title, "body": decision.body},
        "values": dict(decision.values),
        "cap": dict(decision.cap),
    }


def segment_record(change: SegmentChange) -> bytes:
    """The ``nudge.segments`` record of a change; its ``messageId`` is the same however often it is produced."""
    kind = "entered" if change.entered else "exited"
    identity = f"{change.user_id}\x00{change.segment}\x00{kind}\x00{change.at_ms}"
    return orjson.dumps(
        {
            "type": f"segment_{kind}",
            "messageId": hashlib.sha256(identity.encode()).hexdigest()[:32],
            "userId": change.user_id,
            "segment": change.segment,
            "timestamp": iso_from_ms(change.at_ms),
            "segmentsVersion": change.version,
            "cause": change.cause,
        }
    )
