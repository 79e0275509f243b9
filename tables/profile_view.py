"""The public JSON form of a profile (``GET /v1/users/{id}/profile``) and its derived RFM scores.

Pure: the reading time is passed in, so tests compute the same view as the API.
"""

from __future__ import annotations

from typing import Any

from app.events import iso_from_ms
from tables.profile import Profile, decayed_affinity


def profile_view(profile: Profile, *, now_ms: int) -> dict[str, Any]:
    """The public JSON form of a profile: readable times, derived values, no bookkeeping fields."""
    session = profile.session
    return {
        "user_id": profile.user_id,
        "first_seen": iso_from_ms(profile.first_seen_ms),
        "last_seen": iso_from_ms(profile.last_seen_ms),
        "event_counts": dict(profile.event_counts),
        "sessions": {
            "count": profile.sessions,
            "current": None
            if session is None
            else {
                "id": session.id,
                "started": iso_from_ms(session.started_ms),
                "last_event": iso_from_ms(session.last_ms),
                "events": session.events,
                "category_views": dict(session.category_views),
            },
        },
        "cart": {
            "items": [
                {
                    "product_id": i.product_id,
                    "name": i.name,
                    "quantity": i.quantity,
                    "price": i.price,
                    "category": i.category,
                }
                for i in profile.cart.values()
            ],
            "quantity": profile.cart_quantity,
            "value": profile.cart_value,
            "last_change": iso_from_ms(profile.cart_changed_ms) if profile.cart_changed_ms else None,
        },
        "orders": {
            "count": profile.orders,
            "revenue": profile.revenue,
            "last_order": iso_from_ms(profile.last_order_ms) if profile.last_order_ms else None,
        },
        "rfm": rfm(profile, now_ms=now_ms),
        "category_affinity": decayed_affinity(profile, now_ms),
        "recently_viewed": list(profile.recent_items),
        "consent": dict(profile.consent),
        "traits": dict(profile.traits),
    }


#: Upper bounds of the RFM score bands 5..1 (recency in days: lower is better).
RECENCY_DAYS = (7, 30, 90, 180)
FREQUENCY_ORDERS = (1, 2, 4, 8)
MONETARY_REVENUE = (50.0, 200.0, 500.0, 2000.0)


def rfm(profile: Profile, *, now_ms: int) -> dict[str, Any]:
    """Recency, frequency and monetary value with 1-5 scores on fixed bands (0 = never ordered)."""
    if profile.last_order_ms is None:
        return {"recency_days": None, "frequency": 0, "monetary": 0.0, "r": 0, "f": 0, "m": 0, "segment": "000"}
    days = max(0.0, (now_ms - profile.last_order_ms) / 86_400_000)
    r = 5 - sum(days > bound for bound in RECENCY_DAYS)
    f = 1 + sum(profile.orders > bound for bound in FREQUENCY_ORDERS)
    m = 1 + sum(profile.revenue > bound for bound in MONETARY_REVENUE)
    return {
        "recency_days": round(days, 2),
        "frequency": profile.orders,
        "monetary": profile.revenue,
        "r": r,
        "f": f,
        "m": m,
        "segment": f"{r}{f}{m}",
    }
