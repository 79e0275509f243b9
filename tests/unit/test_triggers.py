"""Trigger rules: strict loading, and the pure decisions a shopper's events and the clock lead to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from models.segments import load_segments
from models.triggers import (
    DAY_MS,
    Decision,
    TriggerFileError,
    TriggerSet,
    TriggerState,
    in_holdout,
    load_triggers,
    on_clock,
    on_event,
)
from models.variables import VARIABLES

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_767_225_600_000
MINUTE = 60_000
ALL_CONSENT = {"analytics": True, "personalization": True, "marketing": True}
SEGMENTS = {"category_binge", "cart_waiting"}


def rules(body: str, cap: int = 3) -> TriggerSet:
    return load_triggers(
        f"cap_per_user_per_day: {cap}\ntriggers:\n{body}", source="t.yaml", known=VARIABLES, segments=SEGMENTS
    )


CART_IDLE = """\
  cart_idle:
    when: {inactive: 15m}
    if: cart_items > 0
    message: {title: "Still thinking about {top_cart_item}?", body: "{cart_items} items, {cart_value} in total"}
    consent: marketing
    cooldown: 1h
"""


class Shopper:
    """Feeds events and clock ticks through the trigger transitions, keeping the decisions."""

    def __init__(self, triggers: TriggerSet, user: str = "ann", consent: dict[str, bool] | None = None) -> None:
        self.triggers = triggers
        self.user = user
        self.consent = ALL_CONSENT if consent is None else consent
        self.state = TriggerState()
        self.values: dict[str, Any] = {"cart_items": 0}
        self.decisions: list[Decision] = []

    def event(self, name: str, minute: float, entered: tuple[str, ...] = (), **values: Any) -> list[Decision]:
        self.values.update(values)
        self.state, decided = on_event(
            self.state,
            self.triggers,
            user_id=self.user,
            event=name,
            entered=entered,
            values=self.values,
            consent=self.consent,
            now_ms=T0 + int(minute * MINUTE),
        )
        self.decisions += decided
        return decided

    def tick(self, minute: float) -> list[Decision]:
        self.state, decided = on_clock(
            self.state,
            self.triggers,
            user_id=self.user,
            values=self.values,
            consent=self.consent,
            now_ms=T0 + int(minute * MINUTE),
        )
        self.decisions += decided
        return decided


def test_the_shipped_trigger_file_loads() -> None:
    segments = load_segments((ROOT / "segments.yaml").read_text(), source="segments.yaml", known=VARIABLES)
    loaded = load_triggers(
        (ROOT / "triggers.yaml").read_text(),
        source="triggers.yaml",
        known=VARIABLES,
        segments={s.name for s in segments.segments},
    )
    assert {t.name: t.kind for t in loaded.triggers} == {
        "cart_recovery": "inactive",
        "checkout_rescue": "after",
        "binge_suggestion": "entered",
    }
    assert loaded.cap_per_day == 3


def test_an_idle_cart_fires_once_at_the_deadline_and_a_new_event_rearms_it() -> None:
    shopper = Shopper(rules(CART_IDLE))
    shopper.event("Product Added", 0, cart_items=2, cart_value=59.5, top_cart_item="Red shoes")
    assert shopper.state.due_ms() == T0 + 15 * MINUTE
    shopper.event("Product Viewed", 10)  # activity moves the deadline
    assert shopper.tick(24.9) == []
    [sent] = shopper.tick(25)
    assert (sent.outcome, sent.reason, sent.cause) == ("sent", None, "clock")
    assert sent.title == "Still thinking about Red shoes?" and sent.body == "2 items, 59.50 in total"
    assert sent.values == {"cart_items": 2, "cart_value": 59.5, "top_cart_item": "Red shoes"}
    assert shopper.tick(60) == []  # exactly once per arming
    assert shopper.state.due_ms() is None


def test_the_condition_is_read_when_the_deadline_passes() -> None:
    shopper = Shopper(rules(CART_IDLE))
    shopper.event("Product Added", 0, cart_items=1)
    shopper.event("Order Completed", 5, cart_items=0)  # the cart emptied: inactivity re-armed, condition now false
    assert shopper.tick(30) == []


def test_after_without_within_is_cancelled_by_the_awaited_event() -> None:
    body = """\
  rescue:
    when: {after: Checkout Started, without: Order Completed, within: 2h}
    message: {title: "One step away"}
    consent: marketing
