"""The per-user work of a worker: fold, score, segment, learn; and the state it keeps per partition.

The ingest agent hands each record's events here (:meth:`Pipeline.process`) and dead-letters what it refuses; the
clock timer asks for due deadlines to be fired (:meth:`Pipeline.fire_due`). The logic is in pure functions
(:func:`tables.profile.record_steps`, :func:`models.insight.on_event`, :func:`models.insight.on_clock`); this module
carries out their effects: table writes, learning on the partition's models, ``nudge.segments`` records, Redis
read-model updates, deadlines.

Call everything here with ``agents.ingest.processing`` held: the agent and the timers share the tables.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, cast

import orjson
from faust.types import TP, TopicT
from faust.types.tables import TableT

from app.audit import consent_applied, subject
from app.codecs import decode_insight, encode_insight, encode_profile
from app.deadlines import Deadlines, PartitionClocks
from app.events import Event, iso_from_ms
from app.identity import Erase, Merge, alias_event, erase_record, merge_record
from app.learning import Learning
from app.metrics import WorkerMetrics
from app.partitioning import partition_for
from app.read_model import ReadModel
from app.records import Reject
from app.rules import Rules
from app.send_now import send_now
from models.consent import CONSENT_EVENT, PURPOSES
from models.insight import Effect, Insight, SegmentChange, merge_insights, on_clock, on_event, personalised
from models.partition import PartitionModels
from models.triggers import Decision
from tables.changelog import BulkTableWriter, StagedWrites
from tables.profile import Profile, Step, granted, merge_profiles, record_steps
from ws.delivery import WITHDRAWAL

log = logging.getLogger(__name__)
#: Decision records kept per user in the ``messages`` table for the API; the topic keeps them all (by retention).
MAX_KEPT_MESSAGES = 50
MAX_ANONYMOUS_NAMES = 256
ASSIGNMENT_RECHECK_S = 1.0
#: A merge chain longer than this is a cycle (two ids merged into each other by a race): its events are dead-lettered.
MAX_ALIAS_HOPS = 8
#: Where a forwarded event counts its hops (``context``, which the fold does not read this key of).
HOPS_KEY = "nudgeAliasHops"


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
        aliases: TableT,
        alias_writer: BulkTableWriter,
        erasures: TableT,
        erasure_writer: BulkTableWriter,
        audit_topic: TopicT,
        secret: bytes,
        messages: TableT,
        message_writer: BulkTableWriter,
        learning: Learning,
        rules: Rules,
        read_model: ReadModel,
        clocks: PartitionClocks,
        partitions: int,
        horizon_ms: int,
        metrics: WorkerMetrics,
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
        self.aliases = aliases
        self.alias_writer = alias_writer
        self.erasures = erasures
        self.erasure_writer = erasure_writer
        self.staged = StagedWrites([insight_writer, profile_writer, erasure_writer], flush=app.producer.flush)
        self.audit_topic = audit_topic
        self.secret = secret
        self._pending_hand_overs: list[tuple[str, Event]] = []
        self.learning = learning
        self.rules = rules
        self.read_model = read_model
        self.clocks = clocks
        self.partitions = partitions
        self.horizon_ms = horizon_ms
        self.metrics = metrics
        self.deadlines = Deadlines()
        self._held: set[int] = set()
        self._synced: tuple[int | None, float] = (None, 0.0)
        self.segment_changes = 0
        self.decisions: dict[str, int] = {}
        #: Events of users without analytics consent, by event name: the only trace they leave.
        self.anonymous_counts: dict[str, int] = {}
        self.erased_users = 0

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

    async def process(
        self,
        by_user: dict[str, list[Event]],
        *,
        partition: int,
        offset: int,
        merges: Iterable[Merge] = (),
        erasures: Iterable[Erase] = (),
    ) -> tuple[int, int, list[Reject]]:
        """Fold, score and segment each user's events from one record; returns how many events were folded, how many
        were forwarded to the user their id was merged into (an ``alias`` event counts when its hand-over is sent),
        and the events refused (alias cycles, see :meth:`_identity`) for the caller to dead-letter.

        Identity (:mod:`app.identity`): merges are folded first; the events of an id merged into another user are
        forwarded to that user; an ``alias`` event hands this id's state over; an event that names an anonymous id
        not merged yet asks that id's partition for its state.
        """
        self.sync_assignment()
        models = self.models_for(partition)
        rules = self.rules.current()
        changes: list[SegmentChange] = []
        decisions: list[Decision] = []
        outgoing: list[tuple[str, bytes]] = []
        audits: list[tuple[str, bytes]] = []
        withdrawals: list[tuple[str, bytes]] = []
        refused: list[tuple[Event, str]] = []
        for merge in merges:
            self._merge(merge, partition, outgoing, audits, withdrawals)
        for erase in erasures:
            await self._erase(erase, partition, outgoing)
        folded = forwarded = 0
        # Timed per user and observed per record: an observation per event would cost about 1 µs each.
        clock = time.perf_counter
        fold_s = score_s = 0.0
        for user_id, all_events in by_user.items():
            events, handed_on = self._identity(user_id, self._not_erased(user_id, all_events), outgoing, refused)
            forwarded += handed_on
            if not events:
                continue
            profile = self.profiles.data.get(user_id)
            consent = rules.default_consent
            started = clock()
            steps = record_steps(profile, user_id, events, partition=partition, offset=offset, default_consent=consent)
            fold_s += clock() - started
            if not steps:
                continue
            folded += len(steps)  # applied, as a profile change or, without analytics consent, an anonymous count
            for step in steps:
                if not step.profiled:
                    self._count_anonymously(step.event.name)
            self.profile_writer.put(user_id, steps[-1].after, partition=partition)
            before = insight = self.insights.data.get(user_id)
            if insight is not None and insight.applied(partition, offset):
                # Redelivered after a crash that came between the insight's write and the profile's: the insight,
                # and what this record caused, were delivered (StagedWrites); only the profile was missing.
                self.clocks.observe(partition, steps[-1].event.timestamp_ms)
                continue
            step_audits, step_withdrawals = self._consent_changes(steps, rules.default_consent)
            audits += step_audits
            withdrawals += step_withdrawals
            started = clock()
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
            score_s += clock() - started
            assert insight is not None
            self._store(user_id, before, replace(insight, source=(partition, offset)), partition)
            outgoing += self._links(steps[-1].after, steps)
        if folded:
            self.metrics.fold_seconds.observe(fold_s)
            self.metrics.score_seconds.observe(score_s)
        hand_overs, self._pending_hand_overs = self._pending_hand_overs, []
        for user_id, alias in hand_overs:
            self._hand_over(user_id, alias, partition, outgoing)
        forwarded += len(hand_overs)
        self._fire_due(partition, changes, decisions)
        await self._emit(changes, decisions, partition, withdrawals)
        for key, value in outgoing:
            await self.events_topic.send(key=key.encode(), value=value)
        for key, record in audits:
            await self.audit_topic.send(key=key.encode(), value=record)
        rejects = []
        for event, reason in refused:
            log.warning("identity: an event of %s refused: %s", event.user_id, reason)
            rejects.append(Reject(reason, _as_record(event)))
        return folded, forwarded, rejects

    def _consent_changes(
        self, steps: list[Step], default_consent: Mapping[str, bool]
    ) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
        """For each step that changed the user's consent: an audit record (every channel ends up here), and a
        ``consent_withdrawn`` record for ``nudge.messages`` if it took back a purpose the user had."""
        audits: list[tuple[str, bytes]] = []
        withdrawals: list[tuple[str, bytes]] = []
        for step in steps:
            source = step.event.properties.get("source") if step.event.name == CONSENT_EVENT else None
            change = self._consent_change(
                step.before,
                step.after,
                at_ms=step.event.timestamp_ms,
                message_id=step.event.message_id,
                source=source if isinstance(source, str) else "context",
                default_consent=default_consent,
            )
            audits += change[0]
            withdrawals += change[1]
        return audits, withdrawals

    def _consent_change(
        self,
        before: Profile | None,
        after: Profile,
        *,
        at_ms: int,
        message_id: str,
        source: str,
        default_consent: Mapping[str, bool],
    ) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
        """The audit record of a change of the user's consent (none if it changed nothing), and its
        ``consent_withdrawn`` record if it took back a purpose the user had."""
        if after.consent == (before.consent if before is not None else {}):
            return [], []
        record = consent_applied(
            self.secret,
            user_id=after.user_id,
            before=before.consent if before is not None else {},
            after=after.consent,
            message_id=message_id,
            at=iso_from_ms(at_ms),
            source=source,
        )
        audits = [(subject(self.secret, after.user_id), record)] if record is not None else []
        withdrawal = _withdrawal(before, after, at_ms, default_consent) if before is not None else None
        return audits, [(after.user_id, withdrawal)] if withdrawal is not None else []

    # -- identity ----------------------------------------------------------------------------------------------------

    def _identity(
        self, user_id: str, events: list[Event], out: list[tuple[str, bytes]], refused: list[tuple[Event, str]]
    ) -> tuple[list[Event], int]:
        """The events to fold for ``user_id`` (those before its first ``alias`` event, unless it was merged already),
        and how many of the others were forwarded (put in ``out``).

        The ``alias`` event itself (handed over after the fold, see :meth:`_hand_over`) and the events after it are
        forwarded to the user it names. Two ids must never end up merged into each other, which would send their
        events round between them for ever: an ``alias`` into an id already merged into this user is refused, and an
        event forwarded more than :data:`MAX_ALIAS_HOPS` times (a cycle formed by a race) is dead-lettered.
        """
        canonical = self.aliases.data.get(user_id)
        cut = next((i for i, e in enumerate(events) if e.alias_to is not None), None)
        if canonical is None and cut is None:
            return events, 0
        if canonical is None:
            assert cut is not None
            alias = events[cut]
            profile = self.profiles.data.get(user_id)
            if profile is not None and alias.alias_to in profile.aliases:
                reason = f"alias: {alias.alias_to!r:.80} was merged into this user; the reverse would make a cycle"
                refused.append((alias, reason))
                return self._identity(user_id, events[:cut] + events[cut + 1 :], out, refused)
            self._pending_hand_overs.append((user_id, alias))
            canonical, keep, rest = alias.alias_to, events[:cut], events[cut + 1 :]
        else:
            keep, rest = [], events
        assert canonical is not None
        forwarded = 0
        for event in rest:
            if event.alias_to is not None:
                continue
            if _hops(event) >= MAX_ALIAS_HOPS:
                refused.append((event, f"forwarded {MAX_ALIAS_HOPS} times between merged ids: an alias cycle"))
            else:
                out.append((canonical, _forwarded(event, canonical)))
                forwarded += 1
        return keep, forwarded

    # -- erasure -------------------------------------------------------------------------------------------------------

    async def _erase(self, erase: Erase, partition: int, out: list[tuple[str, bytes]]) -> None:
        """Remove the user from every table, deadline and Redis key; ask their merged anonymous ids' partitions to do
        the same; keep only a keyed hash and the time, so their older events stay dropped; write the receipt."""
        user_id = erase.user_id
        marker = subject(self.secret, user_id)
        if self.erasures.data.get(marker, -1) >= erase.at_ms:
            return  # done already (a redelivered request)
        profile, insight = self.profiles.data.get(user_id), self.insights.data.get(user_id)
        kept_messages = len(self.messages.data.get(user_id, ()))
        aliases = list(profile.aliases) if profile is not None else []
        for writer, table in (
            (self.profile_writer, self.profiles),
            (self.insight_writer, self.insights),
            (self.message_writer, self.messages),
            (self.alias_writer, self.aliases),
        ):
            if user_id in table.data:
                writer.delete(user_id, partition=partition)
        self.erasure_writer.put(marker, erase.at_ms, partition=partition)
        self.deadlines.schedule(partition, user_id, None)
        self.read_model.forget(user_id)
        for anonymous_id in aliases:
            out.append((anonymous_id, erase_record(Erase(anonymous_id, erase.at_ms), self.secret)))
        receipt = {
            "action": "erasure",
            "subject": marker,
            "at": iso_from_ms(erase.at_ms),
            "removed": {
                "profile": profile is not None,
                "insight": insight is not None,
                "pending_labels": len(insight.pending) if insight is not None else 0,
                "armed_triggers": len(insight.triggers.armed) if insight is not None else 0,
                "decision_records": kept_messages,
                "merged_anonymous_ids": len(aliases),
                "redis": ["read model", "websocket inbox", "presence"],
            },
        }
        await self.audit_topic.send(key=marker.encode(), value=orjson.dumps(receipt))
        self.erased_users += 1
        log.info("erased a user (subject %s): %s", marker, receipt["removed"])

    def _not_erased(self, user_id: str, events: list[Event]) -> list[Event]:
        """Drop the events of an erased user stamped at or before the erasure (a replay must not bring them back)."""
        if not self.erasures.data:
            return events
        erased_at = self.erasures.data.get(subject(self.secret, user_id))
        if erased_at is None:
            return events
        kept = [event for event in events if event.timestamp_ms > erased_at]
        for event in events:
            if event.timestamp_ms <= erased_at:
                self._count_anonymously(event.name)
        return kept

    def _links(self, profile: Profile, steps: list[Step]) -> list[tuple[str, bytes]]:
        """Alias events for the anonymous ids this user's events named that are not merged into it yet."""
        named = dict.fromkeys(s.event.anonymous_id for s in steps if s.event.anonymous_id)
        unlinked = [anonymous_id for anonymous_id in named if anonymous_id and anonymous_id not in profile.aliases]
        if not unlinked:
            return []  # the usual case: formatting the time costs more than the rest of this check
        stamp = iso_from_ms(steps[-1].event.timestamp_ms)
        return [
            (anonymous_id, orjson.dumps(alias_event(anonymous_id, profile.user_id, timestamp=stamp)))
            for anonymous_id in unlinked
        ]

    def _hand_over(self, user_id: str, alias: Event, partition: int, out: list[tuple[str, bytes]]) -> None:
        """``user_id`` is now ``alias.alias_to``: ship its profile and insight there and forget them here."""
        canonical = alias.alias_to
        assert canonical is not None
        profile, insight = self.profiles.data.get(user_id), self.insights.data.get(user_id)
        merge = Merge(
            user_id,
            canonical,
            orjson.loads(encode_profile(profile)) if profile is not None else None,
            encode_insight(insight).decode() if insight is not None else None,
        )
        out.append((canonical, merge_record(merge, self.secret)))
        self.alias_writer.put(user_id, canonical, partition=partition)
        self.profile_writer.delete(user_id, partition=partition)
        self.insight_writer.delete(user_id, partition=partition)
        self.deadlines.schedule(partition, user_id, None)
        log.info("identity: %s merged into %s (profile %s)", user_id, canonical, "sent" if profile else "none")

    def _merge(
        self,
        merge: Merge,
        partition: int,
        out: list[tuple[str, bytes]],
        audits: list[tuple[str, bytes]],
        withdrawals: list[tuple[str, bytes]],
    ) -> None:
        """Fold the state of ``merge.from_id`` into its user's; a refusal the visitor made stands for the user, so
        the merge can withdraw consent: that is audited, and takes back the user's messages not shown yet."""
        profile = self.profiles.data.get(merge.into_id)
        if profile is not None and merge.from_id in profile.aliases:
            return  # applied already (a redelivered record)
        other = Profile.from_dict(merge.profile) if merge.profile else Profile(user_id=merge.from_id)
        erased_at = self.erasures.data.get(subject(self.secret, merge.into_id)) if self.erasures.data else None
        if erased_at is not None and other.last_seen_ms <= erased_at:
            # The anonymous state of a person erased since: a merge produced by a replay (or in flight during the
            # erasure) must not bring them back, and the anonymous id's own state goes with them.
            out.append((merge.from_id, erase_record(Erase(merge.from_id, erased_at), self.secret)))
            return
        merged = merge_profiles(profile, other, user_id=merge.into_id)
        self.profile_writer.put(merge.into_id, merged, partition=partition)
        if profile is not None:
            change = self._consent_change(
                profile,
                merged,
                at_ms=merged.last_seen_ms,
                message_id=f"merge\x00{merge.from_id}",
                source="merge",
                default_consent=self.rules.current().default_consent,
            )
            audits += change[0]
            withdrawals += change[1]
        if merge.insight is not None:
            before = self.insights.data.get(merge.into_id)
            visitor = decode_insight(merge.insight.encode())
            personal = personalised(merged, self.rules.current())
            self._store(merge.into_id, before, merge_insights(before, visitor, personal=personal), partition)

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
        """Queue the table writes of everything processed so far (call before the record counts as processed).

        Aliases and decision records go straight to the producer, like the topic records sent during processing;
        insights, then profiles, then erasure markers follow in stages (:class:`tables.changelog.StagedWrites`).
        """
        await self.alias_writer.flush()
        await self.message_writer.flush()
        self.staged.queue()

    async def settled(self) -> None:
        """Wait until every table write queued so far is in the producer (``producer.flush()`` then delivers it)."""
        await self.staged.settled()

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

    async def _emit(
        self,
        changes: list[SegmentChange],
        decisions: list[Decision],
        partition: int,
        withdrawals: list[tuple[str, bytes]] | None = None,
    ) -> None:
        for change in changes:
            await self.segments_topic.send(key=change.user_id.encode(), value=segment_record(change))
        self.segment_changes += len(changes)
        for decision in decisions:
            record = decision_record(decision)
            kept = [m for m in self.messages.data.get(decision.user_id, ()) if m["id"] != record["id"]]
            self.message_writer.put(decision.user_id, [*kept, record][-MAX_KEPT_MESSAGES:], partition=partition)
            await self.messages_topic.send(key=decision.user_id.encode(), value=orjson.dumps(record))
            self.metrics.decided(decision.trigger, decision.outcome, decision.reason)
            outcome = decision.reason or "sent"
            self.decisions[outcome] = self.decisions.get(outcome, 0) + 1
        # After the decisions: the gateways deliver a user's records in order, so a withdrawal reaches them after
        # every message decided before it, and takes back those not shown yet (ws.delivery.apply_withdrawals).
        withdrawals = withdrawals or []
        for key, value in withdrawals:
            await self.messages_topic.send(key=key.encode(), value=value)
        if decisions or withdrawals:
            # A browser waits for these: they leave without the producer's linger.
            send_now(self.app.producer._ensure_producer(), self.messages_topic.get_topic_name())


