"""What Nudge has learned about one user, and the pure transitions that keep it current.

An :class:`Insight` sits beside each user's profile: the latest purchase-intent score and the model version that
produced it, the declared segments the user is in, their behavioural cluster, the scored moments still waiting for
a label, and when the clock alone may next change a segment. Two transitions update it:

- :func:`on_event`, for each event folded into the profile (see :func:`tables.profile.record_steps`): resolve
  labels a purchase settles, score the moment, place the user in a cluster, re-evaluate segments;
- :func:`on_clock`, when :meth:`Insight.due_ms` has passed on the partition's clock: expire labels whose horizon
  ran out without a purchase and re-evaluate segments that depend on elapsed time.

Both read the partition's models without changing them and return effects as data: :class:`labels.Resolved`
(learn this sample), :class:`LearnCluster`, :class:`SegmentChange` and :class:`models.triggers.Decision` (a trigger
came due: sent or suppressed). The caller carries them out in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Protocol

from app.events import Event
from models import labels, triggers
from models.clusters import cluster_features
from models.features import features, product_seen_before
from models.segments import SegmentSet, transitions
from models.triggers import Decision, TriggerSet, TriggerState
from models.variables import next_change, variables
from tables.profile import Profile, granted

SCORED_EVENTS = frozenset({"Product Viewed", "Product Added", "Product Removed", "Cart Viewed", "Checkout Started"})
PURCHASE = "Order Completed"
#: Events after which the user's cluster is reconsidered: RFM or engagement changed.
CLUSTER_EVENTS = frozenset({PURCHASE, "Product Added"})


class Models(Protocol):
    """What the transitions read from a partition's models (:class:`models.partition.PartitionModels`)."""

    @property
    def version(self) -> str: ...

    def score(self, features: Mapping[str, float]) -> float: ...

    def assign(self, features: Mapping[str, float]) -> int: ...


@dataclass(frozen=True, slots=True)
class Insight:
    intent: float | None = None
    #: The partition model that produced ``intent``, e.g. ``p3.v1042`` (partition 3, 1042 samples learned).
    model_version: str = ""
    segments: tuple[str, ...] = ()
    cluster: int | None = None
    pending: tuple[labels.Sample, ...] = ()
    #: When a clock variable next crosses a threshold of a segment condition (event time), if ever.
    recheck_ms: int | None = None
    #: Event time of the latest update.
    as_of_ms: int = 0
    triggers: TriggerState = field(default_factory=TriggerState)
    #: ``(partition, offset)`` of the last ``nudge.events`` record applied, as the profile keeps it: after a crash
    #: the insight may hold a record whose profile was not written yet (see :class:`tables.changelog.StagedWrites`).
    source: tuple[int, int] = (-1, -1)

    def applied(self, partition: int, offset: int) -> bool:
        """Whether the record at ``partition``/``offset`` was applied to this insight already."""
        return partition == self.source[0] and offset <= self.source[1]

    def due_ms(self, horizon_ms: int) -> int | None:
        """When :func:`on_clock` has work for this user: a label expires, a segment may change, a trigger is due."""
        times = [t for t in (self.recheck_ms, self.triggers.due_ms()) if t is not None]
        if self.pending:
            times.append(self.pending[0].timestamp_ms + horizon_ms + 1)
        return min(times) if times else None

    def public(self) -> tuple[object, ...]:
        """The part other services read (the Redis read model): rewritten only when this changes."""
        return (self.segments, self.cluster, None if self.intent is None else round(self.intent, 3))


@dataclass(frozen=True, slots=True)
class LearnCluster:
    features: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class SegmentChange:
    """The user entered or left ``segment`` at ``at_ms`` (event time); ``cause`` is the event name or ``clock``."""

    user_id: str
    segment: str
    entered: bool
    at_ms: int
    version: str
    cause: str


Effect = labels.Resolved | LearnCluster | SegmentChange | Decision


