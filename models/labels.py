"""Delayed labels for purchase intent, as pure transitions over a user's pending samples.

A score is a prediction about the future: "will this user buy within the horizon?". The answer arrives late. Each
scored moment is kept as a pending sample ``(timestamp, features)``; a purchase turns every sample within the
horizon before it into a positive, and a sample whose horizon passes without one becomes a negative. The model
learns from a sample only then, so it never learns from the future and never twice from the same moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

MAX_PENDING = 32

Features = Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Sample:
    """A scored moment: when, what the model saw, what it and the heuristic baseline said then."""

    timestamp_ms: int
    features: Features
    score: float = 0.0
    baseline: float = 0.0


@dataclass(frozen=True, slots=True)
class Resolved:
    """A sample with its label: learn ``sample.features -> label``; ``sample.score`` feeds progressive metrics."""

    sample: Sample
    label: bool


def add(pending: tuple[Sample, ...], sample: Sample) -> tuple[Sample, ...]:
    """Keep ``sample`` until it is resolved (the oldest are dropped past :data:`MAX_PENDING`: bounded memory)."""
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
    remaining = tuple(s for s in pending if now_ms - s.timestamp_ms <= horizon_ms)
    return remaining, expired