def _forwarded(event: Event, user_id: str) -> bytes:
    """``event`` of an id merged into ``user_id``, as ``user_id``'s event (same messageId: a repeat is skipped)."""
    context = {**event.context, HOPS_KEY: _hops(event) + 1}
    return _as_record(replace(event, user_id=user_id, anonymous_id=event.user_id, context=context))


def _hops(event: Event) -> int:
    """How many times ``event`` was forwarded to the id it was merged into."""
    hops = event.context.get(HOPS_KEY)
    return hops if isinstance(hops, int) and not isinstance(hops, bool) and hops > 0 else 0


def _as_record(event: Event) -> bytes:
    """``event`` as a Segment event again, for ``nudge.events`` or the dead-letter topic."""
    record: dict[str, Any] = {
        "type": event.type,
        "messageId": event.message_id,
        "timestamp": iso_from_ms(event.timestamp_ms),
        "properties": dict(event.properties),
        "context": dict(event.context),
    }
    if event.alias_to is not None:
        record.update(previousId=event.user_id, userId=event.alias_to)
    else:
        record["userId"] = event.user_id
        if event.anonymous_id is not None:
            record["anonymousId"] = event.anonymous_id
    if event.type == "track":
        record["event"] = event.name
    return orjson.dumps(record)


def _withdrawal(before: Profile, after: Profile, at_ms: int, default_consent: Mapping[str, bool]) -> bytes | None:
    """The ``consent_withdrawn`` record of a change that took back a purpose the user had; ``None`` if it took none."""
    withdrawn = [
        purpose
        for purpose in PURPOSES
        if granted(before, purpose, default_consent) and not granted(after, purpose, default_consent)
    ]
    if not withdrawn:
        return None
    record = {"type": WITHDRAWAL, "userId": after.user_id, "purposes": withdrawn, "timestamp": iso_from_ms(at_ms)}
    return orjson.dumps(record)


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
        "consent": decision.consent,
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
