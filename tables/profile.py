"""A user's live profile and the pure fold that builds it, one event at a time.

``fold(profile, event)`` returns a new :class:`Profile`; it never mutates its input, reads no clock and does no
I/O, so a replay of the same events gives the same profile. :func:`record_steps` adds the idempotency guard the
stream needs: a record whose source offset was already applied, or an event whose ``messageId`` was seen recently,
changes nothing.

Memory per profile is bounded whatever the user does: every collection below has a ``MAX_*`` cap.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from operator import attrgetter
from typing import Any

from app.events import Event
from models.consent import PURPOSES

SESSION_GAP_MS = 30 * 60 * 1000
AFFINITY_HALF_LIFE_MS = 7 * 24 * 3600 * 1000
MAX_EVENT_NAMES = 64
MAX_CART_ITEMS = 50
MAX_CATEGORIES = 32
MAX_RECENT_ITEMS = 20
MAX_SEEN_IDS = 64
MAX_NAME_LENGTH = 200
MAX_ALIASES = 32
MAX_TRAITS = 32
#: Long enough for an encrypted token of a 200-character value.
MAX_TRAIT_LENGTH = 400
#: The largest price, revenue or total the fold takes (see :func:`money`), and the largest quantity of one event.
MAX_MONEY = 1e12
MAX_QUANTITY = 10_000
OTHER = "(other)"

#: How much each kind of interaction adds to the affinity of the product's category.
AFFINITY_WEIGHTS = {"Product Viewed": 1.0, "Product Added": 3.0, "Order Completed": 5.0}


@dataclass(frozen=True, slots=True)
class CartItem:
    product_id: str
    quantity: int
    price: float
    category: str | None = None
    #: The product's display name (``properties.name``), for messages: "Still thinking about Trail shoes?".
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """The user's current session: an explicit session id, else a run of events at most 30 minutes apart."""

    id: str
    started_ms: int
    last_ms: int
    events: int = 0
    category_views: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything Nudge knows about one user. Treat every mapping as read-only: fold builds new ones."""

    user_id: str
    first_seen_ms: int = 0
    last_seen_ms: int = 0
    event_counts: Mapping[str, int] = field(default_factory=dict)
    sessions: int = 0
    session: Session | None = None
    cart: Mapping[str, CartItem] = field(default_factory=dict)
    cart_changed_ms: int | None = None
    orders: int = 0
    revenue: float = 0.0
    last_order_ms: int | None = None
    affinity: Mapping[str, float] = field(default_factory=dict)
    affinity_as_of_ms: int = 0
    recent_items: tuple[str, ...] = ()
    #: Consent per purpose as the user last stated it (Segment: ``context.consent.categoryPreferences``).
    consent: Mapping[str, bool] = field(default_factory=dict)
    #: Idempotency: the source partition and offset last applied, and hashes of recent messageIds.
    source_partition: int = -1
    source_offset: int = -1
    seen_ids: tuple[int, ...] = ()
    #: Anonymous ids linked to this user: merged into it, or asked to merge (see :mod:`app.identity`).
    aliases: tuple[str, ...] = ()
    #: The latest ``identify`` traits; personal ones are ``enc:v1:`` tokens (:mod:`app.pii`), readable by export only.
    traits: Mapping[str, Any] = field(default_factory=dict)

    @property
    def cart_value(self) -> float:
        if not self.cart:
            return 0  # what the sum below gives for an empty cart: an int, and rule values keep their JSON type
        return round(sum([item.quantity * item.price for item in self.cart.values()]), 2)

    @property
    def cart_quantity(self) -> int:
        return sum([item.quantity for item in self.cart.values()]) if self.cart else 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Rebuild a profile from its JSON form (the changelog value)."""
        session = data.get("session")
        revenue = data.get("revenue")
        return cls(
            **{
                **data,
                "session": Session(**session) if session else None,
                # State written before money was bounded: orjson wrote an infinite revenue as null, and a price of
                # 1e308 makes the cart value infinite. Both read as 0, as an unusable property does in the fold.
                "revenue": float(revenue) if isinstance(revenue, (int, float)) and math.isfinite(revenue) else 0.0,
                "cart": {
                    pid: CartItem(**{**item, "price": money(item.get("price")) or 0.0})
                    for pid, item in data.get("cart", {}).items()
                },
                "recent_items": tuple(data.get("recent_items", ())),
                "seen_ids": tuple(data.get("seen_ids", ())),
                "aliases": tuple(data.get("aliases", ())),
            }
        )


@dataclass(frozen=True, slots=True)
class Step:
    """One event folded into a profile: ``before`` is ``None`` for a user seen for the first time.

    ``profiled`` is false when the user has not granted ``analytics``: then ``after`` differs from ``before`` only
    in the consent the event stated, and the event may be counted only in anonymous aggregates.
    """

    before: Profile | None
    event: Event
    after: Profile
    profiled: bool = True


