"""The learned models of one partition of users, their progressive metrics, and the signed snapshot they move in.

Each partition of ``nudge.events`` has its own intent model and clusterer: the worker that owns the partition is
the only writer, so learning needs no coordination, and a worker that takes the partition over (rebalance, crash)
loads the latest snapshot from the ``models`` table (:mod:`tables.models`) and continues from there.

Snapshots are pickles, signed with HMAC-SHA256 under ``NUDGE_SECRET``: a pickle runs code when loaded, so a worker
loads only snapshots a worker holding the same secret wrote.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import pickle
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from models import labels
from models.clusters import BehaviourClusters
from models.insight import Effect, LearnCluster
from models.intent import IntentModel, Kind
from models.metrics import log_loss, roc_auc

WINDOW = 2_000
CALIBRATION_BINS = 5


class RollingMetrics:
    """Progressive validation over the last ``window`` resolved samples: the score they had before learning."""

    def __init__(self, window: int = WINDOW) -> None:
        self.resolved: deque[tuple[float, float, bool]] = deque(maxlen=window)

    def add(self, resolved: labels.Resolved) -> None:
        self.resolved.append((resolved.sample.score, resolved.sample.baseline, resolved.label))

    def summary(self) -> dict[str, Any]:
        return summarize(self.resolved)


def summarize(resolved: Iterable[tuple[float, float, bool]]) -> dict[str, Any]:
    """ROC AUC, baseline AUC, log loss and calibration of ``(score, baseline, label)`` triples."""
    rows = list(resolved)
    scores = [r[0] for r in rows]
    outcomes = [r[2] for r in rows]
    return {
        "samples": len(rows),
        "positives": sum(outcomes),
        "auc": _rounded(roc_auc(scores, outcomes)),
        "baseline_auc": _rounded(roc_auc([r[1] for r in rows], outcomes)),
        "log_loss": _rounded(log_loss(scores, outcomes)) if rows else None,
        "calibration": calibration(scores, outcomes),
    }


def calibration(scores: list[float], outcomes: list[bool], bins: int = CALIBRATION_BINS) -> list[dict[str, Any]]:
    """Mean predicted score against the observed purchase rate, per score bin (empty bins left out)."""
    grouped: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for score, outcome in zip(scores, outcomes, strict=True):
        grouped[min(bins - 1, int(score * bins))].append((score, outcome))
    return [
        {
            "range": [round(i / bins, 2), round((i + 1) / bins, 2)],
            "samples": len(group),
            "predicted": round(sum(s for s, _ in group) / len(group), 4),
            "observed": round(sum(o for _, o in group) / len(group), 4),
        }
        for i, group in enumerate(grouped)
        if group
    ]


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


class PartitionModels:
    """Intent model, clusterer and rolling metrics of one partition; satisfies :class:`models.insight.Models`."""

    def __init__(self, partition: int, kind: Kind = "logistic", *, seed: int = 42) -> None:
        self.partition = partition
        self.intent = IntentModel(kind, seed=seed)
        self.clusters = BehaviourClusters(seed=seed)
        self.progress = RollingMetrics()

    @property
    def version(self) -> str:
        return f"p{self.partition}.v{self.intent.version}"

    @property
    def learned(self) -> int:
        """Everything learned so far: a snapshot is worth writing when this moved."""
        return self.intent.version + self.clusters.version

    def score(self, features: Mapping[str, float]) -> float:
        return self.intent.score(features)

    def assign(self, features: Mapping[str, float]) -> int:
        return self.clusters.assign(features)

    def apply(self, effect: Effect) -> None:
        """Carry out a learning effect of :mod:`models.insight`; other effects are not for the models."""
        if isinstance(effect, labels.Resolved):
            self.progress.add(effect)
            self.intent.learn(effect.sample.features, effect.label)
        elif isinstance(effect, LearnCluster):
            self.clusters.learn(effect.features)

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "learned": self.learned,
            "intent": {"kind": self.intent.kind, "learned": self.intent.version, **self.progress.summary()},
            "clusters": self.clusters.describe(),
        }


class SnapshotError(ValueError):
    """A snapshot is not signed with this deployment's secret, or does not hold partition models."""


def encode_snapshot(models: PartitionModels, secret: bytes) -> bytes:
    body = pickle.dumps(models, protocol=pickle.HIGHEST_PROTOCOL)
    return hmac.new(secret, body, hashlib.sha256).digest() + body


def decode_snapshot(data: bytes, secret: bytes) -> PartitionModels:
    signature, body = data[:32], data[32:]
    if not hmac.compare_digest(signature, hmac.new(secret, body, hashlib.sha256).digest()):
        raise SnapshotError("model snapshot signature does not match NUDGE_SECRET: refusing to unpickle it")
    models = pickle.loads(body)
    if not isinstance(models, PartitionModels):
        raise SnapshotError(f"model snapshot holds {type(models).__name__}, not PartitionModels")
    return models
