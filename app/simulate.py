"""Simulated e-commerce shoppers emitting Segment-spec tracking events.

Used to drive the engine with realistic, reproducible traffic: many shoppers browse at the same time, each
visit (session) centres on one or two favourite categories, some visits fill a cart, and carts are either
abandoned or bought, more often the more engaged the visit. Optionally a share of the output is malformed, the
way buggy clients and proxies send it, to exercise validation and the dead-letter path.

Pure: all randomness comes from one ``random.Random(seed)``, time is simulated from ``start_ms``.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

SESSION_TIMEOUT_MS = 30 * MINUTE_MS
"""Inactivity after which analytics tools start a new session; visits of one shopper are further apart."""

ARRIVAL_WINDOW_MS = 2 * HOUR_MS
"""First visits are spread over this window so that shoppers overlap instead of arriving all at once."""

IDENTIFIED_SHARE = 0.7
MAX_CART_LINES = 8

_EPOCH_DATE = date(1970, 1, 1)


def iso_ms(ms: int) -> str:
    """Format epoch milliseconds as a UTC ISO-8601 string with milliseconds: ``2026-01-01T00:00:00.000Z``."""
    # Plain arithmetic plus a cached date: several times faster than datetime formatting, which dominated the
    # simulator's profile.
    days, ms_of_day = divmod(ms, DAY_MS)
    hours, rest = divmod(ms_of_day, HOUR_MS)
    minutes, rest = divmod(rest, MINUTE_MS)
    seconds, millis = divmod(rest, SECOND_MS)
    return f"{_iso_date(days)}T{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


@lru_cache(maxsize=1024)
def _iso_date(days_since_epoch: int) -> str:
    """The ISO date ``days_since_epoch`` days after 1970-01-01."""
    return (_EPOCH_DATE + timedelta(days=days_since_epoch)).isoformat()


#: The categories of :func:`load_event`'s product views.
LOAD_CATEGORIES = ("shoes", "bags", "shirts", "jackets", "hats", "socks", "watches", "belts")


def load_event(
    user: str, message_id: str, stamp: str, *, picker: random.Random, signal: tuple[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """One event of the benches' and the fault suite's load, which count what their signal events cause: the
    ``signal`` event (its name and properties) if given, else a view of a product that ``picker`` chooses."""
    if signal is not None:
        name, properties = signal
    else:
        category, product = picker.choice(LOAD_CATEGORIES), picker.randrange(400)
        name = "Product Viewed"
        properties = {
            "product_id": f"{category}-{product:03d}",
            "category": category,
            "price": round(9.99 + product * 0.25, 2),
            "quantity": 1,
        }
    return {
        "type": "track",
        "userId": user,
        "event": name,
        "properties": properties,
        "messageId": message_id,
        "timestamp": stamp,
    }


def simulate_events(
    *,
    users: int,
    events: int,
    seed: int = 7,
    start_ms: int = 1_767_225_600_000,
    bad_share: float = 0.0,
) -> Iterator[dict[str, Any] | bytes]:
    """Yield exactly ``events`` simulated items from ``users`` shoppers, in non-decreasing timestamp order.

    Valid items are Segment ``track`` / ``page`` event dicts. With ``bad_share`` > 0 about that share of the
    items are malformed instead (raw ``bytes`` or dicts that break the spec); they replace nothing in the
    shoppers' stories, so the valid events on their own stay consistent. The same arguments always give the
    same output.
    """
    if users < 1:
        raise ValueError(f"users must be at least 1, not {users}")
    if events < 0:
        raise ValueError(f"events must not be negative, not {events}")
    if not 0.0 <= bad_share <= 1.0:
        raise ValueError(f"bad_share must be within [0, 1], not {bad_share}")
    # Validation above runs at call time; the generator below only starts on the first next().
    return _generate(users=users, events=events, seed=seed, start_ms=start_ms, bad_share=bad_share)


# --- catalogue ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Category:
    """A product category with its brands and the price range of its products."""

    code: str
    brands: tuple[str, ...]
    min_price: float
    max_price: float

    @property
    def search_query(self) -> str:
        """What a shopper types to find this category: the last part of the code."""
        return self.code.rsplit(".", 1)[-1].replace("_", " ")


# Codes follow the REES46 data set, so simulated and replayed traffic look alike to the engine.
_CATEGORIES: tuple[_Category, ...] = (
    _Category("electronics.smartphone", ("samsung", "apple", "xiaomi", "huawei", "oppo"), 90.0, 1400.0),
    _Category("electronics.audio.headphone", ("sony", "jbl", "apple", "sennheiser"), 12.0, 380.0),
    _Category("electronics.video.tv", ("samsung", "lg", "sony", "tcl"), 160.0, 2500.0),
    _Category("computers.notebook", ("lenovo", "hp", "asus", "acer", "apple"), 280.0, 2600.0),
    _Category("appliances.kitchen.refrigerators", ("lg", "samsung", "bosch", "beko"), 240.0, 1900.0),
    _Category("appliances.kitchen.washer", ("bosch", "samsung", "lg", "indesit"), 190.0, 950.0),
    _Category("apparel.shoes", ("nike", "adidas", "puma", "skechers", "reebok"), 25.0, 220.0),
    _Category("apparel.tshirt", ("nike", "adidas", "levis", "tommy"), 8.0, 65.0),
    _Category("furniture.living_room.sofa", ("ikea", "ashley", "hoff"), 150.0, 1600.0),
    _Category("kids.toys", ("lego", "hasbro", "mattel", "playmobil"), 5.0, 160.0),
    _Category("sport.bicycle", ("trek", "giant", "stels", "merida"), 120.0, 1800.0),
    _Category("construction.tools.drill", ("bosch", "makita", "dewalt", "metabo"), 35.0, 420.0),
)

_PRODUCTS_PER_CATEGORY = 60


@dataclass(frozen=True, slots=True)
class _Product:
    """One item for sale; its price is fixed for the whole simulation."""

    product_id: str
    category: str
    brand: str
    price: float


def _build_catalogue(rng: random.Random) -> list[list[_Product]]:
    """Products per category (same order as ``_CATEGORIES``); earlier products are the more popular ones."""
    catalogue = []
    for index, category in enumerate(_CATEGORIES):
        low, high = math.log(category.min_price), math.log(category.max_price)
        products = [
            _Product(
                product_id=str(100_000 * (index + 1) + number),
                category=category.code,
                brand=rng.choice(category.brands),
                # Log-uniform: cheap items are common, expensive ones rarer, as in real shops.
                price=round(math.exp(rng.uniform(low, high)), 2),
            )
            for number in range(_PRODUCTS_PER_CATEGORY)
        ]
        catalogue.append(products)
    return catalogue


def _pick_product(rng: random.Random, products: list[_Product]) -> _Product:
    """A product of one category, skewed towards the popular ones (a few bestsellers get most views)."""
    return products[int(len(products) * rng.random() ** 2.5)]


# --- shoppers -----------------------------------------------------------------------------------------------

_USER_AGENTS_DESKTOP = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
    "Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
)
_USER_AGENTS_MOBILE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Mobile Safari/537.36",
)


class _Step(NamedTuple):
    """The next thing a shopper does, before it is given a time and ids: event type, name, properties."""

    type: str
    name: str
    properties: dict[str, Any]


@dataclass(slots=True)
class _Shopper:
    """One simulated person: stable traits, the cart (kept across visits) and the visit in progress."""

    index: int
    id_key: str  # "userId" for logged-in shoppers, "anonymousId" for the others
    id_value: str
    user_agent: str
    favourites: tuple[int, ...]  # indices into _CATEGORIES
    mean_views: float  # how long this shopper's visits are
    add_rate: float  # chance that a product view leads to an add-to-cart
    mean_return_gap_ms: float  # how soon this shopper comes back
    cart: dict[str, dict[str, Any]] = field(default_factory=dict)  # product_id -> cart line
    visits: int = 0
    orders: int = 0
    session_id: str = ""
    story: Iterator[_Step] = field(default_factory=lambda: iter(()))


def _new_shopper(rng: random.Random, index: int) -> _Shopper:
    """Draw the traits of shopper number ``index``."""
    identified = rng.random() < IDENTIFIED_SHARE
    mobile = rng.random() < 0.6
    return _Shopper(
        index=index,
        id_key="userId" if identified else "anonymousId",
        id_value=f"u{index}" if identified else f"a{index}",
        user_agent=rng.choice(_USER_AGENTS_MOBILE if mobile else _USER_AGENTS_DESKTOP),
        favourites=tuple(rng.sample(range(len(_CATEGORIES)), k=rng.choice((1, 2, 2)))),
        mean_views=rng.uniform(1.5, 7.0),
        add_rate=rng.uniform(0.02, 0.12),
        # Log-uniform between an hour and a week: a few regulars, many who rarely return.
        mean_return_gap_ms=math.exp(rng.uniform(math.log(HOUR_MS), math.log(7 * DAY_MS))),
    )


# --- one visit ----------------------------------------------------------------------------------------------


def _product_properties(product: _Product, quantity: int) -> dict[str, Any]:
    """The properties of a product event (also a cart line)."""
    return {
        "product_id": product.product_id,
        "category": product.category,
        "brand": product.brand,
        "price": product.price,
        "quantity": quantity,
    }


def _cart_products(cart: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of the cart lines as the ``products`` list of cart and order events."""
    return [
        {
            "product_id": line["product_id"],
            "price": line["price"],
            "quantity": line["quantity"],
            "category": line["category"],
        }
        for line in cart.values()
    ]


