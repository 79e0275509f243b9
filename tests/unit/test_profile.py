"""The profile fold as a user of the API would see it, its idempotency guard and its bounded memory."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterable
from typing import Any

import pytest

from app.codecs import decode_profile, encode_profile
from app.events import Event
from tables.profile import (
    AFFINITY_HALF_LIFE_MS,
    MAX_CART_ITEMS,
    MAX_CATEGORIES,
    MAX_EVENT_NAMES,
    MAX_RECENT_ITEMS,
    MAX_SEEN_IDS,
    CartItem,
    Profile,
    Session,
    decayed_affinity,
    fold,
    record_steps,
)


def apply_record(
    profile: Profile | None, user_id: str, events: list[Event], *, partition: int, offset: int
) -> Profile | None:
    """The profile the worker stores for one record, or ``None`` when the record changes nothing."""
    steps = record_steps(profile, user_id, events, partition=partition, offset=offset, default_consent=EVERYTHING)
    return steps[-1].after if steps else None


EVERYTHING = {"analytics": True, "personalization": True, "marketing": True}
T0 = 1_772_366_400_000  # 2026-03-01T12:00:00Z
MINUTE = 60 * 1000
HALF_LIFE = AFFINITY_HALF_LIFE_MS
_ids = itertools.count()


def ev(
    name: str,
    ts: int = T0,
    props: dict[str, Any] | None = None,
    *,
    session: str | None = None,
    message_id: str | None = None,
    user: str = "user-1",
    type_: str = "track",
) -> Event:
    """A validated event as the fold receives it; every event gets a fresh messageId unless one is given."""
    return Event(
        type=type_,
        name=name,
        user_id=user,
        message_id=message_id or f"msg-{next(_ids)}",
        timestamp_ms=ts,
        properties=props or {},
        context={"sessionId": session} if session else {},
    )


def view(product_id: str, category: str | None = None, ts: int = T0, **kw: Any) -> Event:
    props: dict[str, Any] = {"product_id": product_id}
    if category is not None:
        props["category"] = category
    return ev("Product Viewed", ts, props, **kw)


def add(product_id: str, ts: int = T0, *, message_id: str | None = None, **props: Any) -> Event:
    return ev("Product Added", ts, {"product_id": product_id, **props}, message_id=message_id)


def remove(product_id: str, ts: int = T0, **props: Any) -> Event:
    return ev("Product Removed", ts, {"product_id": product_id, **props})


def order(ts: int = T0, **props: Any) -> Event:
    return ev("Order Completed", ts, props)


def fold_all(events: Iterable[Event], profile: Profile | None = None) -> Profile:
    profile = profile or Profile(user_id="user-1")
    for event in events:
        profile = fold(profile, event)
    return profile


def rich_profile() -> Profile:
    """A profile with something in every field: a session, a cart, orders, affinity and seen ids."""
    events = [
        view("p1", "shoes", T0, session="s-1"),
        view("p2", "bags", T0 + MINUTE, session="s-1"),
        add("p1", T0 + 2 * MINUTE, price=49.9, quantity=2, category="shoes"),
        order(T0 + 3 * MINUTE, revenue=99.8, products=[{"product_id": "p1", "category": "shoes"}]),
        add("p2", T0 + 4 * MINUTE, price=20.0, category="bags"),
        ev("Page Viewed", T0 + 5 * MINUTE, type_="page"),
    ]
    profile: Profile | None = None
    for offset, event in enumerate(events):
        profile = apply_record(profile, "user-1", [event], partition=3, offset=offset) or profile
    assert profile is not None
    return profile


# --- counts, first and last seen --------------------------------------------------------------------------------


def test_events_are_counted_by_name() -> None:
    profile = fold_all([view("p1"), view("p2"), ev("Page Viewed", type_="page"), add("p1")])
    assert profile.event_counts == {"Product Viewed": 2, "Page Viewed": 1, "Product Added": 1}


def test_first_and_last_seen_survive_out_of_order_events() -> None:
    profile = fold_all([ev("A", T0 + 10 * MINUTE), ev("B", T0), ev("C", T0 + 20 * MINUTE), ev("D", T0 + MINUTE)])
    assert profile.first_seen_ms == T0
    assert profile.last_seen_ms == T0 + 20 * MINUTE


# --- sessions ---------------------------------------------------------------------------------------------------


def test_sessions_split_after_30_minutes_of_inactivity() -> None:
    profile = fold_all([ev("A", T0), ev("B", T0 + 29 * MINUTE), ev("C", T0 + 60 * MINUTE)])
    assert profile.sessions == 2
    assert profile.session is not None
    assert profile.session.started_ms == T0 + 60 * MINUTE
    assert profile.session.events == 1


def test_events_less_than_30_minutes_apart_stay_in_one_session() -> None:
    profile = fold_all(ev("A", T0 + i * 25 * MINUTE) for i in range(6))  # two hours, never a 30-minute gap
    assert profile.sessions == 1
    assert profile.session is not None
    assert (profile.session.started_ms, profile.session.last_ms, profile.session.events) == (
        T0,
        T0 + 125 * MINUTE,
        6,
    )


def test_explicit_session_id_decides_over_the_clock() -> None:
    """A new sessionId starts a session a minute later; the same sessionId continues one after two hours."""
    profile = fold_all(
        [
            ev("A", T0, session="s-1"),
            ev("B", T0 + MINUTE, session="s-2"),
            ev("C", T0 + 120 * MINUTE, session="s-2"),
        ]
    )
    assert profile.sessions == 2
    assert profile.session is not None
    assert profile.session.id == "s-2"
    assert profile.session.events == 2


def test_category_views_are_counted_per_session_and_reset_in_a_new_one() -> None:
    first = fold_all([view("p1", "shoes"), view("p2", "shoes", T0 + MINUTE), view("p3", "bags", T0 + 2 * MINUTE)])
    assert first.session is not None
    assert first.session.category_views == {"shoes": 2, "bags": 1}
    second = fold(first, view("p4", "shoes", T0 + 3 * 60 * MINUTE))
    assert second.session is not None
    assert second.session.category_views == {"shoes": 1}


def test_only_product_views_count_as_category_views() -> None:
    profile = fold_all([add("p1", category="shoes"), view("p2", "bags")])
    assert profile.session is not None
    assert profile.session.category_views == {"bags": 1}


# --- cart and orders --------------------------------------------------------------------------------------------


def test_adding_the_same_product_accumulates_quantity_and_keeps_the_price() -> None:
    profile = fold_all([add("p1", T0, price=10.0, quantity=2), add("p1", T0 + MINUTE, quantity=3)])
    assert profile.cart["p1"].quantity == 5
    assert profile.cart["p1"].price == 10.0
    assert profile.cart_quantity == 5
    assert profile.cart_value == 50.0
    assert profile.cart_changed_ms == T0 + MINUTE


def test_add_without_quantity_adds_one() -> None:
    profile = fold_all([add("p1", price=2.5), add("p2", price=1.0), add("p1")])
    assert {pid: item.quantity for pid, item in profile.cart.items()} == {"p1": 2, "p2": 1}
    assert profile.cart_value == 6.0


def test_sku_identifies_the_product_when_product_id_is_missing() -> None:
    profile = fold(Profile(user_id="user-1"), ev("Product Added", T0, {"sku": "SKU-9", "price": 3.0}))
    assert list(profile.cart) == ["SKU-9"]


def test_partial_remove_lowers_the_quantity() -> None:
    profile = fold_all([add("p1", price=10.0, quantity=5), remove("p1", T0 + MINUTE, quantity=2)])
    assert profile.cart["p1"].quantity == 3
    assert profile.cart["p1"].price == 10.0
    assert profile.cart_changed_ms == T0 + MINUTE


def test_full_remove_takes_the_item_out_of_the_cart() -> None:
    profile = fold_all([add("p1", price=10.0, quantity=2), add("p2", price=1.0), remove("p1", quantity=2)])
    assert list(profile.cart) == ["p2"]
    assert fold(profile, remove("p2", quantity=99)).cart == {}


def test_removing_a_product_not_in_the_cart_changes_nothing_in_the_cart() -> None:
    before = fold_all([add("p1", T0, price=10.0)])
    after = fold(before, remove("p9", T0 + MINUTE))
    assert after.cart == before.cart
    assert after.cart_changed_ms == T0


@pytest.mark.parametrize(
    ("props", "revenue"),
    [
        ({"revenue": 120.5, "total": 999.0}, 120.5),
        ({"total": 80.25}, 80.25),
        ({"products": [{"price": 10.0, "quantity": 2}, {"price": 5.5}, {"price": 1.25, "quantity": 4}]}, 30.5),
        ({}, 0.0),
    ],
    ids=["revenue", "total", "products", "nothing"],
)
def test_order_revenue_comes_from_revenue_else_total_else_products(props: dict[str, Any], revenue: float) -> None:
    profile = fold_all([add("p1", price=10.0), order(T0 + MINUTE, **props)])
    assert profile.orders == 1
    assert profile.revenue == revenue


def test_order_completed_empties_the_cart_and_sets_last_order() -> None:
    profile = fold_all([add("p1", price=10.0, quantity=2), order(T0 + MINUTE, revenue=20.0)])
    assert profile.cart == {}
    assert profile.cart_value == 0.0
    assert profile.last_order_ms == T0 + MINUTE
    assert profile.cart_changed_ms == T0 + MINUTE


def test_orders_and_revenue_accumulate_and_last_order_is_the_latest() -> None:
    profile = fold_all([order(T0 + 60 * MINUTE, revenue=10.1), order(T0, revenue=20.2), order(T0 + MINUTE, total=5)])
    assert profile.orders == 3
    assert profile.revenue == pytest.approx(35.3)
    assert profile.last_order_ms == T0 + 60 * MINUTE


def test_negative_revenue_adds_nothing() -> None:
    assert fold_all([order(revenue=50.0), order(revenue=-20.0)]).revenue == 50.0


# --- recently viewed --------------------------------------------------------------------------------------------


def test_recently_viewed_is_most_recent_first_without_duplicates() -> None:
    profile = fold_all([view("a"), view("b"), view("a"), view("c")])
    assert profile.recent_items == ("c", "a", "b")


def test_recently_viewed_is_capped() -> None:
    profile = fold_all(view(f"p{i}") for i in range(MAX_RECENT_ITEMS + 10))
    expected = tuple(f"p{i}" for i in reversed(range(10, MAX_RECENT_ITEMS + 10)))
    assert profile.recent_items == expected


def test_integer_product_ids_are_kept_as_strings() -> None:
    assert fold_all([view(7)]).recent_items == ("7",)  # type: ignore[arg-type]


# --- category affinity ------------------------------------------------------------------------------------------


def test_affinity_weights_views_adds_and_orders() -> None:
    profile = fold_all(
        [
            view("p1", "shoes"),
            add("p2", category="bags"),
            order(products=[{"product_id": "p3", "category": "hats"}, {"product_id": "p4", "category": "hats"}]),
        ]
    )
    assert profile.affinity == pytest.approx({"shoes": 1.0, "bags": 3.0, "hats": 5.0})
    assert list(decayed_affinity(profile, T0)) == ["hats", "bags", "shoes"]


def test_interaction_one_half_life_older_counts_half() -> None:
    profile = fold_all([view("p1", "old", T0), view("p2", "new", T0 + HALF_LIFE)])
    assert decayed_affinity(profile, T0 + HALF_LIFE) == pytest.approx({"new": 1.0, "old": 0.5})


def test_late_arriving_older_interaction_also_counts_half() -> None:
    profile = fold_all([view("p2", "new", T0 + HALF_LIFE), view("p1", "old", T0)])
    assert decayed_affinity(profile, T0 + HALF_LIFE) == pytest.approx({"new": 1.0, "old": 0.5})


def test_affinity_decays_with_reading_time() -> None:
    profile = fold_all([view("p1", "shoes", T0), view("p2", "shoes", T0)])
    assert decayed_affinity(profile, T0) == {"shoes": 2.0}
    assert decayed_affinity(profile, T0 + HALF_LIFE) == {"shoes": 1.0}
    assert decayed_affinity(profile, T0 + 2 * HALF_LIFE) == {"shoes": 0.5}
    assert decayed_affinity(profile, T0 - HALF_LIFE) == {"shoes": 2.0}  # reading before the last event: no boost


def test_affinity_is_ranked_highest_first() -> None:
    profile = fold_all([view("p1", "a"), add("p2", category="b"), view("p3", "a"), view("p4", "a"), view("p5", "a")])
    assert list(decayed_affinity(profile, T0).items()) == [("a", 4.0), ("b", 3.0)]


def test_events_without_a_category_leave_affinity_alone() -> None:
    assert fold_all([view("p1"), add("p2"), ev("Signed Up")]).affinity == {}


# --- bounded memory ---------------------------------------------------------------------------------------------


def test_ten_thousand_event_names_stay_within_the_cap_and_are_all_counted() -> None:
    profile = fold_all(ev(f"Custom Event {i:05d}", T0 + i) for i in range(10_000))
    assert len(profile.event_counts) <= MAX_EVENT_NAMES
    assert sum(profile.event_counts.values()) == 10_000
    assert profile.event_counts["Custom Event 00000"] == 1


def test_ten_thousand_of_everything_stays_within_every_cap() -> None:
    """A hostile or very busy user: every event brings a new name, category and product; memory stays bounded."""
    profile: Profile | None = None
    for i in range(10_000):
        category = f"category-{i:05d}"
        product = f"product-{i:05d}"
        record = [
            ev(f"Custom Event Number {i:05d}", T0 + i),
            view(product, category, T0 + i),
            add(product, T0 + i, category=category, price=12.34, quantity=2),
        ]
        profile = apply_record(profile, "user-1", record, partition=0, offset=i)
        assert profile is not None
    assert profile is not None
    assert len(profile.event_counts) <= MAX_EVENT_NAMES
    assert len(profile.affinity) <= MAX_CATEGORIES
    assert profile.session is not None
    assert len(profile.session.category_views) <= MAX_CATEGORIES
    assert len(profile.cart) <= MAX_CART_ITEMS
    assert len(profile.recent_items) <= MAX_RECENT_ITEMS
    assert len(profile.seen_ids) <= MAX_SEEN_IDS
    assert len(encode_profile(profile)) < 16 * 1024
    assert profile.recent_items[0] == "product-09999"  # still tracking what the user does now


def test_a_full_cart_refuses_new_products_but_still_updates_held_ones() -> None:
    full = fold_all(add(f"p{i}", price=1.0) for i in range(MAX_CART_ITEMS + 5))
    assert len(full.cart) == MAX_CART_ITEMS
    assert "p0" in full.cart and f"p{MAX_CART_ITEMS}" not in full.cart
    assert fold(full, add("p0", quantity=4)).cart["p0"].quantity == 5


# --- purity -----------------------------------------------------------------------------------------------------


def test_fold_never_mutates_its_input() -> None:
    profile = rich_profile()
    snapshot = copy.deepcopy(profile)
    events = [
        view("p9", "toys", T0 + 6 * MINUTE),
        add("p2", T0 + 7 * MINUTE, quantity=3),
        add("p3", T0 + 7 * MINUTE, price=5.0, category="toys"),
        remove("p2", T0 + 8 * MINUTE, quantity=1),
        remove("p3", T0 + 8 * MINUTE),
        order(T0 + 9 * MINUTE, total=42.0, products=[{"category": "toys"}]),
        ev("Something", T0 + 99 * MINUTE, session="s-9"),
    ]
    for event in events:
        fold(profile, event)
        assert profile == snapshot


def test_fold_is_deterministic() -> None:
    events = [view("p1", "shoes", T0), add("p1", T0 + MINUTE, price=3.0), order(T0 + 2 * MINUTE)]
    assert fold_all(events) == fold_all(events)


# --- apply_record: idempotency ----------------------------------------------------------------------------------


def test_apply_record_creates_a_profile_and_remembers_its_source() -> None:
    profile = apply_record(None, "user-1", [view("p1")], partition=2, offset=10)
    assert profile is not None
    assert profile.user_id == "user-1"
    assert profile.event_counts == {"Product Viewed": 1}
    assert (profile.source_partition, profile.source_offset) == (2, 10)


@pytest.mark.parametrize("offset", [10, 9, 0])
def test_apply_record_skips_a_redelivered_record(offset: int) -> None:
    profile = apply_record(None, "user-1", [view("p1")], partition=2, offset=10)
    assert apply_record(profile, "user-1", [view("p2")], partition=2, offset=offset) is None


def test_apply_record_applies_the_same_offset_from_another_partition() -> None:
    """After a repartition the offsets restart: offset 10 of partition 5 is not offset 10 of partition 2."""
    profile = apply_record(None, "user-1", [view("p1")], partition=2, offset=10)
    moved = apply_record(profile, "user-1", [view("p2")], partition=5, offset=10)
    assert moved is not None
    assert moved.event_counts == {"Product Viewed": 2}
    assert (moved.source_partition, moved.source_offset) == (5, 10)


def test_apply_record_skips_a_client_retry() -> None:
    first = view("p1", message_id="m-1")
    profile = apply_record(None, "user-1", [first], partition=0, offset=1)
    retry = view("p1", ts=T0 + MINUTE, message_id="m-1")
    assert apply_record(profile, "user-1", [retry], partition=0, offset=2) is None


def test_apply_record_with_new_and_duplicate_ids_applies_only_the_new_ones() -> None:
    profile = apply_record(None, "user-1", [add("p1", price=1.0, message_id="m-1")], partition=0, offset=1)
    record = [add("p1", message_id="m-1"), add("p1", message_id="m-2"), add("p1", message_id="m-2")]
    updated = apply_record(profile, "user-1", record, partition=0, offset=2)
    assert updated is not None
    assert updated.event_counts == {"Product Added": 2}
    assert updated.cart["p1"].quantity == 2
    assert updated.source_offset == 2


def test_seen_ids_forget_old_ones_beyond_the_cap() -> None:
    profile: Profile | None = None
    for offset in range(MAX_SEEN_IDS + 1):
        profile = apply_record(profile, "user-1", [ev("E", message_id=f"m-{offset}")], partition=0, offset=offset)
    assert profile is not None
    assert len(profile.seen_ids) == MAX_SEEN_IDS
    newest = apply_record(profile, "user-1", [ev("E", message_id=f"m-{MAX_SEEN_IDS}")], partition=0, offset=999)
    assert newest is None
    oldest = apply_record(profile, "user-1", [ev("E", message_id="m-0")], partition=0, offset=999)
    assert oldest is not None


# --- codec ------------------------------------------------------------------------------------------------------


def test_codec_round_trip_returns_an_equal_profile() -> None:
    profile = rich_profile()
    assert isinstance(profile.session, Session)
    assert profile.session.category_views
    assert isinstance(profile.cart["p2"], CartItem)
    assert profile.seen_ids and profile.affinity and profile.recent_items and profile.last_order_ms
    decoded = decode_profile(encode_profile(profile))
    assert decoded == profile
    assert isinstance(decoded.session, Session)
    assert isinstance(decoded.cart["p2"], CartItem)
    assert decoded.cart_value == profile.cart_value


def test_codec_round_trip_of_an_empty_profile() -> None:
    profile = Profile(user_id="user-1")
    assert decode_profile(encode_profile(profile)) == profile


# --- hostile property values ------------------------------------------------------------------------------------


def test_money_written_before_it_was_bounded_decodes_to_zero() -> None:
    """orjson wrote an infinite revenue as null and kept a price of 1e308: both read back as 0, and the next order
    folds instead of failing on None + float."""
    stored = (
        b'{"user_id":"user-1","orders":1,"revenue":null,"cart":{"p1":{"product_id":"p1","quantity":2,"price":1e308}}}'
    )
    profile = decode_profile(stored)
    assert (profile.revenue, profile.cart["p1"].price, profile.cart_value) == (0.0, 0.0, 0.0)
    assert fold(profile, order(revenue=12.5)).revenue == 12.5


@pytest.mark.parametrize("price", [-0.01, 1e12 + 1, 1e308, -1e308])
def test_a_price_outside_0_to_1e12_is_ignored_like_an_unusable_one(price: object) -> None:
    profile = fold_all([add("p1", price=7.0), add("p1", price=price, quantity=2)])
    assert profile.cart["p1"] == CartItem("p1", 3, 7.0)
    assert profile.cart_value == 21.0


@pytest.mark.parametrize("price", ["12.50", math.nan, math.inf, -math.inf, None, True, [1], {"v": 1}])
def test_unusable_price_defaults_to_zero_for_a_new_item(price: object) -> None:
    profile = fold_all([add("p1", price=price)])
    assert profile.cart["p1"].price == 0.0
    assert math.isfinite(profile.cart_value)


@pytest.mark.parametrize("price", ["12.50", math.nan, math.inf])
def test_unusable_price_keeps_the_known_price(price: object) -> None:
    profile = fold_all([add("p1", price=7.0), add("p1", price=price)])
    assert profile.cart["p1"].price == 7.0


@pytest.mark.parametrize("quantity", [-3, 0, 10**12, True, False, 2.5, "3", None])
def test_unusable_quantity_counts_as_one(quantity: object) -> None:
    profile = fold_all([add("p1", price=1.0, quantity=quantity)])
    assert profile.cart["p1"].quantity == 1
    assert fold(profile, remove("p1", quantity=quantity)).cart == {}


@pytest.mark.parametrize("product_id", [["p1"], {"id": "p1"}, True, 1.5, ""])
def test_unusable_product_id_is_ignored(product_id: object) -> None:
    profile = fold_all(
        [
            ev("Product Viewed", props={"product_id": product_id, "category": "shoes"}),
            ev("Product Added", props={"product_id": product_id, "price": 1.0}),
            ev("Product Removed", props={"product_id": product_id}),
        ]
    )
    assert profile.recent_items == ()
    assert profile.cart == {}
    assert profile.event_counts == {"Product Viewed": 1, "Product Added": 1, "Product Removed": 1}


@pytest.mark.parametrize("category", [["shoes"], 5, "", None])
def test_unusable_category_is_ignored(category: object) -> None:
    profile = fold_all([view("p1", category)])  # type: ignore[arg-type]
    assert profile.affinity == {}
    assert profile.session is not None
    assert profile.session.category_views == {}


@pytest.mark.parametrize(
    "props",
    [
        {"revenue": math.nan},
        {"revenue": "100"},
        {"total": math.inf},
        {"products": "p1"},
        {"products": [None, "p1", 3, {"price": "x", "quantity": 2}, {"price": math.nan}, {"quantity": -1}]},
    ],
)
def test_hostile_order_values_count_the_order_with_no_revenue(props: dict[str, Any]) -> None:
    profile = fold_all([order(**props)])
    assert profile.orders == 1
    assert profile.revenue == 0.0


def test_hostile_values_leave_a_profile_that_still_round_trips() -> None:
    """NaN must not leak into the profile: JSON has no NaN, so the changelog would not give the profile back."""
    events = [
        add("p1", price=math.nan, quantity=True, category=["x"]),
        add("p2", price="3", quantity=-1),
        view("p3", "shoes"),
        order(revenue=math.inf, products=[{"price": math.nan, "category": 5}]),
        add("p4", price=math.inf, quantity=10**9),
    ]
    profile = fold_all(events)
    assert decode_profile(encode_profile(profile)) == profile
    assert math.isfinite(profile.revenue) and math.isfinite(profile.cart_value)


def test_order_revenue_falls_back_to_total_when_revenue_is_null_or_not_a_number() -> None:
    assert fold_all([order(revenue=None, total=50.0)]).revenue == 50.0
    assert fold_all([order(revenue="49.99", total=49.99)]).revenue == 49.99


def test_re_adding_a_product_without_a_category_keeps_the_known_category() -> None:
    profile = fold_all([add("p1", price=5.0, category="shoes"), add("p1", T0 + 1)])
    assert profile.cart["p1"].category == "shoes"
    assert profile.cart["p1"].quantity == 2


def test_consent_follows_what_the_user_last_stated_per_purpose() -> None:
    def stated(preferences: object, ts: int) -> Event:
        return Event("track", "Page Viewed", "u1", f"c{ts}", ts, {}, {"consent": {"categoryPreferences": preferences}})

    profile = fold(Profile(user_id="u1"), stated({"marketing": True, "analytics": True}, 1))
    profile = fold(profile, stated({"marketing": False, "ads": "yes", "": True}, 2))  # not true/false: ignored
    profile = fold(profile, stated("everything", 3))  # not a mapping: ignored
    profile = fold(profile, stated({"C0001": True, "Advertising": False, **{f"c{n}": True for n in range(40)}}, 4))
    assert profile.consent == {"marketing": False, "analytics": True}  # a consent manager's own categories: ignored
    assert decode_profile(encode_profile(profile)).consent == profile.consent


def consent(**purposes: bool) -> dict[str, Any]:
    return {"consent": {"categoryPreferences": purposes}}


def test_without_analytics_consent_an_event_changes_only_the_stated_consent() -> None:
    silent = Event("track", "Product Added", "u", "m1", T0, {"product_id": "p1", "price": 5.0}, {})
    [step] = record_steps(None, "u", [silent], partition=0, offset=1, default_consent={})
    assert not step.profiled
    assert (step.after.event_counts, step.after.cart, step.after.consent) == ({}, {}, {})

    granting = Event("track", "Product Added", "u", "m2", T0, {"product_id": "p1"}, consent(analytics=True))
    withdrawing = Event("track", "Product Added", "u", "m3", T0 + 1, {"product_id": "p2"}, consent(analytics=False))
    first, second = record_steps(step.after, "u", [granting, withdrawing], partition=0, offset=2, default_consent={})
    assert first.profiled and first.after.event_counts == {"Product Added": 1}  # the event that grants counts
    assert not second.profiled and list(second.after.cart) == ["p1"]  # the one that withdraws does not
    assert second.after.consent == {"analytics": False}


def test_a_default_consent_profiles_users_who_never_said_and_a_stated_refusal_wins() -> None:
    default = {"analytics": True}
    event = ev("Product Viewed")
    [step] = record_steps(None, "user-1", [event], partition=0, offset=1, default_consent=default)
    assert step.profiled and step.after.event_counts == {"Product Viewed": 1}
    refusing = Event("track", "Product Viewed", "user-1", "m9", T0, {}, consent(analytics=False))
    [refused] = record_steps(step.after, "user-1", [refusing], partition=0, offset=2, default_consent=default)
    assert not refused.profiled and refused.after.event_counts == {"Product Viewed": 1}
