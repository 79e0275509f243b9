"""The shopper simulator: reproducible, well-formed, behaviourally plausible, and malformed on request."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from datetime import datetime
from itertools import pairwise
from typing import Any

import pytest

from app.simulate import SESSION_TIMEOUT_MS, iso_ms, simulate_events

START_MS = 1_767_225_600_000
DAY_MS = 86_400_000
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
PRODUCT_EVENTS = {"Product Viewed", "Product Added", "Product Removed"}
TRACK_EVENTS = PRODUCT_EVENTS | {
    "Cart Viewed",
    "Checkout Started",
    "Order Completed",
    "Products Searched",
}


def _ms(timestamp: str) -> int:
    return int(datetime.fromisoformat(timestamp).timestamp() * 1000)


def _identity(event: dict[str, Any]) -> str:
    identity: str = event.get("userId") or event["anonymousId"]
    return identity


def _problem(item: object, latest_ms: int) -> str | None:
    """Why ``item`` breaks the tracking spec (a short kind name), or None if it is a valid simulated event."""
    if isinstance(item, bytes):
        try:
            body = json.loads(item)
        except ValueError:
            return "not_json"
        return "json_array" if isinstance(body, list) else "bytes"
    assert isinstance(item, dict), f"unexpected item type {type(item)}"
    if item.get("type") not in {"track", "page"}:
        return "unknown_type"
    if "userId" in item and not isinstance(item["userId"], str):
        return "user_id_wrong_type"
    if not isinstance(item.get("userId", item.get("anonymousId")), str):
        return "no_identity"
    if not isinstance(item.get("properties"), dict):
        return "properties_not_object"
    timestamp = item.get("timestamp")
    if not isinstance(timestamp, str) or not ISO_MS.match(timestamp):
        return "unparseable_timestamp"
    try:
        timestamp_ms = _ms(timestamp)
    except ValueError:
        return "unparseable_timestamp"
    if timestamp_ms > latest_ms + DAY_MS:
        return "future_timestamp"
    if item["type"] == "track" and not isinstance(item.get("event"), str):
        return "missing_event"
    return None


def _split(items: list[dict[str, Any] | bytes]) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The valid events, and the malformed items counted by kind."""
    valid: list[dict[str, Any]] = []
    kinds: Counter[str] = Counter()
    latest_ms = START_MS
    for item in items:
        kind = _problem(item, latest_ms)
        if kind is None:
            assert isinstance(item, dict)
            valid.append(item)
            latest_ms = _ms(item["timestamp"])
        else:
            kinds[kind] += 1
    return valid, kinds


@pytest.fixture(scope="module")
def stream() -> list[dict[str, Any]]:
    items = list(simulate_events(users=1_500, events=40_000, seed=11))
    assert all(isinstance(item, dict) for item in items)
    return items  # type: ignore[return-value]