@dataclass(frozen=True, slots=True)
class Rules:
    """The declared rules a transition applies, and the consent a user has unless they said otherwise."""

    segments: SegmentSet
    triggers: TriggerSet
    default_consent: Mapping[str, bool] = field(default_factory=dict)


def on_event(
    insight: Insight | None,
    before: Profile | None,
    after: Profile,
    event: Event,
    *,
    models: Models,
    rules: Rules,
    horizon_ms: int,
) -> tuple[Insight, list[Effect]]:
    """Update ``insight`` for ``event``, just folded: ``before`` and ``after`` are the profile around it.

    Without the user's ``personalization`` consent (or ``analytics``: then nothing was folded) there is no score,
    no cluster and no segment: pending samples are dropped unlearned and segments are left. Triggers still come
    due, and each checks its own purpose (a marketing message needs ``marketing``).
    """
    current = insight or Insight()
    now = event.timestamp_ms
    if not personalised(after, rules):
        return _impersonal(current, after, now, event.name, rules)
    effects: list[Effect] = []
    pending, expired = labels.expire(current.pending, now, horizon_ms)
    effects.extend(expired)
    intent, version = current.intent, current.model_version
    if event.name == PURCHASE:
        pending, bought = labels.on_purchase(pending, now, horizon_ms)
        effects.extend(bought)
    elif event.name in SCORED_EVENTS:
        x = features(after, event, seen_before=product_seen_before(before, event))
        intent, version = models.score(x), models.version
        if labels.sampling_due(pending, now, horizon_ms):
            sample = labels.Sample.of(now, x, score=intent, baseline=has_cart_this_session(after))
            pending = labels.add(pending, sample)
    cluster = current.cluster
    if cluster is None or event.name in CLUSTER_EVENTS or (after.session and after.session.events == 1):
        shape = cluster_features(after, now)
        cluster = models.assign(shape)
        effects.append(LearnCluster(shape))
    return _segments_and_triggers(
        current, after, now, event.name, rules, effects, Scored(intent, version, cluster, pending, now)
    )


def on_clock(
    insight: Insight, profile: Profile, now_ms: int, *, rules: Rules, horizon_ms: int
) -> tuple[Insight, list[Effect]]:
    """Update ``insight`` as time passes with no event of the user: labels expire, segments and triggers come due."""
    if not personalised(profile, rules):
        return _impersonal(insight, profile, now_ms, "", rules)
    pending, expired = labels.expire(insight.pending, now_ms, horizon_ms)
    effects: list[Effect] = list(expired)
    as_of = max(insight.as_of_ms, now_ms)
    scored = Scored(insight.intent, insight.model_version, insight.cluster, pending, as_of)
    return _segments_and_triggers(insight, profile, now_ms, "", rules, effects, scored)


def personalised(profile: Profile, rules: Rules) -> bool:
    """Whether the user lets Nudge profile them (``analytics``) and personalise for them (``personalization``)."""
    return granted(profile, "analytics", rules.default_consent) and granted(
        profile, "personalization", rules.default_consent
    )


def _impersonal(insight: Insight, profile: Profile, now: int, cause: str, rules: Rules) -> tuple[Insight, list[Effect]]:
    forgotten = Scored(None, "", None, (), now)
    return _segments_and_triggers(insight, profile, now, cause, rules, [], forgotten, personal=False)


