"""Delayed labels for purchase intent, as pure transitions over a user's pending samples.

A score is a prediction about the future: "will this user buy within the horizon?". The answer arrives late. Each
scored moment is kept as a pending sample ``(timestamp, features)``; a purchase turns every sample within the
horizon before it into a positive, and a sample whose horizon passes without one becomes a negative. The model
learns from a sample only then, so it never learns from the future and never twice from the same moment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from models.features import FEATURE_NAMES

MAX_PENDING = 32
#: Pending features are kept as integers: value x 10 000 (4 decimals are plenty to learn from, and pack small).
SCALE = 10_000

Features = Mapping[str, float]
_DENSE = frozenset(FEATURE_NAMES)


@dataclass(frozen=True, slots=True)
class Sample:
    """A scored moment: when, what the model saw, what it and the heuristic baseline said then.

    Build one with :meth:`of`. The features are packed once, at creation, because a user's pending samples are
    rewritten to the changelog at each of their events: ``packed`` holds the :data:`FEATURE_NAMES` values in that
    order, scaled by :data:`SCALE`; ``extra`` the other (sparse) features.
    """

    timestamp_ms: int
    packed: tuple[int, ...] = ()
    extra: Mapping[str, float] = field(default_factory=dict)
    score: float = 0.0
    baseline: float = 0.0

    @classmethod
    def of(cls, timestamp_ms: int, features: Features, *, score: float = 0.0, baseline: float = 0.0) -> Sample:
        value = features.get
        packed = tuple([_packed(value(name, 0.0)) for name in FEATURE_NAMES])
        extra = {k: v for k, v in features.items() if k not in _DENSE}
        return cls(timestamp_ms, packed, extra, score, baseline)

    @property
    def features(self) -> dict[str, float]:
        """The features as the model saw them (to 4 decimals)."""
        features = {n: v / SCALE for n, v in zip(FEATURE_NAMES, self.packed, strict=False)}
        features.update(self.extra)
        return features


def _packed(value: float) -> int:
    scaled = value * SCALE
    # round() raises on infinity and NaN, here inside the agent: such a feature carries nothing to learn, so 0.
    return round(scaled) if math.isfinite(scaled) else 0


@dataclass(frozen=True, slots=True)
class Resolved:
    """A sample with its label: learn ``sample.features -> label``; ``sample.score`` feeds progressive metrics."""

    sample: Sample
    label: bool


def sampling_due(pending: tuple[Sample, ...], now_ms: int, horizon_ms: int) -> bool:
    """Is a new sample due at ``now_ms``? One per ``horizon / MAX_PENDING`` per user at most.

    So the pending samples never outgrow :data:`MAX_PENDING` and every sample gets its label: a shopper who acts
    every second would otherwise push out, unlabelled, each sample 32 events after taking it, and a long session
    without a purchase would never teach the model a negative. Consecutive moments of one user are near copies;
    thinning them also stops the busiest users from outweighing everyone else in what the model learns.
    """
    return not pending or (now_ms - pending[-1].timestamp_ms) * MAX_PENDING >= horizon_ms


def add(pending: tuple[Sample, ...], sample: Sample) -> tuple[Sample, ...]:
    """Keep ``sample`` until it is resolved. The oldest are dropped past :data:`MAX_PENDING` (bounded memory); with
    samples taken as :func:`sampling_due` says, only a merge of two users' samples gets that far."""
    return (*pending[-(MAX_PENDING - 1) :], sample)


def on_purchase(
    pending: tuple[Sample, ...], purchase_ms: int, horizon_ms: int
) -> tuple[tuple[Sample, ...], list[Resolved]]:
    """A purchase at ``purchase_ms``: samples within the horizon before it are positive, older ones negative."""
    resolved = [
        Resolved(s, purchase_ms - s.timestamp_ms <= horizon_ms) for s in pending if s.timestamp_ms <= purchase_ms
    ]
    remaining = tuple(s for s in pending if s.timestamp_ms > purchase_ms)
    return remaining, resolved


def expire(pending: tuple[Sample, ...], now_ms: int, horizon_ms: int) -> tuple[tuple[Sample, ...], list[Resolved]]:
    """Samples whose horizon passed by ``now_ms`` without a purchase are negative."""
    expired = [Resolved(s, False) for s in pending if now_ms - s.timestamp_ms > horizon_ms]
    if not expired:
        return pending, expired  # the usual case, at every event: nothing to rebuild
    remaining = tuple(s for s in pending if now_ms - s.timestamp_ms <= horizon_ms)
    return remaining, expired