def _sessions(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    sessions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        sessions[event["context"]["sessionId"]].append(event)
    return sessions


def test_iso_ms_formats_utc_with_milliseconds() -> None:
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(START_MS + 123) == "2026-01-01T00:00:00.123Z"
    assert iso_ms(START_MS + DAY_MS - 1) == "2026-01-01T23:59:59.999Z"
    assert iso_ms(951_782_400_000) == "2000-02-29T00:00:00.000Z"


def test_same_seed_same_output_other_seed_different_output() -> None:
    first = list(simulate_events(users=300, events=3_000, seed=5, bad_share=0.05))
    again = list(simulate_events(users=300, events=3_000, seed=5, bad_share=0.05))
    other = list(simulate_events(users=300, events=3_000, seed=6, bad_share=0.05))
    assert first == again
    # Not just the seed-derived ids differ: the behaviour itself does.
    assert _behaviour(first) != _behaviour(other)


def _behaviour(items: list[dict[str, Any] | bytes]) -> list[tuple[str, str, str]]:
    return [
        (e.get("event", ""), e.get("userId") or e.get("anonymousId", ""), json.dumps(e.get("properties")))
        for e in items
        if isinstance(e, dict)
    ]


@pytest.mark.parametrize(
    ("users", "events", "bad_share"),
    [(1, 0, 0.0), (1, 1, 0.0), (1, 500, 0.0), (50, 2_345, 0.0), (50, 2_345, 0.3)],
)
def test_yields_exactly_the_requested_number(users: int, events: int, bad_share: float) -> None:
    assert sum(1 for _ in simulate_events(users=users, events=events, bad_share=bad_share)) == events


def test_rejects_nonsense_arguments() -> None:
    with pytest.raises(ValueError):
        simulate_events(users=0, events=10)
    with pytest.raises(ValueError):
        simulate_events(users=10, events=-1)
    with pytest.raises(ValueError):
        simulate_events(users=10, events=10, bad_share=1.5)


def test_starts_at_start_ms_and_timestamps_never_decrease(stream: list[dict[str, Any]]) -> None:
    times = [_ms(e["timestamp"]) for e in stream]
    assert times == sorted(times)
    assert START_MS <= times[0] < START_MS + 3_600_000
    later = list(simulate_events(users=10, events=5, start_ms=START_MS + DAY_MS))
    assert all(_ms(e["timestamp"]) >= START_MS + DAY_MS for e in later if isinstance(e, dict))


def test_every_event_follows_the_spec(stream: list[dict[str, Any]]) -> None:
    message_ids = set()
    for event in stream:
        assert _problem(event, START_MS + 365 * DAY_MS) is None, event
        assert isinstance(event["messageId"], str) and event["messageId"]
        message_ids.add(event["messageId"])
        assert ISO_MS.match(event["timestamp"])
        assert ("userId" in event) != ("anonymousId" in event)
        assert (
            re.fullmatch(r"u\d+", event["userId"]) if "userId" in event else re.fullmatch(r"a\d+", event["anonymousId"])
        )
        context = event["context"]
        assert isinstance(context["sessionId"], str) and context["sessionId"]
        assert "Mozilla/5.0" in context["userAgent"]
        if event["type"] == "page":
            assert event["name"] == "Home"
            continue
        assert event["event"] in TRACK_EVENTS
        properties = event["properties"]
        if event["event"] in PRODUCT_EVENTS:
            assert isinstance(properties["product_id"], str)
            assert isinstance(properties["category"], str) and "." in properties["category"]
            assert isinstance(properties["brand"], str)
            assert isinstance(properties["price"], float)
            assert properties["price"] == round(properties["price"], 2)
            assert properties["price"] > 0
            assert isinstance(properties["quantity"], int) and properties["quantity"] >= 1
        elif event["event"] == "Order Completed":
            assert isinstance(properties["order_id"], str)
            assert isinstance(properties["revenue"], float)
            assert properties["products"]
        elif event["event"] == "Products Searched":
            assert isinstance(properties["query"], str) and properties["query"]
    assert len(message_ids) == len(stream)


def test_all_event_kinds_occur_in_plausible_proportions(stream: list[dict[str, Any]]) -> None:
    names = Counter(e.get("event", e.get("name")) for e in stream)
    assert set(names) == TRACK_EVENTS | {"Home"}
    assert names["Product Viewed"] > 0.5 * len(stream)
    assert names["Product Viewed"] > names["Product Added"] > names["Order Completed"]
    assert names["Product Added"] > names["Product Removed"]
    assert names["Checkout Started"] > names["Order Completed"]  # some drop out at payment


def test_about_seventy_percent_of_shoppers_are_identified(stream: list[dict[str, Any]]) -> None:
    shoppers = {_identity(e) for e in stream}
    identified = sum(1 for s in shoppers if s.startswith("u"))
    assert 0.62 < identified / len(shoppers) < 0.78


def test_prices_depend_on_the_category(stream: list[dict[str, Any]]) -> None:
    prices: dict[str, list[float]] = defaultdict(list)
    by_product: dict[str, set[float]] = defaultdict(set)
    for e in stream:
        if e.get("event") in PRODUCT_EVENTS:
            prices[e["properties"]["category"]].append(e["properties"]["price"])
            by_product[e["properties"]["product_id"]].add(e["properties"]["price"])
    assert len(prices) >= 10
    assert max(prices["electronics.video.tv"]) > 5 * max(prices["apparel.tshirt"])
    assert all(len(p) == 1 for p in by_product.values())  # a product keeps its price


def test_carts_are_consistent_per_shopper(stream: list[dict[str, Any]]) -> None:
    carts: dict[str, Counter[str]] = defaultdict(Counter)
    orders = 0
    for event in stream:
        cart = carts[_identity(event)]
        name, properties = event.get("event"), event["properties"]
        if name == "Product Added":
            cart[properties["product_id"]] += properties["quantity"]
        elif name == "Product Removed":
            assert cart[properties["product_id"]] >= properties["quantity"] >= 1, event
            cart[properties["product_id"]] -= properties["quantity"]
        elif name in {"Cart Viewed", "Checkout Started", "Order Completed"}:
            listed = Counter({p["product_id"]: p["quantity"] for p in properties["products"]})
            assert listed == +cart, event
            if name != "Cart Viewed":
                total = sum(p["price"] * p["quantity"] for p in properties["products"])
                assert properties["revenue"] == pytest.approx(total, abs=0.005)
            if name == "Order Completed":
                orders += 1
                cart.clear()
    assert orders > 50


def test_order_ids_are_unique_and_checkout_precedes_purchase(stream: list[dict[str, Any]]) -> None:
    started: set[str] = set()
    completed: list[str] = []
    for event in stream:
        if event.get("event") == "Checkout Started":
            started.add(event["properties"]["order_id"])
        elif event.get("event") == "Order Completed":
            assert event["properties"]["order_id"] in started
            completed.append(event["properties"]["order_id"])
    assert len(completed) == len(set(completed))


def test_sessions_are_separated_by_more_than_thirty_minutes(stream: list[dict[str, Any]]) -> None:
    last: dict[str, tuple[str, int]] = {}
    returning = defaultdict(set)
    for event in stream:
        shopper, session, now = _identity(event), event["context"]["sessionId"], _ms(event["timestamp"])
        returning[shopper].add(session)
        if shopper in last:
            previous_session, previous_ms = last[shopper]
            if session == previous_session:
                assert 1_000 <= now - previous_ms <= 3 * 60_000, event
            else:
                assert now - previous_ms > SESSION_TIMEOUT_MS, event
        last[shopper] = (session, now)
    sessions_per_shopper = Counter(len(s) for s in returning.values())
    assert sessions_per_shopper[1] > 0
    assert sum(n for count, n in sessions_per_shopper.items() if count >= 3) > 0.2 * len(returning)


def test_many_sessions_are_active_at_once(stream: list[dict[str, Any]]) -> None:
    first_thousand = stream[:1_000]
    assert len({e["context"]["sessionId"] for e in first_thousand}) > 100
    switches = sum(1 for a, b in pairwise(stream) if _identity(a) != _identity(b))
    assert switches > 0.8 * len(stream)


def test_sessions_focus_on_one_or_two_categories(stream: list[dict[str, Any]]) -> None:
    views_per_session = [
        Counter(e["properties"]["category"] for e in events if e.get("event") == "Product Viewed")
        for events in _sessions(stream).values()
    ]
    # A visit cut off by the end of the stream may have no product view yet.
    views_per_session = [views for views in views_per_session if views]
    top_category_views = [max(views.values()) for views in views_per_session]
    deep = sum(1 for n in top_category_views if n > 5)
    assert 0.05 * len(top_category_views) < deep < 0.6 * len(top_category_views)
    assert Counter(top_category_views)[1] > 0.1 * len(top_category_views)

    longer = [views for views in views_per_session if sum(views.values()) >= 4]
    top_share = [max(views.values()) / sum(views.values()) for views in longer]
    assert sum(top_share) / len(top_share) > 0.8
    top_two_share = [sum(n for _, n in views.most_common(2)) / sum(views.values()) for views in longer]
    assert sum(1 for share in top_two_share if share >= 0.5) > 0.95 * len(longer)


def test_engaged_sessions_buy_more_often(stream: list[dict[str, Any]]) -> None:
    outcomes: dict[bool, list[bool]] = {False: [], True: []}
    for events in _sessions(stream).values():
        names = [e.get("event") for e in events]
        if "Product Added" not in names:
            continue
        outcomes[names.count("Product Viewed") >= 6].append("Order Completed" in names)
    light, engaged = (sum(o) / len(o) for o in (outcomes[False], outcomes[True]))
    assert engaged > 1.5 * light
    assert 0 < light < 0.5


def test_some_carts_are_abandoned(stream: list[dict[str, Any]]) -> None:
    sessions = _sessions(stream).values()
    with_cart = [s for s in sessions if any(e.get("event") == "Product Added" for e in s)]
    bought = [s for s in with_cart if any(e.get("event") == "Order Completed" for e in s)]
    assert 0.1 * len(with_cart) < len(bought) < 0.8 * len(with_cart)


def test_a_bad_share_yields_that_share_of_varied_malformed_items() -> None:
    items = list(simulate_events(users=800, events=20_000, seed=3, bad_share=0.1))
    assert len(items) == 20_000
    valid, kinds = _split(items)
    bad = sum(kinds.values())
    assert 0.085 * len(items) < bad < 0.115 * len(items)
    expected = {
        "not_json",
        "json_array",
        "no_identity",
        "user_id_wrong_type",
        "unknown_type",
        "properties_not_object",
        "unparseable_timestamp",
        "future_timestamp",
        "missing_event",
    }
    assert set(kinds) == expected
    assert min(kinds.values()) > 0.3 * bad / len(expected)
    assert any(isinstance(item, bytes) for item in items)
    # Malformed items are extra noise: the valid events still tell consistent, ordered stories.
    times = [_ms(e["timestamp"]) for e in valid]
    assert times == sorted(times)
    assert len({e["messageId"] for e in valid}) == len(valid)


def test_no_malformed_items_without_a_bad_share(stream: list[dict[str, Any]]) -> None:
    valid, kinds = _split(stream)  # type: ignore[arg-type]
    assert not kinds
    assert len(valid) == len(stream)
