"""Hostile money in valid events: folded into finite state, never an exception on the worker's path.

Each event goes the way the ingest agent takes it (:meth:`app.pipeline.Pipeline.process`): ``split_record`` ->
``record_steps`` -> ``on_event`` with real partition models and the shipped rule files, the tables kept as changelog
bytes between records (as after a restart), and the clock for the triggers the events arm.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.codecs import decode_insight, decode_profile, encode_insight, encode_profile
from app.events import iso_from_ms, to_event
from app.records import split_record
from app.rules import Rules
from models.insight import Effect, Insight, SegmentChange, on_clock, on_event
from models.labels import Resolved
from models.partition import PartitionModels
from models.triggers import Decision
from tables.profile import CartItem, Profile, record_steps

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_767_225_600_000
MINUTE = 60_000
HORIZON = 30 * MINUTE
USER = "u1"
#: The default consent is opt-in: the audited events grant what scoring needs, not marketing.
SCORED = {"analytics": True, "personalization": True}
MESSAGE_IDS = itertools.count()


def track(name: str, minute: float, *, consent: dict[str, bool] = SCORED, **properties: Any) -> dict[str, Any]:
    ts = T0 + int(minute * MINUTE)
    return {
        "type": "track",
        "event": name,
        "userId": USER,
        "messageId": f"m-{next(MESSAGE_IDS)}",
        "timestamp": iso_from_ms(ts),
        "properties": properties,
        "context": {"consent": {"categoryPreferences": consent}},
    }


class Worker:
    """One partition of the worker: its profile and insight tables hold changelog bytes, decoded for each record."""

    def __init__(self) -> None:
        self.models = PartitionModels(0)
        self.rules = Rules(ROOT / "segments.yaml", ROOT / "content.yaml", ROOT / "triggers.yaml").current()
        self.profiles: dict[str, bytes] = {}
        self.insights: dict[str, bytes] = {}
        self.offsets = itertools.count()
        self.decisions: list[Decision] = []
        self.resolved: list[Resolved] = []

    def profile(self) -> Profile:
        return decode_profile(self.profiles[USER])

    def insight(self) -> Insight:
        return decode_insight(self.insights[USER])

    def send(self, *events: dict[str, Any]) -> None:
        offset = next(self.offsets)
        plan = split_record(
            orjson.dumps({"batch": list(events)}), partition=0, partitions=1, now_ms=T0 + HORIZON, secret=b"s" * 32
        )
        assert plan.rejects == []
        for user_id, user_events in plan.by_user.items():
            stored = self.profiles.get(user_id)
            steps = record_steps(
                None if stored is None else decode_profile(stored),
                user_id,
                user_events,
                partition=0,
                offset=offset,
                default_consent=self.rules.default_consent,
            )
            insight = decode_insight(self.insights[user_id]) if user_id in self.insights else None
            for step in steps:
                insight, effects = on_event(
                    insight,
                    step.before,
                    step.after,
                    step.event,
                    models=self.models,
                    rules=self.rules,
                    horizon_ms=HORIZON,
                )
                self._carry_out(effects)
            self.profiles[user_id] = encode_profile(steps[-1].after)
            assert insight is not None
            self.insights[user_id] = encode_insight(insight)

    def tick(self, minute: float) -> None:
        now = T0 + int(minute * MINUTE)
        insight, effects = on_clock(self.insight(), self.profile(), now, rules=self.rules, horizon_ms=HORIZON)
        self._carry_out(effects)
        self.insights[USER] = encode_insight(insight)

    def _carry_out(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Decision):
                self.decisions.append(effect)
            elif not isinstance(effect, SegmentChange):
                if isinstance(effect, Resolved):
                    self.resolved.append(effect)
                self.models.apply(effect)


def cart_recovery(worker: Worker) -> Decision:
    [decision] = [d for d in worker.decisions if d.trigger == "cart_recovery"]
    return decision


def test_a_huge_price_is_ignored_and_the_shopper_is_scored_and_learned_from() -> None:
    worker = Worker()
    worker.send(track("Product Added", 0, product_id="p1", price=1e308, quantity=2))

    profile = worker.profile()
    assert profile.cart["p1"] == CartItem("p1", 2, 0.0)
    assert profile.cart_value == 0.0
    assert worker.insight().intent is not None and worker.insight().pending

    worker.send(track("Order Completed", 5, revenue=30.0))
    assert worker.profile().revenue == 30.0
    assert [r.label for r in worker.resolved] == [True]


@pytest.mark.parametrize(
    ("consent", "products"),
    [
        ({**SCORED, "personalization": False}, [("p1", 1e308)]),
        (SCORED, [("p1", -1e308)]),
        (SCORED, [("p1", 1e308), ("p2", -1e308)]),
    ],
    ids=["unscored", "negative", "inf-minus-inf"],
)
def test_a_cart_of_hostile_prices_fires_its_recovery_message_with_a_finite_value(
    consent: dict[str, bool], products: list[tuple[str, float]]
) -> None:
    worker = Worker()
    worker.send(
        *(track("Product Added", 0, consent=consent, product_id=p, price=price, quantity=2) for p, price in products)
    )
    worker.tick(16)
    assert cart_recovery(worker).body.startswith(f"Your cart holds {2 * len(products)} items worth 0.")


def test_an_order_of_huge_prices_keeps_revenue_finite_through_the_changelog() -> None:
    worker = Worker()
    worker.send(track("Order Completed", 0, products=[{"price": 1e308, "quantity": 2}]))
    worker.send(track("Order Completed", 1, revenue=12.5))
    assert (worker.profile().orders, worker.profile().revenue) == (2, 12.5)


@pytest.mark.parametrize(
    ("properties", "revenue"),
    [
        ({"revenue": 1e308, "total": 40.0}, 40.0),
        ({"revenue": -5.0, "total": 1e13}, 0.0),
        ({"products": [{"price": 1e12, "quantity": 3}, {"price": 1e12 + 1}]}, 3e12),
    ],
    ids=["huge-revenue", "negative-and-huge-total", "products"],
)
def test_order_money_outside_0_to_1e12_is_ignored(properties: dict[str, Any], revenue: float) -> None:
    worker = Worker()
    worker.send(track("Order Completed", 0, **properties))
    assert worker.profile().revenue == revenue


def test_state_stored_before_money_was_bounded_is_scored_and_rendered_without_raising() -> None:
    """A profile held in memory with an infinite cart value and revenue (the codec would read them back as 0)."""
    worker = Worker()
    worker.send(track("Product Added", 0, consent={**SCORED, "marketing": True}, product_id="p1", price=10.0))
    hostile = replace(worker.profile(), cart={"p1": CartItem("p1", 2, 1e308)}, revenue=math.inf)
    assert hostile.cart_value == math.inf
    viewed = to_event(track("Cart Viewed", 1), now_ms=T0 + HORIZON)

    insight, _ = on_event(
        worker.insight(), hostile, hostile, viewed, models=worker.models, rules=worker.rules, horizon_ms=HORIZON
    )
    features = insight.pending[-1].features
    assert (features["is_cart_view"], features["cart_value_log"], features["revenue_log"]) == (1.0, 0.0, 0.0)

    _, effects = on_clock(insight, hostile, T0 + 20 * MINUTE, rules=worker.rules, horizon_ms=HORIZON)
    [decision] = [e for e in effects if isinstance(e, Decision) and e.trigger == "cart_recovery"]
    assert decision.body.startswith("Your cart holds 2 items worth . ")
