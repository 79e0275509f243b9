"""What Nudge has learned about one user, and the pure transitions that keep it current.

An :class:`Insight` sits beside each user's profile: the latest purchase-intent score and the model version that
produced it, the declared segments the user is in, their behavioural cluster, the scored moments still waiting for
a label, and when the clock alone may next change a segment. Two transitions update it:

- :func:`on_event`, for each event folded into the profile (see :func:`tables.profile.record_steps`): resolve
  labels a purchase settles, score the moment, place the user in a cluster, re-evaluate segments;
- :func:`on_clock`, when :meth:`Insight.due_ms` has passed on the partition's clock: expire labels whose horizon
  ran out without a purchase and re-evaluate segments that depend on elapsed time.

Both read the partition's models without changing them and return effects as data: :class:`labels.Resolved`
(learn this sample), :class:`LearnCluster` and :class:`SegmentChange`. The caller carries them out in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from app.events import Event
from models import labels
from models.clusters import cluster_features
from models.features import features, product_seen_before
from models.segments import SegmentSet, transitions
from models.variables import next_change, variables
from tables.profile import Profile

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

    def due_ms(self, horizon_ms: int) -> int | None:
        """When :func:`on_clock` has work for this user: a label expires or a segment may change."""
        times = [t for t in (self.recheck_ms,) if t is not None]
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


Effect = labels.Resolved | LearnCluster | SegmentChange


def on_event(
    insight: Insight | None,
    before: Profile | None,
    after: Profile,
    event: Event,
    *,
    models: Models,
    segments: SegmentSet,
    horizon_ms: int,
) -> tuple[Insight, list[Effect]]:
    """Update ``insight`` for ``event``, just folded: ``before`` and ``after`` are the profile around it."""
    current = insight or Insight()
    now = event.timestamp_ms
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
        pending = labels.add(pending, labels.Sample.of(now, x, score=intent, baseline=has_cart_this_session(after)))
    cluster = current.cluster
    if cluster is None or event.name in CLUSTER_EVENTS or (after.session and after.session.events == 1):
        shape = cluster_features(after, now)
        cluster = models.assign(shape)
        effects.append(LearnCluster(shape))
    updated = replace(current, intent=intent, model_version=version, cluster=cluster, pending=pending, as_of_ms=now)
    return _segments(updated, after, now, event.name, segments, effects)


def on_clock(
    insight: Insight, profile: Profile, now_ms: int, *, segments: SegmentSet, horizon_ms: int
) -> tuple[Insight, list[Effect]]:
    """Update ``insight`` as time passes with no event of the user: expire labels, re-evaluate segments."""
    pending, expired = labels.expire(insight.pending, now_ms, horizon_ms)
    effects: list[Effect] = list(expired)
    updated = replace(insight, pending=pending, as_of_ms=max(insight.as_of_ms, now_ms))
    return _segments(updated, profile, now_ms, "", segments, effects)


def has_cart_this_session(profile: Profile) -> float:
    """The heuristic baseline: 1 if the cart holds something changed during the current session."""
    session = profile.session
    changed = profile.cart_changed_ms
    return 1.0 if profile.cart and session and changed and changed >= session.started_ms else 0.0


def _segments(
    insight: Insight, profile: Profile, now: int, cause: str, segments: SegmentSet, effects: list[Effect]
) -> tuple[Insight, list[Effect]]:
    values = variables(profile, now_ms=now, event=cause, intent=insight.intent, cluster=insight.cluster)
    members = segments.memberships(values)
    entered, exited = transitions(frozenset(insight.segments), members)
    for name in entered:
        effects.append(SegmentChange(profile.user_id, name, True, now, segments.version, cause or "clock"))
    for name in exited:
        effects.append(SegmentChange(profile.user_id, name, False, now, segments.version, cause or "clock"))
    recheck = next_change(profile, segments.clock_thresholds, now)
    return replace(insight, segments=tuple(sorted(members)), recheck_ms=recheck), effects