def _cart_total(cart: dict[str, dict[str, Any]]) -> float:
    """What the cart costs, rounded to cents."""
    total: float = sum(line["price"] * line["quantity"] for line in cart.values())
    return round(total, 2)


def _checkout_probability(views: int, cart_lines: int) -> float:
    """How likely a visit with a non-empty cart goes to checkout: rises with engagement."""
    return min(0.8, 0.01 + 0.02 * views + 0.04 * cart_lines)


def _visit(rng: random.Random, shopper: _Shopper, catalogue: list[list[_Product]]) -> Iterator[_Step]:
    """One visit, step by step: maybe the home page and a search, product views mostly in one favourite
    category with adds and removes along the way, then maybe checkout. Mutates the shopper's cart."""
    if rng.random() < 0.3:
        yield _Step("page", "Home", {"path": "/", "title": "Home"})
    focus = rng.choice(shopper.favourites)
    if rng.random() < 0.2:
        yield _Step("track", "Products Searched", {"query": _CATEGORIES[focus].search_query})
    views = 1 + min(40, int(rng.expovariate(1.0 / shopper.mean_views)))
    for _ in range(views):
        product = _pick_product(rng, catalogue[_browsed_category(rng, shopper, focus)])
        yield _Step("track", "Product Viewed", _product_properties(product, 1))
        if len(shopper.cart) < MAX_CART_LINES and rng.random() < shopper.add_rate:
            yield _add_to_cart(rng, shopper.cart, product)
        if shopper.cart and rng.random() < 0.02:
            yield _remove_from_cart(rng, shopper.cart)
    if shopper.cart:
        yield from _checkout(rng, shopper, views)


