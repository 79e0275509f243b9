"""Fold -> variables -> segments: users enter and leave declared segments as their events arrive."""

from __future__ import annotations

from pathlib import Path

from app.events import Event
from models.segments import load_segments, transitions
from models.variables import CLOCK_VARIABLES, VARIABLES, next_change, variables
from tables.profile import Profile, fold

T0 = 1_767_225_600_000
MINUTE = 60_000
SEGMENTS_FILE = Path(__file__).resolve().parents[2] / "segments.yaml"


def event(name: str, minute: float, **props: object) -> Event:
    ts = T0 + int(minute * MINUTE)
    return Event("track", name, "u1", f"m-{name}-{ts}", ts, props, {"sessionId": "s1"})


def test_the_shipped_segment_file_loads() -> None:
    loaded = load_segments(SEGMENTS_FILE.read_text(), source=str(SEGMENTS_FILE), known=VARIABLES)
    assert {s.name for s in loaded.segments} == {
        "category_binge",
        "frequent_high_value",
        "new_visitor_browsing",
        "cart_waiting",
    }


def test_a_shopper_enters_and_leaves_segments_as_events_arrive() -> None:
    segments = load_segments(SEGMENTS_FILE.read_text(), source="segments.yaml", known=VARIABLES)
    profile = Profile(user_id="u1")
    members: frozenset[str] = frozenset()
    history: list[tuple[str, list[str], list[str]]] = []
    journey = [event("Product Viewed", i, product_id=f"p{i}", category="shoes") for i in range(6)]
    journey += [
        event("Product Added", 7, product_id="p1", price=80.0),
        event("Product Viewed", 130, product_id="p9", category="bags"),
        event("Order Completed", 131, revenue=80.0),
    ]
    for step in journey:
        profile = fold(profile, step)
        now = segments.memberships(variables(profile, now_ms=step.timestamp_ms, event=step.name))
        entered, exited = transitions(members, now)
        if entered or exited:
            history.append((f"{step.name}@{(step.timestamp_ms - T0) // MINUTE}", entered, exited))
        members = now
    assert history == [
        ("Product Viewed@5", ["category_binge"], []),  # the 6th view of shoes in this session
        ("Product Added@7", ["new_visitor_browsing"], []),  # first session, over 5 minutes, no order
        ("Product Viewed@130", ["cart_waiting"], []),  # cart untouched for 123 minutes
        ("Order Completed@131", [], ["cart_waiting", "new_visitor_browsing"]),
    ]


def test_every_variable_is_documented_and_produced() -> None:
    profile = fold(Profile(user_id="u1"), event("Order Completed", 0, revenue=10.0))
    profile = fold(profile, event("Product Added", 1, product_id="p", price=3.0))
    produced = variables(profile, now_ms=T0 + 2 * MINUTE, event="Cart Viewed", intent=0.3, cluster=1)
    assert set(produced) == set(VARIABLES)
    assert produced["minutes_since_cart_change"] == 1.0
    assert produced["minutes_since_seen"] == 1.0
    assert produced["days_since_order"] == 2 / 1440


def test_next_change_is_when_a_clock_variable_crosses_a_threshold() -> None:
    profile = fold(Profile(user_id="u1"), event("Product Added", 10, product_id="p", price=3.0))
    thresholds = {"minutes_since_cart_change": [120.0, 15.0], "days_since_order": [30.0]}
    assert next_change(profile, thresholds, T0 + 10 * MINUTE) == T0 + 25 * MINUTE + 1
    assert next_change(profile, thresholds, T0 + 25 * MINUTE + 1) == T0 + 130 * MINUTE + 1
    assert next_change(profile, thresholds, T0 + 131 * MINUTE) is None  # past every threshold; no order ever
    emptied = fold(profile, event("Product Removed", 11, product_id="p"))
    assert next_change(emptied, thresholds, T0 + 11 * MINUTE) is None  # no cart, no cart clock


def test_the_segment_file_lists_the_thresholds_of_clock_variables() -> None:
    segments = load_segments(
        "segments:\n  idle:\n    when: cart_items > 0 and 15 <= minutes_since_cart_change < 60 or views > 3\n",
        source="s.yaml",
        known=VARIABLES,
        clock=CLOCK_VARIABLES,
    )
    assert segments.clock_thresholds == {"minutes_since_cart_change": frozenset({15.0, 60.0})}