def merge_insights(into: Insight | None, other: Insight, *, personal: bool) -> Insight:
    """An anonymous visitor's insight folded into the known user's: the newer score, both users' pending samples.

    Segments, cluster and trigger state stay the known user's (the next event or tick re-evaluates them); a user
    seen for the first time takes the visitor's insight whole. Merging the same visitor again changes nothing: a
    merge record redelivered after a crash must not give the model the visitor's samples twice. Unless ``personal``
    (:func:`personalised` of the merged profile: a refusal on either side stands), the result keeps no score,
    cluster or samples, as :func:`on_event` keeps none for such a user.
    """
    if not personal:
        base = into if into is not None else other
        return replace(
            base, intent=None, model_version="", cluster=None, pending=(), as_of_ms=max(base.as_of_ms, other.as_of_ms)
        )
    if into is None:
        return other
    newer = other if other.as_of_ms > into.as_of_ms else into
    # One copy of each sample, in an order that does not depend on which side held it: so the newest MAX_PENDING
    # are the same samples however often the merge runs.
    unique = {_sample_key(s): s for s in (*into.pending, *other.pending)}
    pending = tuple(unique[key] for key in sorted(unique))[-labels.MAX_PENDING :]
    return replace(
        into,
        intent=newer.intent if newer.intent is not None else into.intent,
        model_version=newer.model_version if newer.intent is not None else into.model_version,
        as_of_ms=max(into.as_of_ms, other.as_of_ms),
        cluster=into.cluster if into.cluster is not None else other.cluster,
        pending=pending,
    )


def _sample_key(sample: labels.Sample) -> tuple[object, ...]:
    return (sample.timestamp_ms, sample.packed, sample.score, sample.baseline, tuple(sorted(sample.extra.items())))


def has_cart_this_session(profile: Profile) -> float:
    """The heuristic baseline: 1 if the cart holds something changed during the current session."""
    session = profile.session
    changed = profile.cart_changed_ms
    return 1.0 if profile.cart and session and changed and changed >= session.started_ms else 0.0


def message_values(profile: Profile, values: Mapping[str, object]) -> dict[str, object]:
    """The rule variables plus what message templates may name (:data:`models.triggers.TEMPLATE_EXTRAS`)."""
    cart = sorted(profile.cart.values(), key=lambda item: (-item.price * item.quantity, item.product_id))
    recommended = next((p for p in profile.recent_items if p not in profile.cart), None)
    top = (cart[0].name or cart[0].product_id) if cart else None
    return {**values, "top_cart_item": top, "recommended_item": recommended}


class Scored(NamedTuple):
    """The fields of an :class:`Insight` a transition sets before segments and triggers are evaluated."""

    intent: float | None
    model_version: str
    cluster: int | None
    pending: tuple[labels.Sample, ...]
    as_of_ms: int


def _segments_and_triggers(
    insight: Insight,
    profile: Profile,
    now: int,
    cause: str,
    rules: Rules,
    effects: list[Effect],
    scored: Scored,
    *,
    personal: bool = True,
) -> tuple[Insight, list[Effect]]:
    """``insight`` with ``scored`` and the segments and trigger state they lead to: one new value per transition."""
    segments = rules.segments
    values = variables(profile, now_ms=now, event=cause, intent=scored.intent, cluster=scored.cluster)
    members = segments.memberships(values) if personal else frozenset()
    entered, exited = transitions(frozenset(insight.segments), members)
    for name in entered:
        effects.append(SegmentChange(profile.user_id, name, True, now, segments.version, cause or "clock"))
    for name in exited:
        effects.append(SegmentChange(profile.user_id, name, False, now, segments.version, cause or "clock"))
    recheck = next_change(profile, segments.clock_thresholds, now) if personal else None
    consent = {**rules.default_consent, **profile.consent}
    shown = message_values(profile, values)
    if cause:
        state, decisions = triggers.on_event(
            insight.triggers,
            rules.triggers,
            user_id=profile.user_id,
            event=cause,
            entered=entered,
            values=shown,
            consent=consent,
            now_ms=now,
        )
    else:
        state, decisions = triggers.on_clock(
            insight.triggers,
            rules.triggers,
            user_id=profile.user_id,
            values=shown,
            consent=consent,
            now_ms=now,
            entered=entered,
        )
    effects.extend(decisions)
    # Every field named, built directly: dataclasses.replace costs twice as much, and this runs for every event.
    updated = Insight(
        intent=scored.intent,
        model_version=scored.model_version,
        segments=tuple(sorted(members)),
        cluster=scored.cluster,
        pending=scored.pending,
        recheck_ms=recheck,
        as_of_ms=scored.as_of_ms,
        triggers=state,
        source=insight.source,
    )
    return updated, effects
