"""``nudge eval``: the intent model's quality on real data, by progressive validation (score before learning).

UCI Online Shoppers: one row is one finished session (label ``Revenue``); rows are shuffled with a fixed seed and
streamed through the same model class, with session-summary features (:func:`uci_features`). Baseline: PageValues.

REES46: the events are folded into profiles with the pipeline's own fold, scored with its own features and model at
every browsing event, and labelled late (a purchase by the same user within the horizon, else negative), exactly as
the live system does. Baseline: "has a cart in this session". Samples whose horizon runs past the end of the sample
are left out (their label is unknown).
"""

from __future__ import annotations

import csv
import heapq
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.events import to_event
from app.replay import rees46_events
from models import labels
from models.features import features, product_seen_before
from models.intent import IntentModel, Kind
from models.metrics import log_loss, roc_auc
from tables.profile import Profile, fold

SCORED_EVENTS = frozenset({"Product Viewed", "Product Added", "Product Removed", "Cart Viewed", "Checkout Started"})
PURCHASE = "Order Completed"
FAR_FUTURE_MS = 4_102_444_800_000


@dataclass
class Progressive:
    """(score, baseline, label) of every resolved sample, in the order labels arrived."""

    scores: list[float] = field(default_factory=list)
    baselines: list[float] = field(default_factory=list)
    outcomes: list[bool] = field(default_factory=list)

    def add(self, resolved: labels.Resolved) -> None:
        self.scores.append(resolved.sample.score)
        self.baselines.append(resolved.sample.baseline)
        self.outcomes.append(resolved.label)

    def summary(self) -> dict[str, Any]:
        return {
            "intent_auc": round(roc_auc(self.scores, self.outcomes), 4),
            "baseline_auc": round(roc_auc(self.baselines, self.outcomes), 4),
            "log_loss": round(log_loss(self.scores, self.outcomes), 4),
            "scored": len(self.outcomes),
            "positives": sum(self.outcomes),
        }


def evaluate_rees46(path: str | Path, *, horizon_ms: int = 300_000, kind: Kind = "logistic") -> dict[str, Any]:
    model = IntentModel(kind)
    profiles: dict[str, Profile] = {}
    pending: dict[str, tuple[labels.Sample, ...]] = {}
    deadlines: list[tuple[int, str]] = []
    progress = Progressive()

    def learn(resolved: list[labels.Resolved]) -> None:
        for item in resolved:
            progress.add(item)
            model.learn(item.sample.features, item.label)

    for raw in rees46_events(path):
        event = to_event(raw, now_ms=FAR_FUTURE_MS)
        now = event.timestamp_ms
        while deadlines and deadlines[0][0] < now:
            _, user = heapq.heappop(deadlines)
            pending[user], expired = labels.expire(pending.get(user, ()), now, horizon_ms)
            learn(expired)
        before = profiles.get(event.user_id)
        seen = product_seen_before(before, event)
        profile = fold(before or Profile(user_id=event.user_id), event)
        profiles[event.user_id] = profile
        if event.name == PURCHASE:
            pending[event.user_id], bought = labels.on_purchase(pending.get(event.user_id, ()), now, horizon_ms)
            learn(bought)
        elif event.name in SCORED_EVENTS:
            x = features(profile, event, seen_before=seen)
            sample = labels.Sample(now, x, score=model.score(x), baseline=has_cart_this_session(profile))
            pending[event.user_id] = labels.add(pending.get(event.user_id, ()), sample)
            heapq.heappush(deadlines, (now + horizon_ms, event.user_id))
    return progress.summary()


def has_cart_this_session(profile: Profile) -> float:
    """The heuristic baseline: 1 if the cart holds something changed during the current session."""
    session = profile.session
    changed = profile.cart_changed_ms
    return 1.0 if profile.cart and session and changed and changed >= session.started_ms else 0.0


_MONTHS = {
    m: float(i)
    for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "June", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"))
}


def uci_features(row: dict[str, str]) -> dict[str, float]:
    """Session-summary features of one UCI row: heavy-tailed counts and durations log1p-compressed."""
    return {
        "page_values_log": math.log1p(float(row["PageValues"])),
        "exit_rate": float(row["ExitRates"]),
        "bounce_rate": float(row["BounceRates"]),
        "product_pages_log": math.log1p(float(row["ProductRelated"])),
        "product_seconds_log": math.log1p(max(float(row["ProductRelated_Duration"]), 0.0)),
        "admin_pages_log": math.log1p(float(row["Administrative"])),
        "admin_seconds_log": math.log1p(max(float(row["Administrative_Duration"]), 0.0)),
        "month": _MONTHS.get(row["Month"], -1.0),
        "new_visitor": 1.0 if row["VisitorType"] == "New_Visitor" else 0.0,
    }


def evaluate_uci(path: str | Path, *, kind: Kind = "logistic", seed: int = 42) -> dict[str, Any]:
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    random.Random(seed).shuffle(rows)
    model = IntentModel(kind)
    progress = Progressive()
    for row in rows:
        x = uci_features(row)
        label = row["Revenue"] == "TRUE"
        sample = labels.Sample(0, x, score=model.score(x), baseline=float(row["PageValues"]))
        progress.add(labels.Resolved(sample, label))
        model.learn(x, label)
    return progress.summary()