def granted(profile: Profile | None, purpose: str, default: Mapping[str, bool]) -> bool:
    """Whether the user has consented to ``purpose``: what they last stated, else the deployment's default."""
    if profile is not None and purpose in profile.consent:
        return profile.consent[purpose]
    return default.get(purpose, False)


def record_steps(
    profile: Profile | None,
    user_id: str,
    events: list[Event],
    *,
    partition: int,
    offset: int,
    default_consent: Mapping[str, bool],
) -> list[Step]:
    """Fold the ``events`` of one user carried by the record at ``partition``/``offset``, once, step by step.

    Returns one :class:`Step` per event folded; the last step's ``after`` is the profile to store. The list is
    empty when nothing changed: the record was applied before (a redelivery after a crash) or every event repeats
    a recently seen ``messageId`` (a client retry). An event is folded only if the user, with the consent that
    event itself states, has granted ``analytics`` (``default_consent`` for what they never stated); otherwise only
    its consent is kept.
    """
    if profile is not None and partition == profile.source_partition and offset <= profile.source_offset:
        return []
    seen = list(profile.seen_ids) if profile is not None else []
    fresh: list[Event] = []
    for event in events:
        id_hash = message_hash(event.message_id)
        if id_hash in seen:
            continue
        seen.append(id_hash)
        fresh.append(event)
    if not fresh:
        return []
    # Joined into the last step's changes: one profile built per event, none more per record.
    position: dict[str, Any] = {
        "source_partition": partition,
        "source_offset": offset,
        "seen_ids": tuple(seen[-MAX_SEEN_IDS:]),
    }
    last = fresh[-1]
    steps: list[Step] = []
    current = profile
    for event in fresh:
        start = current or Profile(user_id=user_id)
        stated = _stated_consent(event.context)
        consent = {**start.consent, **stated} if stated else start.consent
        # granted(), read from the consent as this event leaves it, without building that profile first.
        profiled = consent.get("analytics", default_consent.get("analytics", False))
        changes: dict[str, Any] = _changes(start, event) if profiled else {"consent": consent} if stated else {}
        if event is last:
            changes.update(position)
        after = _changed(start, changes) if changes else start
        steps.append(Step(current, event, after, profiled))
        current = after
    return steps


def fold(profile: Profile, event: Event) -> Profile:
    """Return ``profile`` with ``event`` applied (no idempotency guard: see :func:`record_steps`)."""
    return _changed(profile, _changes(profile, event))


_PROFILE_FIELDS = tuple(f.name for f in fields(Profile))
_PROFILE_POSITIONS = {name: position for position, name in enumerate(_PROFILE_FIELDS)}
_profile_values = attrgetter(*_PROFILE_FIELDS)


def _changed(profile: Profile, changes: Mapping[str, Any]) -> Profile:
    """``dataclasses.replace(profile, **changes)``, built positionally: replace checks every field of every call in
    Python, which costs as much as building the profile, and this runs once per event."""
    values = list(_profile_values(profile))
    for name, value in changes.items():
        values[_PROFILE_POSITIONS[name]] = value
    return Profile(*values)


def _changes(profile: Profile, event: Event) -> dict[str, Any]:
    """The fields of ``profile`` that ``event`` changes, with their new values."""
    ts = event.timestamp_ms
    name = event.name
    props = event.properties
    changes: dict[str, Any] = {
        "first_seen_ms": min(profile.first_seen_ms, ts) if profile.first_seen_ms else ts,
        "last_seen_ms": max(profile.last_seen_ms, ts),
        "event_counts": _count(profile.event_counts, name),
    }
    category = _category(props)
    session, is_new = _next_session(profile.session, event, category if name == "Product Viewed" else None)
    changes["session"] = session
    if is_new:
        changes["sessions"] = profile.sessions + 1

    if name == "Product Viewed":
        product_id = _product_id(props)
        if product_id is not None:
            recent = (product_id, *[p for p in profile.recent_items if p != product_id])
            changes["recent_items"] = recent[:MAX_RECENT_ITEMS]
    elif name == "Product Added":
        changes.update(_cart_change(profile, props, ts, +1))
    elif name == "Product Removed":
        changes.update(_cart_change(profile, props, ts, -1))
    elif name == "Order Completed":
        changes.update(_order(profile, props, ts))

    weight = AFFINITY_WEIGHTS.get(name)
    if weight is not None:
        categories = _order_categories(props) if name == "Order Completed" else [category]
        changes.update(_affinity(profile, [c for c in categories if c], weight, ts))
    stated = _stated_consent(event.context)
    if stated:
        changes["consent"] = {**profile.consent, **stated}
    if event.type == "identify" and props:
        changes["traits"] = _merge_traits(profile.traits, props)
    return changes


