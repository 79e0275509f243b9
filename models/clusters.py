"""Behavioural clusters of users, learned online: who buys often, who only browses, who bought once and left.

``cluster_features(profile, now_ms)`` turns a profile into six numbers in plain units; ``BehaviourClusters`` learns
one such snapshot at a time (``learn``), places a user without learning (``assign``) and says in words what each
cluster is (``describe``). Like every Nudge model it keeps River's small contract: it pickles, never mutates its
input, tolerates missing and unknown features, and two instances with the same seed fed the same stream agree.

| feature | meaning (plain units) |
|---|---|
| ``days_since_order`` | days since the last order; never ordered: days since first seen; at most 365 |
| ``orders`` | orders completed |
| ``revenue`` | total revenue of those orders |
| ``sessions`` | sessions started |
| ``views_per_session`` | product views per session (``Product Viewed`` count / max(1, sessions)) |
| ``cart_abandonment`` | share of adds to cart not followed by an order: max(0, 1 - orders / adds), 0 without adds |
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from river import cluster, preprocessing

from models.features import DAY_MS
from tables.profile import Profile

FEATURES: tuple[str, ...] = (
    "days_since_order",
    "orders",
    "revenue",
    "sessions",
    "views_per_session",
    "cart_abandonment",
)
#: Counts, money and durations are heavy-tailed: clustered on log1p. A share in [0, 1] is already compact.
_LOG_COMPRESSED = frozenset(FEATURES) - {"cart_abandonment"}
MAX_DAYS = 365.0
#: How far the winning centre moves towards each snapshot (River calls it ``halflife``). A constant step rather than
#: 1/n: the running scaler keeps moving under the centres, and a constant step lets them follow. 0.02 averages over
#: roughly the last 50 snapshots of a cluster: steady centres, still tracking drift.
CENTRE_STEP = 0.02
#: Snapshots held before the centres are seeded, per cluster; the scaler has settled a little by then.
WARMUP_PER_CLUSTER = 8
#: Replaying one repeated snapshot more often than this moves a centre no further (0.98 ** 250 < 1 %).
_MAX_REPLAY = 250
#: A cluster is named for a feature when its mean is this much above or below the overall mean (relative).
NOTABLE_DIFFERENCE = 0.25
#: The words for a cluster mean above / below the overall mean, in the order a summary lists them.
_WORDS: dict[str, tuple[str, str]] = {
    "orders": ("frequent", "occasional"),
    "revenue": ("high-value", "low-value"),
    "days_since_order": ("lapsed", "recent"),
    "sessions": ("loyal", "new"),
    "views_per_session": ("browsing-heavy", "focused"),
    "cart_abandonment": ("high cart abandonment", "low cart abandonment"),
}
_DIGITS = {
    "days_since_order": 1,
    "orders": 2,
    "revenue": 2,
    "sessions": 1,
    "views_per_session": 1,
    "cart_abandonment": 2,
}


def cluster_features(profile: Profile, now_ms: int) -> dict[str, float]:
    """The snapshot of ``profile`` at ``now_ms`` that :class:`BehaviourClusters` learns from, in plain units."""
    since_ms = profile.last_order_ms or profile.first_seen_ms or now_ms
    views = profile.event_counts.get("Product Viewed", 0)
    adds = profile.event_counts.get("Product Added", 0)
    return {
        "days_since_order": min(MAX_DAYS, max(0.0, (now_ms - since_ms) / DAY_MS)),
        "orders": float(profile.orders),
        "revenue": float(profile.revenue),
        "sessions": float(profile.sessions),
        "views_per_session": views / max(1, profile.sessions),
        "cart_abandonment": max(0.0, 1.0 - profile.orders / adds) if adds > 0 else 0.0,
    }


@dataclass
class _RunningMeans:
    """Means in plain units of the snapshots added, per feature (a snapshot may lack some)."""

    users: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)

    def add(self, plain: Mapping[str, float], weight: int = 1) -> None:
        self.users += weight
        for name, value in plain.items():
            count = self.counts.get(name, 0) + weight
            mean = self.means.get(name, 0.0)
            self.counts[name] = count
            self.means[name] = mean + weight * (value - mean) / count


@dataclass
class _Pending:
    """A distinct snapshot seen before the centres were seeded, and how many times it was learned."""

    plain: dict[str, float]
    compressed: dict[str, float]
    times: int = 0


class BehaviourClusters:
    """Online k-means over user snapshots from :func:`cluster_features`.

    River's ``StandardScaler`` then ``cluster.KMeans``, on log1p-compressed features (see ``FEATURES``): money and
    counts are heavy-tailed, so unscaled revenue would drown every other feature and a few big spenders would take a
    cluster of their own. ``KMeans`` rather than ``STREAMKMeans``, ``CluStream`` or ``DBSTREAM``: a fixed number of
    clusters is what a marketer can name and target, and it costs about 14 µs per ``learn``, 9 µs per ``assign``.

    River seeds its centres at random, N(0, 1) per feature, drawn lazily in set order (so the same seed differs
    between processes); on three clear behaviours a third to a half of seeded runs left a centre unused and merged
    two behaviours. So the first ``8 x n_clusters`` snapshots are held back (the scaler settles meanwhile), the
    centres are seeded from them with greedy k-means++ on this class's own seeded RNG, the held snapshots are
    replayed, and from there each ``learn`` moves the nearest centre by ``CENTRE_STEP``. Until then every snapshot is
    cluster 0; it is re-counted where it belongs once seeded (held back longer while fewer than ``n_clusters``
    distinct snapshots have been seen, so no two centres start equal).

    Missing features count as average; unknown ones are ignored; negative values count as 0, non-finite as missing.
    ``describe()`` gives each cluster's means in plain units and a summary in words, relative to the overall means.
    """

    def __init__(self, n_clusters: int = 4, *, seed: int = 42) -> None:
        if n_clusters < 1:
            raise ValueError(f"n_clusters must be at least 1, not {n_clusters}")
        self.n_clusters = n_clusters
        self.seed = seed
        self.version = 0
        self._rng = random.Random(seed)
        self._scaler = preprocessing.StandardScaler()
        self._kmeans = cluster.KMeans(n_clusters=n_clusters, halflife=CENTRE_STEP, seed=seed)
        self._seeded = False
        self._pending: dict[tuple[tuple[str, float], ...], _Pending] = {}
        self._overall = _RunningMeans()
        self._clusters = [_RunningMeans() for _ in range(n_clusters)]

    def assign(self, features: Mapping[str, float]) -> int:
        """The cluster of a snapshot, learning nothing; 0 until the centres are seeded."""
        if not self._seeded:
            return 0
        return int(self._kmeans.predict_one(self._scaler.transform_one(_compress(_plain(features)))))

    def learn(self, features: Mapping[str, float]) -> int:
        """Learn one user snapshot and return its cluster."""
        plain = _plain(features)
        compressed = _compress(plain)
        self._scaler.learn_one(compressed)
        self._overall.add(plain)
        self.version += 1
        if self._seeded:
            return self._learn_scaled(plain, self._scaler.transform_one(compressed))
        key = tuple(sorted(compressed.items()))
        pending = self._pending.setdefault(key, _Pending(plain, compressed))
        pending.times += 1
        self._clusters[0].add(plain)
        if self.version >= WARMUP_PER_CLUSTER * self.n_clusters and len(self._pending) >= self.n_clusters:
            return self._seed_centres()[key]
        return 0

    def describe(self) -> list[dict[str, Any]]:
        """Per cluster: its number, the snapshots learned into it, its means in plain units and a summary."""
        overall = self._overall.means
        return [
            {
                "cluster": i,
                "users": stats.users,
                "means": {name: round(stats.means[name], _DIGITS[name]) for name in FEATURES if name in stats.means},
                "summary": _summary(stats.means, overall) if stats.users else "empty",
            }
            for i, stats in enumerate(self._clusters)
        ]

    def _learn_scaled(self, plain: Mapping[str, float], scaled: dict[str, float], weight: int = 1) -> int:
        index = 0
        for _ in range(min(weight, _MAX_REPLAY)):
            index = int(self._kmeans.learn_predict_one(scaled))
        self._clusters[index].add(plain, weight)
        return index

    def _seed_centres(self) -> dict[tuple[tuple[str, float], ...], int]:
        """Seed the centres from the held snapshots and replay them; returns the cluster of each."""
        pending = list(self._pending.values())
        points = [self._scaler.transform_one(p.compressed) for p in pending]
        weights = [p.times for p in pending]
        seeds = _kmeans_plus_plus(points, weights, self.n_clusters, self._rng)
        for centre, point in zip(self._kmeans.centers.values(), seeds, strict=True):
            # Every feature gets a value now, so River never draws a random one (its draw order follows set order).
            centre.update({name: point.get(name, 0.0) for name in FEATURES})
        self._clusters = [_RunningMeans() for _ in range(self.n_clusters)]
        placed = {
            key: self._learn_scaled(entry.plain, point, entry.times)
            for (key, entry), point in zip(self._pending.items(), points, strict=True)
        }
        self._pending = {}
        self._seeded = True
        return placed


def _plain(features: Mapping[str, float]) -> dict[str, float]:
    plain = {}
    for name in FEATURES:
        value = features.get(name)
        if isinstance(value, (int, float)) and math.isfinite(value):
            plain[name] = max(0.0, float(value))
    return plain


def _compress(plain: Mapping[str, float]) -> dict[str, float]:
    return {name: math.log1p(value) if name in _LOG_COMPRESSED else value for name, value in plain.items()}


def _kmeans_plus_plus(
    points: list[dict[str, float]], weights: list[int], k: int, rng: random.Random
) -> list[dict[str, float]]:
    """Greedy k-means++ (as scikit-learn): each next centre is the best of a few D²-weighted draws."""
    centres = [rng.choices(points, weights)[0]]
    nearest = [w * _distance(p, centres[0]) for p, w in zip(points, weights, strict=True)]
    tries = 2 + int(math.log(k))
    while len(centres) < k:
        draws = [rng.choices(points, nearest)[0] if sum(nearest) > 0 else rng.choice(points) for _ in range(tries)]
        options = [
            [min(d, w * _distance(p, c)) for p, w, d in zip(points, weights, nearest, strict=True)] for c in draws
        ]
        best = min(range(tries), key=lambda i: sum(options[i]))
        centres.append(draws[best])
        nearest = options[best]
    return centres


def _distance(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    return sum((a.get(name, 0.0) - b.get(name, 0.0)) ** 2 for name in FEATURES)


def _summary(means: Mapping[str, float], overall: Mapping[str, float]) -> str:
    words = []
    for name, (above, below) in _WORDS.items():
        mean, reference = means.get(name), overall.get(name)
        if mean is None or not reference:
            continue
        difference = (mean - reference) / reference
        if abs(difference) > NOTABLE_DIFFERENCE:
            words.append(above if difference > 0 else below)
    return ", ".join(words) or "typical"
