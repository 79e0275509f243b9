"""A user's insight as events arrive and time passes: scores, delayed labels, learning, segment entry and exit."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from app.codecs import decode_insight, encode_insight
from app.deadlines import Deadlines, PartitionClocks
from app.events import Event
from models import labels
from models.insight import Insight, LearnCluster, Rules, SegmentChange, on_clock, on_event
from models.partition import PartitionModels, SnapshotError, decode_snapshot, encode_snapshot
from models.segments import SegmentSet, load_segments
from models.triggers import Decision, TriggerSet, load_triggers
from models.variables import CLOCK_VARIABLES, VARIABLES
from tables.profile import Profile, fold

T0 = 1_767_225_600_000
MINUTE = 60_000
HORIZON = 30 * MINUTE
NO_TRIGGERS = TriggerSet("none", (), 0)
SEGMENTS = load_segments(
    (Path(__file__).resolve().parents[2] / "segments.yaml").read_text(),
    source="segments.yaml",
    known=VARIABLES,
    clock=CLOCK_VARIABLES,
)


def event(event_name: str, minute: float, user: str = "u1", **props: object) -> Event:
    ts = T0 + int(minute * MINUTE)
    return Event("track", event_name, user, f"m-{event_name}-{ts}", ts, props, {"sessionId": "s1"})


class Journey:
    """Feeds events and clock ticks through the pure transitions, carrying out effects like the pipeline does."""

    def __init__(self, segments: SegmentSet = SEGMENTS, triggers: TriggerSet = NO_TRIGGERS) -> None:
        self.models = PartitionModels(0)
        self.rules = Rules(segments, triggers, default_consent={"analytics": True, "personalization": True})
        self.profile: Profile | None = None
        self.insight: Insight | None = None
        self.changes: list[SegmentChange] = []
        self.resolved: list[labels.Resolved] = []
        self.decisions: list[Decision] = []

    def send(
        self, event_name: str, minute: float, context: dict[str, object] | None = None, **props: object
    ) -> Insight:
        step = event(event_name, minute, **props)
        if context is not None:
            step = Event(
                step.type, step.name, step.user_id, step.message_id, step.timestamp_ms, props, {"consent": context}
            )
        before = self.profile
        self.profile = fold(before or Profile(user_id="u1"), step)
        self.insight, effects = on_event(
            self.insight, before, self.profile, step, models=self.models, rules=self.rules, horizon_ms=HORIZON
        )
        self._carry_out(effects)
        return self.insight

    def tick(self, minute: float) -> Insight:
        assert self.insight is not None and self.profile is not None
        self.insight, effects = on_clock(
            self.insight, self.profile, T0 + int(minute * MINUTE), rules=self.rules, horizon_ms=HORIZON
        )
        self._carry_out(effects)
        return self.insight

    def _carry_out(self, effects: list[labels.Resolved | LearnCluster | SegmentChange | Decision]) -> None:
        for effect in effects:
            if isinstance(effect, SegmentChange):
                self.changes.append(effect)
            elif isinstance(effect, Decision):
                self.decisions.append(effect)
            else:
                if isinstance(effect, labels.Resolved):
                    self.resolved.append(effect)
                self.models.apply(effect)

    def history(self) -> list[tuple[str, str, float]]:
        return [(("+" if c.entered else "-") + c.segment, c.cause, (c.at_ms - T0) / MINUTE) for c in self.changes]


def test_a_shopper_enters_segments_on_events_and_on_the_clock_and_leaves_on_purchase() -> None:
    journey = Journey()
    for minute in range(6):
        journey.send("Product Viewed", minute, product_id=f"p{minute}", category="shoes", price=40.0)
    insight = journey.send("Product Added", 7, product_id="p1", price=80.0, category="shoes")
    assert insight.segments == ("category_binge", "new_visitor_browsing")
    # Nothing happens for two hours: the clock, not an event, puts the user in cart_waiting at 7 + 120 minutes.
    assert insight.recheck_ms == T0 + 127 * MINUTE + 1
    assert journey.tick(126).segments == ("category_binge", "new_visitor_browsing")
    assert journey.tick(127.001).segments == ("cart_waiting", "category_binge", "new_visitor_browsing")
    journey.send("Order Completed", 131, revenue=80.0)
    assert journey.history() == [
        ("+category_binge", "Product Viewed", 5),  # the 6th view of shoes this session
        ("+new_visitor_browsing", "Product Added", 7),  # first session, over 5 minutes, no order
        ("+cart_waiting", "clock", 127.001),  # cart untouched for 2 h
        ("-cart_waiting", "Order Completed", 131),
        ("-new_visitor_browsing", "Order Completed", 131),
    ]
    assert {c.version for c in journey.changes} == {SEGMENTS.version}


def test_a_purchase_within_the_horizon_turns_the_pending_scores_into_positive_learning() -> None:
    journey = Journey()
    scored = journey.send("Product Viewed", 0, product_id="p1", category="shoes", price=40.0)
    assert scored.intent is not None and 0 < scored.intent < 1
    assert scored.model_version == "p0.v0" and len(scored.pending) == 1
    journey.send("Product Added", 2, product_id="p1", price=40.0)
    assert journey.models.intent.version == 0  # nothing learned before a label is known
    bought = journey.send("Order Completed", 10, revenue=40.0)
    assert [r.label for r in journey.resolved] == [True, True]
    assert bought.pending == ()
    assert journey.models.intent.version == 2
    assert journey.models.progress.summary()["samples"] == 2
    assert journey.send("Product Viewed", 11, product_id="p2").model_version == "p0.v2"


def test_a_horizon_passing_without_purchase_turns_them_into_negative_learning_on_the_clock() -> None:
    journey = Journey()
    insight = journey.send("Product Viewed", 0, product_id="p1", category="shoes", price=40.0)
    insight = journey.send("Product Viewed", 5, product_id="p2", category="shoes", price=40.0)
    assert insight.due_ms(HORIZON) == T0 + HORIZON + 1
    assert journey.tick(30).pending == insight.pending  # not yet: the horizon is inclusive
    after = journey.tick(30.001)
    assert [r.label for r in journey.resolved] == [False]
    assert len(after.pending) == 1 and after.due_ms(HORIZON) == T0 + 5 * MINUTE + HORIZON + 1
    journey.tick(36)
    assert [r.label for r in journey.resolved] == [False, False]
    assert journey.models.intent.version == 2


def test_a_late_purchase_resolves_old_moments_as_negative() -> None:
    journey = Journey()
    journey.send("Product Viewed", 0, product_id="p1")
    journey.send("Order Completed", 45, revenue=10.0)
    assert [r.label for r in journey.resolved] == [False]


def test_a_shopper_who_acts_every_second_for_an_hour_teaches_a_negative_for_every_sample_taken() -> None:
    journey = Journey()
    gap = HORIZON / labels.MAX_PENDING / MINUTE  # minutes between samples: 0.9375
    seconds = 3600
    for second in range(seconds):
        insight = journey.send("Product Viewed", second / 60, product_id=f"p{second % 40}", category="shoes")
        assert insight.intent is not None  # scored at every event
        assert len(insight.pending) <= labels.MAX_PENDING
    taken = sorted([s.timestamp_ms for s in insight.pending] + [r.sample.timestamp_ms for r in journey.resolved])
    gaps = [b - a for a, b in itertools.pairwise(taken)]
    assert taken[0] == T0 and len(taken) == 64  # the first event's, then one per gap: 56.25 s, at whole seconds
    assert all(gap * MINUTE <= g <= gap * MINUTE + 1001 for g in gaps)
    journey.tick(seconds / 60 + 31)
    assert len(journey.resolved) == len(taken) and not any(r.label for r in journey.resolved)
    assert journey.models.intent.version == len(taken)


def test_a_user_is_clustered_on_first_sight_and_reclustered_when_behaviour_changes() -> None:
    journey = Journey()
    first = journey.send("Product Viewed", 0, product_id="p1")
    assert first.cluster is not None
    learned = journey.models.clusters.version
    journey.send("Product Viewed", 1, product_id="p2")
    assert journey.models.clusters.version == learned  # a view within the session: same shape
    journey.send("Order Completed", 2, revenue=100.0)
    assert journey.models.clusters.version == learned + 1


def test_a_trigger_reads_the_profile_consent_and_fills_its_message_from_the_cart() -> None:
    triggers = load_triggers(
        "triggers:\n  idle:\n    when: {inactive: 15m}\n    if: cart_items > 0\n"
        "    message: {title: 'Still want {top_cart_item}?'}\n    consent: marketing\n",
        source="t.yaml",
        known=VARIABLES,
        segments=(),
    )
    granted, silent = Journey(triggers=triggers), Journey(triggers=triggers)
    for journey, preferences in ((granted, {"marketing": True}), (silent, {})):
        journey.send("Product Added", 0, product_id="boots", price=80.0, context={"categoryPreferences": preferences})
        journey.tick(15)
    [sent] = granted.decisions
    assert (sent.outcome, sent.title, sent.cause) == ("sent", "Still want boots?", "clock")
    assert [(d.outcome, d.reason) for d in silent.decisions] == [("suppressed", "consent")]
    assert decode_insight(encode_insight(granted.insight or Insight())).triggers == granted.insight.triggers

    named = Journey(triggers=triggers)
    marketing = {"categoryPreferences": {"marketing": True}}
    named.send("Product Added", 0, product_id="boots", name="Hiking boots", context=marketing)
    named.send("Product Added", 1, product_id="boots", name="  ")
    named.tick(16)
    assert [d.title for d in named.decisions] == ["Still want Hiking boots?"]  # a blank name keeps the known one


def test_insights_survive_their_changelog_encoding() -> None:
    journey = Journey()
    journey.send("Product Viewed", 0, product_id="p1", category="shoes", price=40.0)
    insight = journey.send("Product Added", 1, product_id="p1", price=40.0)
    decoded = decode_insight(encode_insight(insight))
    assert decoded.segments == insight.segments and decoded.cluster == insight.cluster
    assert decoded.intent == insight.intent and decoded.recheck_ms == insight.recheck_ms
    assert [s.timestamp_ms for s in decoded.pending] == [s.timestamp_ms for s in insight.pending]
    for restored, original in zip(decoded.pending, insight.pending, strict=True):
        assert restored.features == pytest.approx(dict(original.features), abs=1e-5)


def test_a_model_snapshot_loads_only_with_the_secret_that_signed_it() -> None:
    journey = Journey()
    journey.send("Product Viewed", 0, product_id="p1")
    journey.send("Order Completed", 1, revenue=10.0)
    snapshot = encode_snapshot(journey.models, b"s" * 32)
    restored = decode_snapshot(snapshot, b"s" * 32)
    assert restored.version == journey.models.version == "p0.v1"
    x = {"views_log": 1.0, "has_cart": 1.0}
    assert restored.score(x) == journey.models.score(x)
    with pytest.raises(SnapshotError, match="signature"):
        decode_snapshot(snapshot, b"t" * 32)
    with pytest.raises(SnapshotError, match="signature"):
        decode_snapshot(snapshot[:-1] + bytes([snapshot[-1] ^ 1]), b"s" * 32)


def test_deadlines_fire_once_in_order_and_a_reschedule_replaces_the_old_one() -> None:
    deadlines = Deadlines()
    deadlines.schedule(0, "late", 300)
    deadlines.schedule(0, "early", 100)
    deadlines.schedule(0, "moved", 150)
    deadlines.schedule(0, "moved", 500)
    deadlines.schedule(0, "cancelled", 120)
    deadlines.schedule(0, "cancelled", None)
    deadlines.schedule(1, "other partition", 50)
    assert deadlines.pop_due(0, 99) == []
    assert deadlines.pop_due(0, 400) == ["early", "late"]
    assert deadlines.pop_due(0, 400) == []
    assert deadlines.pop_due(0, 10_000) == ["moved"]
    assert deadlines.pop_due(1, 10_000) == ["other partition"]


def test_rescheduling_a_deadline_often_keeps_the_heap_small() -> None:
    deadlines = Deadlines()
    for step in range(50_000):
        deadlines.schedule(0, f"u{step % 10}", T0 + step)
    assert len(deadlines._heaps[0]) <= 2 * 10 + 1024 + 1
    assert deadlines.pop_due(0, T0 + 60_000) == [f"u{i}" for i in range(10)]


def test_the_event_clock_follows_the_latest_event_and_runs_on_with_the_wall_clock_between_events() -> None:
    seconds = [100.0]
    clocks = PartitionClocks("event", monotonic=lambda: seconds[0])
    assert clocks.now(0) is None
    clocks.observe(0, T0 + 5)
    clocks.observe(0, T0)  # a late event does not move time back
    assert clocks.now(0) == T0 + 5
    seconds[0] += 2.5  # nothing arrives for 2.5 s
    assert clocks.now(0) == T0 + 2505
    clocks.observe(0, T0 + 60_000)  # a replay jumps ahead: event time wins
    assert clocks.now(0) == T0 + 60_000
    assert clocks.now(1) is None
    assert PartitionClocks("wall").now(0) > T0


def test_withdrawing_personalization_drops_the_score_the_samples_and_every_segment_at_once() -> None:
    journey = Journey()
    for minute in range(6):
        journey.send("Product Viewed", minute, product_id=f"p{minute}", category="shoes", price=40.0)
    assert journey.insight is not None and journey.insight.segments and journey.insight.pending
    withdrawn = journey.send(
        "Product Viewed",
        7,
        product_id="p9",
        category="shoes",
        context={"categoryPreferences": {"personalization": False}},
    )
    assert (withdrawn.intent, withdrawn.cluster, withdrawn.pending, withdrawn.segments) == (None, None, (), ())
    assert journey.history()[-1] == ("-category_binge", "Product Viewed", 7)
    assert journey.tick(200).segments == ()  # the clock brings nothing back
    assert journey.resolved == []  # samples gathered before were never learned from
    regranted = journey.send(
        "Product Viewed",
        201,
        product_id="p1",
        category="shoes",
        context={"categoryPreferences": {"personalization": True}},
    )
    assert regranted.intent is not None
