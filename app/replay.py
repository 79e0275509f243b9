"""Real shopper behaviour from the REES46 e-commerce data set, as Segment tracking events.

Used to replay a real event stream through the engine (optionally paced by :func:`event_time_ms`) and to judge
models on behaviour nobody on the project made up. The CSV columns are
``event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session``.

Pure: reads the file it is given and nothing else.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.simulate import iso_ms

COLUMNS = (
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
)

EVENT_NAMES = {
    "view": "Product Viewed",
    "cart": "Product Added",
    "remove_from_cart": "Product Removed",
    "purchase": "Order Completed",
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rees46_events(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the rows of a REES46 CSV file as Segment ``track`` events, in file order.

    Rows that are incomplete or do not parse are skipped; the published file ends with a truncated line.
    Raises ``ValueError`` if the header is not the REES46 one.
    """
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header is None or tuple(header) != COLUMNS:
            raise ValueError(f"{path}: not a REES46 file, header is {header!r:.200}")
        for row in reader:
            event = _row_to_event(row, line_number=reader.line_num)
            if event is not None:
                yield event


def event_time_ms(event: dict[str, Any]) -> int:
    """The event's ``timestamp`` (ISO-8601; naive means UTC) as epoch milliseconds, for paced replay."""
    moment = datetime.fromisoformat(event["timestamp"])
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _to_ms(moment)


def _to_ms(moment: datetime) -> int:
    """Exact epoch milliseconds of an aware datetime."""
    # Integer arithmetic: float seconds * 1000 can land one millisecond short.
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _row_to_event(row: list[str], *, line_number: int) -> dict[str, Any] | None:
    """One CSV row as an event, or ``None`` if the row is incomplete, unparseable or of an unknown type."""
    if len(row) != len(COLUMNS):
        return None
    event_time, event_type, product_id, category_id, category_code, brand, price, user_id, session = row
    name = EVENT_NAMES.get(event_type)
    timestamp_ms = _parse_event_time(event_time)
    price_value = _parse_price(price)
    if name is None or timestamp_ms is None or price_value is None:
        return None
    if not (product_id.isdigit() and user_id.isdigit() and category_id.isdigit()):
        return None

    product = {
        "product_id": product_id,
        "category": category_code or f"cat:{category_id}",
        "brand": brand,
        "price": price_value,
        "quantity": 1,
    }
    if not brand:
        del product["brand"]
    if name == "Order Completed":
        properties: dict[str, Any] = {
            # One row is one purchased item; the file has no order id, so the line number makes one up.
            "order_id": f"rees46-order-{line_number}",
            "revenue": price_value,
            "products": [
                {
                    "product_id": product_id,
                    "price": price_value,
                    "quantity": 1,
                    "category": product["category"],
                }
            ],
        }
    else:
        properties = product
    return {
        "type": "track",
        "event": name,
        "userId": f"r{user_id}",
        "messageId": f"rees46-{line_number}",
        "timestamp": iso_ms(timestamp_ms),
        "properties": properties,
        "context": {"sessionId": session} if session else {},
    }


def _parse_event_time(value: str) -> int | None:
    """``2019-10-01 00:00:00 UTC`` as epoch milliseconds, or ``None`` if it is not in that form."""
    if not value.endswith(" UTC"):
        return None
    try:
        moment = datetime.fromisoformat(value[:-4])
    except ValueError:
        return None
    if moment.tzinfo is not None:
        return None
    return _to_ms(moment.replace(tzinfo=UTC))


def _parse_price(value: str) -> float | None:
    """A non-negative finite price, or ``None``."""
    try:
        price = float(value)
    except ValueError:
        return None
    if not 0.0 <= price < float("inf"):
        return None
    return round(price, 2)