def _merge_traits(current: Mapping[str, Any], stated: Mapping[str, Any]) -> dict[str, Any]:
    """Scalar traits only (strings cut to a bounded length), at most :data:`MAX_TRAITS` of them."""
    merged = dict(current)
    for name, value in stated.items():
        if not isinstance(value, (str, int, float, bool)) or len(name) > 64:
            continue
        if name in merged or len(merged) < MAX_TRAITS:
            merged[name] = value[:MAX_TRAIT_LENGTH] if isinstance(value, str) else value
    return merged


def merge_profiles(into: Profile | None, other: Profile, *, user_id: str | None = None) -> Profile:
    """``other`` (an anonymous visitor's profile) folded into ``into`` (the known user's, or a new one for
    ``user_id``): counts, sessions, orders and cart add up, times span both, a consent refusal on either side stands.

    The result keeps ``into``'s stream position and seen messageIds, and lists ``other`` among its aliases.
    """
    base = into or Profile(user_id=user_id or other.user_id)
    counts = dict(base.event_counts)
    for name, count in other.event_counts.items():
        if name in counts or len(counts) < MAX_EVENT_NAMES:
            counts[name] = counts.get(name, 0) + count
    cart = dict(base.cart)
    for product_id, item in other.cart.items():
        held = cart.get(product_id)
        if held is not None:
            cart[product_id] = replace(held, quantity=held.quantity + item.quantity, name=held.name or item.name)
        elif len(cart) < MAX_CART_ITEMS:
            cart[product_id] = item
    as_of = max(base.affinity_as_of_ms, other.affinity_as_of_ms)
    affinity = {c: s * _decay(as_of - base.affinity_as_of_ms) for c, s in base.affinity.items()}
    for category, score in other.affinity.items():
        if category in affinity or len(affinity) < MAX_CATEGORIES:
            affinity[category] = affinity.get(category, 0.0) + score * _decay(as_of - other.affinity_as_of_ms)
    newer, older = (other, base) if other.last_seen_ms > base.last_seen_ms else (base, other)
    recent = tuple(dict.fromkeys((*newer.recent_items, *older.recent_items)))[:MAX_RECENT_ITEMS]
    consent = {p: base.consent.get(p, True) and other.consent.get(p, True) for p in {*base.consent, *other.consent}}
    firsts = [t for t in (base.first_seen_ms, other.first_seen_ms) if t]
    last_orders = [t for t in (base.last_order_ms, other.last_order_ms) if t is not None]
    cart_changes = [t for t in (base.cart_changed_ms, other.cart_changed_ms) if t is not None]
    aliases = tuple(dict.fromkeys((*base.aliases, other.user_id, *other.aliases)))
    return replace(
        base,
        first_seen_ms=min(firsts) if firsts else 0,
        last_seen_ms=max(base.last_seen_ms, other.last_seen_ms),
        event_counts=counts,
        sessions=base.sessions + other.sessions,
        session=newer.session or older.session,
        cart=cart,
        cart_changed_ms=max(cart_changes) if cart_changes else None,
        orders=base.orders + other.orders,
        revenue=round(base.revenue + other.revenue, 2),
        last_order_ms=max(last_orders) if last_orders else None,
        affinity=affinity,
        affinity_as_of_ms=as_of,
        recent_items=recent,
        consent=consent,
        aliases=aliases[-MAX_ALIASES:],
    )