def _browsed_category(rng: random.Random, shopper: _Shopper, focus: int) -> int:
    """The category of the next product view: mostly the visit's focus, else another favourite or any."""
    draw = rng.random()
    if draw < 0.8:
        return focus
    if draw < 0.92:
        return rng.choice(shopper.favourites)
    return rng.randrange(len(_CATEGORIES))


def _add_to_cart(rng: random.Random, cart: dict[str, dict[str, Any]], product: _Product) -> _Step:
    """Put the product just viewed in the cart (usually one piece) and return the matching event."""
    quantity = 1 if rng.random() < 0.85 else rng.choice((2, 3))
    line = cart.setdefault(product.product_id, _product_properties(product, 0))
    line["quantity"] += quantity
    return _Step("track", "Product Added", _product_properties(product, quantity))


def _remove_from_cart(rng: random.Random, cart: dict[str, dict[str, Any]]) -> _Step:
    """Take one whole line out of a non-empty cart and return the matching event."""
    line = cart.pop(rng.choice(list(cart)))
    return _Step("track", "Product Removed", dict(line))


def _checkout(rng: random.Random, shopper: _Shopper, views: int) -> Iterator[_Step]:
    """End of a visit with a full cart: look at it, then buy it or leave it for a later visit."""
    cart = shopper.cart
    if rng.random() < 0.6:
        yield _Step("track", "Cart Viewed", {"cart_id": f"cart-{shopper.id_value}", "products": _cart_products(cart)})
    if rng.random() >= _checkout_probability(views, len(cart)):
        return  # abandoned: the cart stays for the next visit
    shopper.orders += 1
    order = {
        "order_id": f"o-{shopper.id_value}-{shopper.orders}",
        "revenue": _cart_total(cart),
        "currency": "USD",
        "products": _cart_products(cart),
    }
    yield _Step("track", "Checkout Started", order)
    if rng.random() < 0.2:
        return  # dropped out at payment; the cart stays
    purchase = {**order, "products": _cart_products(cart)}
    cart.clear()
    yield _Step("track", "Order Completed", purchase)


# --- the interleaved stream ---------------------------------------------------------------------------------


def _think_time_ms(rng: random.Random) -> int:
    """Pause between two events of one visit: a few seconds to a couple of minutes."""
    return 2 * SECOND_MS + min(150 * SECOND_MS, int(rng.expovariate(1.0 / (25 * SECOND_MS))))


def _return_gap_ms(rng: random.Random, shopper: _Shopper) -> int:
    """Time from the last event of a visit to the first of the next: always beyond the session timeout."""
    return SESSION_TIMEOUT_MS + MINUTE_MS + int(rng.expovariate(1.0 / shopper.mean_return_gap_ms))