"""
    bought, left = Shopper(rules(body)), Shopper(rules(body))
    for shopper in (bought, left):
        shopper.event("Checkout Started", 0)
    bought.event("Order Completed", 30)
    assert bought.tick(200) == []
    assert [d.trigger for d in left.tick(120)] == ["rescue"]


def test_event_and_segment_triggers_fire_on_the_moment_highest_priority_first() -> None:
    body = """\
  welcome_back:
    when: {event: Product Viewed}
    message: {title: "Welcome back"}
    consent: personalization
    priority: 1
  binge:
    when: {entered: category_binge}
    message: {title: "More {recommended_item}?"}
    consent: personalization
    priority: 5
"""
    shopper = Shopper(rules(body))
    decided = shopper.event("Product Viewed", 0, entered=("category_binge",), recommended_item="boots")
    assert [(d.trigger, d.cause, d.title) for d in decided] == [
        ("binge", "entered category_binge", "More boots?"),
        ("welcome_back", "Product Viewed", "Welcome back"),
    ]


def test_suppression_reasons_consent_cooldown_and_daily_cap() -> None:
    body = (
        CART_IDLE
        + """\
  every_view:
    when: {event: Product Viewed}
    message: {title: "hi"}
    consent: personalization
"""
    )
    no_marketing = Shopper(rules(body), consent={"personalization": True})
    no_marketing.event("Product Added", 0, cart_items=1)
    [refused] = no_marketing.tick(15)
    assert (refused.outcome, refused.reason) == ("suppressed", "consent")

    capped = Shopper(rules(body, cap=2))
    outcomes = [d.reason for m in range(4) for d in capped.event("Product Viewed", m)]
    assert outcomes == [None, None, "daily_cap", "daily_cap"]
    assert capped.decisions[-1].cap == {"counted_today": 2, "limit": 2}
    next_day = capped.event("Product Viewed", DAY_MS / MINUTE)
    assert [d.outcome for d in next_day] == ["sent"]

    cooled = Shopper(rules(CART_IDLE))
    for start in (0, 20, 100):
        cooled.event("Product Added", start, cart_items=1)
        cooled.tick(start + 15)
    assert [d.reason for d in cooled.decisions] == [None, "cooldown", None]


def test_the_holdout_is_fixed_per_user_counts_like_a_send_and_is_near_its_share() -> None:
    body = CART_IDLE.replace("    cooldown: 1h\n", "    cooldown: 1h\n    holdout: 20\n")
    triggers = rules(body)
    control = [u for u in (f"user-{i}" for i in range(5_000)) if in_holdout(u, "cart_idle", 20)]
    assert 900 < len(control) < 1100
    assert all(in_holdout(u, "cart_idle", 20) for u in control[:50])  # deterministic
    shopper = Shopper(triggers, user=control[0])
    shopper.event("Product Added", 0, cart_items=1)
    [held] = shopper.tick(15)
    assert (held.outcome, held.reason, held.arm) == ("suppressed", "holdout", "control")
    shopper.event("Product Added", 20, cart_items=1)
    assert [d.reason for d in shopper.tick(35)] == ["cooldown"]  # "would have sent" counted


def test_message_ids_are_the_same_on_a_replay() -> None:
    first, again = Shopper(rules(CART_IDLE)), Shopper(rules(CART_IDLE))
    for shopper in (first, again):
        shopper.event("Product Added", 0, cart_items=1)
        shopper.tick(15)
    assert first.decisions[0].message_id == again.decisions[0].message_id
    other = Shopper(rules(CART_IDLE), user="bob")
    other.event("Product Added", 0, cart_items=1)
    other.tick(15)
    assert other.decisions[0].message_id != first.decisions[0].message_id


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("  x:\n    when: {inactive: 15m}\n    message: {title: t}\n", "t.yaml:4: trigger 'x': missing 'consent'"),
        (
            "  x:\n    when: {inactive: soon}\n    message: {title: t}\n    consent: marketing\n",
            "t.yaml:4: trigger 'x': 'inactive': expected a duration",
        ),
        (
            "  x:\n    when: {inactive: 90d}\n    message: {title: t}\n    consent: marketing\n",
            "t.yaml:4: trigger 'x': 'inactive': a duration",
        ),
        (
            "  x:\n    when: {event: a, entered: b}\n    message: {title: t}\n    consent: marketing\n",
            "t.yaml:4: trigger 'x': 'when' needs exactly one",
        ),
        (
            "  x:\n    when: {entered: vip}\n    message: {title: t}\n    consent: marketing\n",
            "t.yaml:4: trigger 'x': unknown segment 'vip'",
        ),
        (
            "  x:\n    when: {after: a, within: 1h}\n    message: {title: t}\n    consent: marketing\n",
            "t.yaml:4: trigger 'x': 'when: after' needs 'without'",
        ),
        (
            "  x:\n    when:\n      after: Checkout Started\n      without: Checkout Started\n      within: 1m\n"
            "    message: {title: t}\n    consent: marketing\n",
            "t.yaml:6: trigger 'x': 'without' is the 'after' event 'Checkout Started': it would cancel the deadline",
        ),
        (
            "  x:\n    when: {event: a}\n    message: {title: t}\n    consent: sales\n",
            "t.yaml:6: trigger 'x': consent 'sales'",
        ),
        (
            "  x:\n    when: {event: a}\n    message: {title: '{__class__}'}\n    consent: marketing\n",
            "t.yaml:5: trigger 'x': title: unknown placeholder",
        ),
        (
            "  x:\n    when: {event: a}\n    message: {title: '{cart_value.real}'}\n    consent: marketing\n",
            "t.yaml:5: trigger 'x': title: placeholder",
        ),
        (
            "  x:\n    when: {event: a}\n    message: {title: '{cart_value!r}'}\n    consent: marketing\n",
            "t.yaml:5: trigger 'x': title: placeholder",
        ),
        (
            "  x:\n    when: {event: a}\n    message: {title: 'oops {'}\n    consent: marketing\n",
            "t.yaml:5: trigger 'x': title:",
        ),
        (
            "  x:\n    when: {event: a}\n    if: __import__('os')\n    message: {title: t}\n    consent: marketing\n",
            "t.yaml:5: trigger 'x': 'if':",
        ),
        (
            "  x:\n    when: {event: a}\n    if: cart_items > '0'\n    message: {title: t}\n    consent: marketing\n",
            "t.yaml:5: trigger 'x': 'if': cart_items is a number but '0' is text",
        ),
        (
            "  x:\n    when: {inactive: 15m}\n    if: event in 5\n    message: {title: t}\n    consent: marketing\n",
            "t.yaml:5: trigger 'x': 'if': 'in' needs a list on its right",
        ),
        (
            "  x:\n    when: {event: a}\n    if: intent == null\n    message: {title: t}\n    consent: marketing\n",
            "t.yaml:5: trigger 'x': 'if': 'intent == null' is never true",
        ),
        (
            "  x:\n    when: {event: a}\n    message: {title: t}\n    consent: marketing\n    holdout: 150\n",
            "t.yaml:7: trigger 'x': 'holdout' is a percentage",
        ),
        (
            "  x:\n    when: {event: a}\n    message: {title: t}\n    consent: marketing\n    priority: 0x10\n",
            "t.yaml:7: trigger 'x': 'priority': expected a whole number",
        ),
        (
            "  x:\n    when: {event: a}\n    message: {title: t}\n    consent: marketing\n    colour: red\n",
            "t.yaml:7: trigger 'x': unknown key 'colour'",
        ),
        (
            "  bad name:\n    when: {event: a}\n    message: {title: t}\n    consent: marketing\n",
            "t.yaml:3: trigger 'bad name': a name",
        ),
    ],
)
def test_a_bad_trigger_is_refused_with_its_line_and_reason(body: str, reason: str) -> None:
    with pytest.raises(TriggerFileError) as refused:
        rules(body)
    assert str(refused.value).startswith(reason), str(refused.value)


def test_an_if_condition_mixing_text_and_number_variables_loads() -> None:
    body = CART_IDLE.replace(
        "if: cart_items > 0", "if: event != 'Order Completed' and cart_items > 0 and intent != null"
    )
    [trigger] = rules(body).triggers
    assert trigger.condition is not None
    assert trigger.condition.holds({"event": "", "cart_items": 2, "intent": 0.4})
    assert not trigger.condition.holds({"event": "", "cart_items": 2})


def test_file_level_refusals() -> None:
    with pytest.raises(TriggerFileError, match=r"^t.yaml:1: missing 'triggers'"):
        load_triggers("cap_per_user_per_day: 3\n", source="t.yaml", known=VARIABLES, segments=SEGMENTS)
    with pytest.raises(TriggerFileError, match=r"^t.yaml:1: cap_per_user_per_day: expected 0..1000"):
        load_triggers("cap_per_user_per_day: -1\ntriggers: {}\n", source="t.yaml", known=VARIABLES, segments=SEGMENTS)
    with pytest.raises(TriggerFileError, match=r"^t.yaml:2: unknown top-level key 'trigers'"):
        load_triggers("triggers: {}\ntrigers: {}\n", source="t.yaml", known=VARIABLES, segments=SEGMENTS)
