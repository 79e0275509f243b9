"""The variables segment and trigger conditions can name, in the units people write rules in.

Features (:mod:`models.features`) are scaled for models; these are raw: minutes, counts, money. The set of names is
:data:`VARIABLES`, with the type of each (a number or text); a rule naming anything else, or comparing a variable
with a value of the other type (``revenue >= '500'``), is refused when its file is loaded.

Some variables change with the clock alone (:data:`CLOCK_VARIABLES`): "minutes since the cart changed" grows while
the user is away. :func:`next_change` tells when a condition comparing one of them with a number can next flip, so
a segment such as "cart untouched for 2 h" is entered at that moment on event time, without an event of the user.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from models.expressions import VariableType
from tables.profile import Profile

MINUTE_MS = 60_000
DAY_MS = 1440 * MINUTE_MS

#: Name -> type, as :func:`models.expressions.compile_expression` takes them in ``known``.
VARIABLES: dict[str, VariableType] = {
    "event": "text",  # name of the event being processed ('' when the clock re-evaluates)
    "sessions": "number",  # number of sessions so far
    "session_events": "number",  # events in the current session
    "session_minutes": "number",  # minutes from the first to the latest event of the current session
    "session_top_category_views": "number",  # most product views of one category in the current session
    "views": "number",  # product views, lifetime
    "adds": "number",  # adds to cart, lifetime
    "orders": "number",  # orders, lifetime
    "revenue": "number",  # revenue, lifetime
    "days_since_order": "number",  # days since the last order (absent if none)
    "cart_items": "number",  # items in the cart
    "cart_value": "number",  # value of the cart
    "minutes_since_cart_change": "number",  # minutes since the cart last changed (absent without a cart)
    "minutes_since_seen": "number",  # minutes since the user's latest event
    "intent": "number",  # purchase-intent score in [0, 1] (absent until scored)
    "cluster": "number",  # behavioural cluster number (absent until assigned)
}

#: Variables that grow with the clock: name -> (the profile's start time for it, milliseconds per unit).
CLOCK_VARIABLES: dict[str, int] = {
    "minutes_since_cart_change": MINUTE_MS,
    "days_since_order": DAY_MS,
    "minutes_since_seen": MINUTE_MS,
}


def variables(
    profile: Profile, *, now_ms: int, event: str = "", intent: float | None = None, cluster: int | None = None
) -> dict[str, object]:
    """The rule variables of ``profile`` at ``now_ms`` (event time), while processing ``event`` if any."""
    session = profile.session
    counts = profile.event_counts
    values: dict[str, object] = {
        "event": event,
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
    for name, unit in CLOCK_VARIABLES.items():
        start = clock_start(profile, name)
        if start is not None:
            values[name] = (now_ms - start) / unit
    if intent is not None:
        values["intent"] = intent
    if cluster is not None:
        values["cluster"] = cluster
    return values


def clock_start(profile: Profile, name: str) -> int | None:
    """When the clock variable ``name`` was 0 for ``profile``, or ``None`` when it is absent."""
    if name == "minutes_since_cart_change":
        return profile.cart_changed_ms if profile.cart else None
    if name == "days_since_order":
        return profile.last_order_ms
    if name == "minutes_since_seen":
        return profile.last_seen_ms or None
    raise KeyError(name)


def next_change(profile: Profile, thresholds: Mapping[str, Collection[float]], now_ms: int) -> int | None:
    """The earliest time after ``now_ms`` at which a clock variable crosses one of its ``thresholds``.

    ``thresholds`` maps clock variables to the numbers conditions compare them with (see
    :attr:`models.segments.SegmentSet.clock_thresholds`). The answer is one millisecond past the crossing, so
    both ``>`` and ``>=`` hold then. ``None``: no condition can change with time alone.
    """
    earliest: int | None = None
    for name, values in thresholds.items():
        start = clock_start(profile, name)
        if start is None:
            continue
        unit = CLOCK_VARIABLES[name]
        for value in values:
            at = start + int(value * unit) + 1
            if at > now_ms and (earliest is None or at < earliest):
                earliest = at
    return earliest