def _start_visit(rng: random.Random, shopper: _Shopper, catalogue: list[list[_Product]], seed: int) -> _Step:
    """Open a new session for the shopper and return its first step."""
    shopper.visits += 1
    shopper.session_id = f"s{seed}-{shopper.index}-{shopper.visits}"
    shopper.story = _visit(rng, shopper, catalogue)
    return next(shopper.story)  # never empty: a visit always has at least one product view


def _next_turn(
    rng: random.Random, shopper: _Shopper, catalogue: list[list[_Product]], seed: int, now_ms: int
) -> tuple[int, int, _Step]:
    """The shopper's next queue entry (due time, shopper index, step): in this visit or the next one."""
    step = next(shopper.story, None)
    if step is not None:
        return now_ms + _think_time_ms(rng), shopper.index, step
    due_ms = now_ms + _return_gap_ms(rng, shopper)
    return due_ms, shopper.index, _start_visit(rng, shopper, catalogue, seed)


def _to_event(shopper: _Shopper, step: _Step, timestamp_ms: int, message_id: str) -> dict[str, Any]:
    """Dress a step as a Segment event of this shopper at this time."""
    event: dict[str, Any] = {"type": step.type}
    event["event" if step.type == "track" else "name"] = step.name
    event[shopper.id_key] = shopper.id_value
    event["messageId"] = message_id
    event["timestamp"] = iso_ms(timestamp_ms)
    event["properties"] = step.properties
    event["context"] = {"sessionId": shopper.session_id, "userAgent": shopper.user_agent}
    return event


def _generate(
    *, users: int, events: int, seed: int, start_ms: int, bad_share: float
) -> Iterator[dict[str, Any] | bytes]:
    """The stream behind :func:`simulate_events`: always emit the step of the shopper due first."""
    rng = random.Random(seed)
    catalogue = _build_catalogue(rng)
    shoppers = [_new_shopper(rng, index) for index in range(users)]
    # One entry per shopper; the shopper index breaks ties, so steps are never compared and order is stable.
    queue = [
        (start_ms + int(rng.random() * ARRIVAL_WINDOW_MS), s.index, _start_visit(rng, s, catalogue, seed))
        for s in shoppers
    ]
    heapq.heapify(queue)
    for number in range(events):
        due_ms, index, step = queue[0]
        shopper = shoppers[index]
        message_id = f"sim-{seed}-{number}"
        if bad_share and rng.random() < bad_share:
            yield _malformed(rng, shopper, catalogue, due_ms, message_id)
            continue
        yield _to_event(shopper, step, due_ms, message_id)
        heapq.heapreplace(queue, _next_turn(rng, shopper, catalogue, seed, due_ms))


# --- malformed input ----------------------------------------------------------------------------------------

_MALFORMED_KINDS = (
    "not_json",
    "json_array",
    "no_identity",
    "user_id_wrong_type",
    "unknown_type",
    "properties_not_object",
    "unparseable_timestamp",
    "future_timestamp",
    "missing_event",
)


def _malformed(
    rng: random.Random, shopper: _Shopper, catalogue: list[list[_Product]], now_ms: int, message_id: str
) -> dict[str, Any] | bytes:
    """A record breaking the spec in one way, as a buggy client or proxy would send it.

    It is built from a throw-away product view of the shopper due next, so that shopper's story is untouched.
    """
    product = _pick_product(rng, catalogue[rng.choice(shopper.favourites)])
    event = _to_event(shopper, _Step("track", "Product Viewed", _product_properties(product, 1)), now_ms, message_id)
    kind = rng.choice(_MALFORMED_KINDS)
    if kind == "not_json":
        raw = json.dumps(event).encode()
        return raw[: len(raw) // 2]  # cut off mid-record
    if kind == "json_array":
        return json.dumps([event]).encode()
    if kind == "no_identity":
        del event[shopper.id_key]
    elif kind == "user_id_wrong_type":
        del event[shopper.id_key]
        event["userId"] = rng.choice((shopper.index, [shopper.id_value]))
    elif kind == "unknown_type":
        event["type"] = rng.choice(("trak", "purchase", "click"))
    elif kind == "properties_not_object":
        event["properties"] = rng.choice((f"product_id={product.product_id}", [product.product_id]))
    elif kind == "unparseable_timestamp":
        event["timestamp"] = rng.choice(("yesterday", "2026-13-45T25:61:00.000Z", "01/02/2026 10:00"))
    elif kind == "future_timestamp":
        event["timestamp"] = iso_ms(now_ms + 3 * DAY_MS)
    else:  # missing_event
        del event["event"]
    return event