def message_hash(message_id: str) -> int:
    """A stable 63-bit hash of a messageId (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(message_id.encode(), digest_size=8).digest()) >> 1


def decayed_affinity(profile: Profile, now_ms: int) -> dict[str, float]:
    """Category affinity decayed to ``now_ms`` (half-life one week), highest first."""
    factor = _decay(max(0, now_ms - profile.affinity_as_of_ms))
    ranked = sorted(profile.affinity.items(), key=lambda kv: -kv[1])
    return {category: round(score * factor, 4) for category, score in ranked}


def _next_session(session: Session | None, event: Event, viewed_category: str | None) -> tuple[Session, bool]:
    """The session ``event`` belongs to, counting a view of ``viewed_category``; and whether it is a new one."""
    ts = event.timestamp_ms
    explicit = event.session_id
    if session is not None:
        same = explicit == session.id if explicit else ts - session.last_ms <= SESSION_GAP_MS
        if same:
            views = session.category_views
            if viewed_category is not None:
                views = _count(views, viewed_category, MAX_CATEGORIES)
            return Session(session.id, session.started_ms, max(session.last_ms, ts), session.events + 1, views), False
    session_id = explicit or f"{event.user_id}:{ts}"
    views = _count({}, viewed_category, MAX_CATEGORIES) if viewed_category is not None else {}
    return Session(session_id, ts, ts, 1, views), True


def _cart_change(profile: Profile, props: Mapping[str, Any], ts: int, sign: int) -> dict[str, Any]:
    product_id = _product_id(props)
    if product_id is None:
        return {}
    quantity = _positive_int(props.get("quantity"), default=1)
    cart = dict(profile.cart)
    current = cart.get(product_id)
    if sign > 0:
        price = money(props.get("price"))
        if price is None:
            price = current.price if current else 0.0
        held = current.quantity if current else 0
        if current is None and len(cart) >= MAX_CART_ITEMS:
            return {}
        category = _category(props) or (current.category if current else None)
        name = _name(props) or (current.name if current else None)
        cart[product_id] = CartItem(product_id, held + quantity, price, category, name)
    elif current is not None:
        remaining = current.quantity - quantity
        if remaining > 0:
            cart[product_id] = replace(current, quantity=remaining)
        else:
            del cart[product_id]
    else:
        return {}
    return {"cart": cart, "cart_changed_ms": ts}


def _order(profile: Profile, props: Mapping[str, Any], ts: int) -> dict[str, Any]:
    revenue = money(props.get("revenue"))
    if revenue is None:
        revenue = money(props.get("total"))
    if revenue is None:
        revenue = sum((money(p.get("price")) or 0.0) * _positive_int(p.get("quantity"), 1) for p in _products(props))
    return {
        "orders": profile.orders + 1,
        "revenue": round(profile.revenue + revenue, 2),
        "last_order_ms": max(profile.last_order_ms or ts, ts),
        "cart": {},
        "cart_changed_ms": ts,
    }


def _affinity(profile: Profile, categories: list[str], weight: float, ts: int) -> dict[str, Any]:
    if not categories:
        return {}
    as_of = max(profile.affinity_as_of_ms, ts)
    factor = _decay(as_of - profile.affinity_as_of_ms) if profile.affinity_as_of_ms else 1.0
    scores = {c: s * factor for c, s in profile.affinity.items()}
    boost = weight * _decay(as_of - ts)
    for category in categories:
        scores[category] = scores.get(category, 0.0) + boost
    if len(scores) > MAX_CATEGORIES:
        scores = dict(sorted(scores.items(), key=lambda kv: -kv[1])[:MAX_CATEGORIES])
    return {"affinity": scores, "affinity_as_of_ms": as_of}


def _decay(elapsed_ms: int) -> float:
    return 0.5 ** (elapsed_ms / AFFINITY_HALF_LIFE_MS)


def _count(counts: Mapping[str, int], key: str, limit: int = MAX_EVENT_NAMES) -> dict[str, int]:
    if key not in counts and len(counts) >= limit - 1:
        key = OTHER
    updated = dict(counts)
    updated[key] = updated.get(key, 0) + 1
    return updated


def _stated_consent(context: Mapping[str, Any]) -> dict[str, bool]:
    """Nudge's purposes an event states consent for; a consent manager's other categories (``C0001``,
    ``Advertising``) and values that are not true/false are ignored."""
    consent = context.get("consent")
    preferences = consent.get("categoryPreferences") if isinstance(consent, dict) else None
    if not isinstance(preferences, dict):
        return {}
    return {k: v for k, v in preferences.items() if k in PURPOSES and isinstance(v, bool)}


def _products(props: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    products = props.get("products")
    if not isinstance(products, list):
        return []
    return [p for p in products[:MAX_CART_ITEMS] if isinstance(p, dict)]


def _order_categories(props: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys(c for c in map(_category, _products(props)) if c))


def _product_id(props: Mapping[str, Any]) -> str | None:
    value = props.get("product_id", props.get("sku"))
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
        return str(value)[:128]
    return None


def _name(props: Mapping[str, Any]) -> str | None:
    value = props.get("name")
    if not isinstance(value, str):
        return None
    return value.strip()[:MAX_NAME_LENGTH] or None


def _category(props: Mapping[str, Any]) -> str | None:
    value = props.get("category")
    return value[:128] if isinstance(value, str) and value else None


def money(value: object) -> float | None:
    """A usable price, revenue or total: a number from 0 to :data:`MAX_MONEY`; ``None`` for anything else.

    The one rule for money, used by the fold, the features and stored state. A larger number (JSON allows 1e308)
    would make a cart value or revenue infinite, which the JSON changelog cannot hold and the models cannot use;
    a negative price means nothing. Such a value is ignored like a price sent as text, not refused with the event:
    the validator checks an event's envelope, not its properties, and the view or add still counts without a price.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_MONEY:
        return float(value)
    return None


def _positive_int(value: object, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_QUANTITY:
        return value
    return default
