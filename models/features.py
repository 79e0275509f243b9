"""Features of a user at the moment of an event: a pure function from profile and event to ``dict[str, float]``.

Every model reads these and only these. Counts, money and durations are ``log1p``-compressed (they are heavy-tailed
and the models are linear or tree-based on few samples); absent values are 0 with an indicator where absence means
something (no order yet, no cart).

| feature | meaning |
|---|---|
| ``recency_log_days`` | log1p(days since the last order); 0 with ``never_ordered`` = 1 if none |
| ``orders_log``, ``revenue_log`` | frequency and monetary value |
| ``session_events_log``, ``session_minutes_log`` | depth and duration of the current session |
| ``session_top_category_views`` | most views of one category in this session (log1p) |
| ``views_log``, ``adds_log``, ``checkouts_log`` | lifetime counts of product views, adds to cart, checkouts |
| ``has_cart``, ``cart_items_log``, ``cart_value_log`` | cart contents |
| ``cart_idle_log_minutes`` | log1p(minutes since the cart last changed); 0 without a cart |
| ``returning`` | 1 after the first session |
| ``mobile`` | 1 if the event's user agent looks mobile |
| ``hour_sin``, ``hour_cos`` | hour of day (UTC) of the event, on the circle |
| ``is_view``, ``is_add``, ``is_remove``, ``is_cart_view``, ``is_checkout`` | which event this moment is |
| ``product_seen_before`` | 1 if the event's product was among the recently viewed before this event |
| ``price_log`` | log1p of the event's product price |
| ``category=<k>`` | 1 for the bucket (of :data:`CATEGORY_BUCKETS`) of the top level of the event's product category |

The ``category=<k>`` one-hot keys are present only when on; every other feature is always present, in the order of
:data:`FEATURE_NAMES`.
"""

from __future__ import annotations

import math
import zlib
from functools import lru_cache

from app.events import Event
from tables.profile import Profile, money

DAY_MS = 86_400_000
MINUTE_MS = 60_000
_MOBILE_MARKERS = ("Mobile", "Android", "iPhone", "iPad")
#: Top-level categories are hashed into this many one-hot buckets: bounded model size whatever the catalogue.
CATEGORY_BUCKETS = 64


#: The names :func:`features` always returns, in this order (stored samples keep their values in this order).
FEATURE_NAMES: tuple[str, ...] = (
    "recency_log_days",
    "never_ordered",
    "orders_log",
    "revenue_log",
    "session_events_log",
    "session_minutes_log",
    "session_top_category_views",
    "views_log",
    "adds_log",
    "checkouts_log",
    "has_cart",
    "cart_items_log",
    "cart_value_log",
    "cart_idle_log_minutes",
    "returning",
    "mobile",
    "hour_sin",
    "hour_cos",
    "is_view",
    "is_add",
    "is_remove",
    "is_cart_view",
    "is_checkout",
    "product_seen_before",
    "price_log",
)


def features(profile: Profile, event: Event, *, seen_before: bool = False) -> dict[str, float]:
    """The features of ``profile`` as of ``event`` (already folded into it); reads no clock but the event's.

    ``seen_before``: whether the event's product was in the profile's recently viewed items before this event.
    """
    now = event.timestamp_ms
    session = profile.session
    counts = profile.event_counts
    hour = (now % DAY_MS) / 3_600_000
    angle = 2 * math.pi * hour / 24
    name = event.name
    has_cart = bool(profile.cart)
    x = {
        "recency_log_days": _log((now - profile.last_order_ms) / DAY_MS) if profile.last_order_ms else 0.0,
        "never_ordered": 0.0 if profile.orders else 1.0,
        "orders_log": _log(profile.orders),
        "revenue_log": _log(profile.revenue),
        "session_events_log": _log(session.events) if session else 0.0,
        "session_minutes_log": _log((session.last_ms - session.started_ms) / MINUTE_MS) if session else 0.0,
        "session_top_category_views": _log(max(session.category_views.values(), default=0)) if session else 0.0,
        "views_log": _log(counts.get("Product Viewed", 0)),
        "adds_log": _log(counts.get("Product Added", 0)),
        "checkouts_log": _log(counts.get("Checkout Started", 0)),
        "has_cart": 1.0 if has_cart else 0.0,
        "cart_items_log": _log(profile.cart_quantity) if has_cart else 0.0,
        "cart_value_log": _log(profile.cart_value) if has_cart else 0.0,
        "cart_idle_log_minutes": _log((now - profile.cart_changed_ms) / MINUTE_MS)
        if has_cart and profile.cart_changed_ms
        else 0.0,
        "returning": 1.0 if profile.sessions > 1 else 0.0,
        "mobile": 1.0 if _is_mobile(event.context.get("userAgent")) else 0.0,
        "hour_sin": math.sin(angle),
        "hour_cos": math.cos(angle),
        "is_view": 1.0 if name == "Product Viewed" else 0.0,
        "is_add": 1.0 if name == "Product Added" else 0.0,
        "is_remove": 1.0 if name == "Product Removed" else 0.0,
        "is_cart_view": 1.0 if name == "Cart Viewed" else 0.0,
        "is_checkout": 1.0 if name == "Checkout Started" else 0.0,
        "product_seen_before": 1.0 if seen_before else 0.0,
        "price_log": _log(_price(event)),
    }
    category = event.properties.get("category")
    if isinstance(category, str) and category:
        x[_category_feature(category.split(".", 1)[0])] = 1.0
    return x


def product_seen_before(profile: Profile | None, event: Event) -> bool:
    """Whether the event's product is among ``profile``'s recently viewed items (call with the profile before)."""
    product = event.properties.get("product_id")
    return profile is not None and product is not None and str(product) in profile.recent_items


def _price(event: Event) -> float:
    return money(event.properties.get("price")) or 0.0


@lru_cache(maxsize=256)
def _category_feature(top_level: str) -> str:
    """The one-hot feature of a top-level category (cached: a catalogue has few, and every view names one)."""
    return f"category={_bucket(top_level)}"


def _bucket(value: str) -> int:
    """A stable bucket (Python's ``hash`` is salted per process)."""
    return zlib.crc32(value.encode()) % CATEGORY_BUCKETS


def _log(value: float) -> float:
    # 0 for a negative value, and for an infinite or NaN one (a profile stored before money was bounded), which no
    # model can learn from and Sample.of cannot pack.
    return math.log1p(value) if 0.0 < value < math.inf else 0.0


def _is_mobile(agent: object) -> bool:
    return isinstance(agent, str) and _is_mobile_agent(agent)


@lru_cache(maxsize=256)
def _is_mobile_agent(agent: str) -> bool:
    """Cached: a user sends the same user agent with every event."""
    return any(marker in agent for marker in _MOBILE_MARKERS)
