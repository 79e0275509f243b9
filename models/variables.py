"""The variables segment and trigger conditions can name, in the units people write rules in.

Features (:mod:`models.features`) are scaled for models; these are raw: minutes, counts, money. The set of names is
:data:`VARIABLES`; a rule naming anything else is refused when its file is loaded.
"""

from __future__ import annotations

from app.events import Event
from tables.profile import Profile

MINUTE_MS = 60_000

VARIABLES: dict[str, str] = {
    "event": "name of the event being processed",
    "sessions": "number of sessions so far",
    "session_events": "events in the current session",
    "session_minutes": "minutes from the first to the latest event of the current session",
    "session_top_category_views": "most product views of one category in the current session",
    "views": "product views, lifetime",
    "adds": "adds to cart, lifetime",
    "orders": "orders, lifetime",
    "revenue": "revenue, lifetime",
    "days_since_order": "days since the last order (absent if none)",
    "cart_items": "items in the cart",
    "cart_value": "value of the cart",
    "minutes_since_cart_change": "minutes since the cart last changed (absent without a cart)",
    "intent": "purchase-intent score in [0, 1] (absent until scored)",
}


def variables(profile: Profile, event: Event, *, intent: float | None = None) -> dict[str, object]:
    """The rule variables of ``profile`` as of ``event`` (already folded in)."""
    now = event.timestamp_ms
    session = profile.session
    counts = profile.event_counts
    values: dict[str, object] = {
        "event": event.name,
        "sessions": profile.sessions,
        "session_events": session.events if session else 0,
        "session_minutes": (session.last_ms - session.started_ms) / MINUTE_MS if session else 0.0,
        "session_top_category_views": max(session.category_views.values(), default=0) if session else 0,
        "views": counts.get("Product Viewed", 0),
        "adds": counts.get("Product Added", 0),
        "orders": profile.orders,
        "revenue": profile.revenue,
        "cart_items": profile.cart_quantity,
        "cart_value": profile.cart_value,
    }
    if profile.last_order_ms is not None:
        values["days_since_order"] = (now - profile.last_order_ms) / (1440 * MINUTE_MS)
    if profile.cart and profile.cart_changed_ms is not None:
        values["minutes_since_cart_change"] = (now - profile.cart_changed_ms) / MINUTE_MS
    if intent is not None:
        values["intent"] = intent
    return values
