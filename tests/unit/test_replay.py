"""The REES46 replay: real rows become Segment track events, incomplete rows are dropped."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from app.cli import DEFAULT_REES46
from app.replay import event_time_ms, rees46_events

REES46 = DEFAULT_REES46  # ../shared beside the checkout, as in CI
HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"


@pytest.fixture(scope="module")
def rees46() -> list[dict[str, Any]]:
    return list(rees46_events(REES46))


def _write_csv(tmp_path: Path, *rows: str, end: str = "\r\n") -> Path:
    path = tmp_path / "events.csv"
    path.write_bytes((end.join((HEADER, *rows))).encode())
    return path


def test_all_complete_rows_and_only_those(rees46: list[dict[str, Any]]) -> None:
    assert len(rees46) == 17_434  # the truncated last line is dropped
    assert rees46[0]["messageId"] == "rees46-2"
    assert rees46[-1]["messageId"] == "rees46-17435"
    assert len({e["messageId"] for e in rees46}) == len(rees46)


def test_counts_by_event_users_and_sessions(rees46: list[dict[str, Any]]) -> None:
    assert Counter(e["event"] for e in rees46) == {
        "Product Viewed": 17_055,
        "Product Added": 165,
        "Order Completed": 214,
    }
    assert len({e["userId"] for e in rees46}) == 4_504
    assert len({e["context"]["sessionId"] for e in rees46}) == 5_066


def test_first_row_becomes_this_event(rees46: list[dict[str, Any]]) -> None:
    # 2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde-...
    assert rees46[0] == {
        "type": "track",
        "event": "Product Viewed",
        "userId": "r541312140",
        "messageId": "rees46-2",
        "timestamp": "2019-10-01T00:00:00.000Z",
        "properties": {
            "product_id": "44600062",
            "category": "cat:2103807459595387724",
            "brand": "shiseido",
            "price": 35.79,
            "quantity": 1,
        },
        "context": {"sessionId": "72d76fde-8bb3-4e00-8c23-a032dfed738c"},
    }


def test_events_are_in_time_order_within_the_published_window(rees46: list[dict[str, Any]]) -> None:
    times = [event_time_ms(e) for e in rees46]
    assert times == sorted(times)
    assert times[0] == 1_569_888_000_000  # 2019-10-01T00:00:00Z
    assert times[-1] == 1_569_898_200_000  # 2019-10-01T02:50:00Z


def test_every_event_has_well_typed_fields(rees46: list[dict[str, Any]]) -> None:
    for event in rees46:
        assert event["userId"].startswith("r") and event["userId"][1:].isdigit()
        properties = event["properties"]
        if event["event"] == "Order Completed":
            (product,) = properties["products"]
            assert properties["revenue"] == product["price"]
            assert product["quantity"] == 1
            assert isinstance(product["product_id"], str) and isinstance(product["category"], str)
        else:
            assert isinstance(properties["product_id"], str)
            assert isinstance(properties["price"], float)
            assert properties["quantity"] == 1
            assert properties.get("brand", "x")  # omitted rather than empty


def test_purchases_get_distinct_order_ids(rees46: list[dict[str, Any]]) -> None:
    order_ids = [e["properties"]["order_id"] for e in rees46 if e["event"] == "Order Completed"]
    assert len(order_ids) == len(set(order_ids)) == 214


def test_maps_each_event_type_and_fills_gaps(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path,
        "2019-10-01 00:00:05 UTC,cart,1004856,2053013555631882655,electronics.smartphone,samsung,130.76,7,s1",
        "2019-10-01 00:00:06 UTC,remove_from_cart,1004856,2053013555631882655,electronics.smartphone,samsung,"
        "130.76,7,s1",
        "2019-10-01 00:00:07 UTC,purchase,5,42,,,9.5,7,s1",
        "2019-10-01 00:00:08 UTC,view,6,42,,,0.00,8,",
    )
    added, removed, bought, viewed = rees46_events(path)
    assert added["event"] == "Product Added"
    assert added["properties"]["category"] == "electronics.smartphone"
    assert added["properties"]["brand"] == "samsung"
    assert removed["event"] == "Product Removed"
    assert bought["event"] == "Order Completed"
    assert bought["properties"] == {
        "order_id": "rees46-order-4",
        "revenue": 9.5,
        "products": [{"product_id": "5", "price": 9.5, "quantity": 1, "category": "cat:42"}],
    }
    assert bought["userId"] == "r7" and bought["context"] == {"sessionId": "s1"}
    assert "brand" not in viewed["properties"]
    assert viewed["properties"]["price"] == 0.0
    assert viewed["context"] == {}


def test_skips_truncated_and_unparseable_rows(tmp_path: Path) -> None:
    good = "2019-10-01 00:00:00 UTC,view,1,2,a.b,x,1.00,3,s"
    path = _write_csv(
        tmp_path,
        good,
        "2019-10-01 00:00:00 UTC,view,1,2,a.b,x,1.00,3",  # a column short
        "2019-10-01 00:00:00 UTC,view,1,2,a.b,x,1.00,3,s,extra",
        "2019-10-01 25:00:00 UTC,view,1,2,a.b,x,1.00,3,s",  # no such hour
        "2019-10-01 00:00:00,view,1,2,a.b,x,1.00,3,s",  # no time zone
        "2019-10-01 00:00:00 UTC,view,1,2,a.b,x,cheap,3,s",
        "2019-10-01 00:00:00 UTC,view,1,2,a.b,x,-1.00,3,s",
        "2019-10-01 00:00:00 UTC,view,1,2,a.b,x,nan,3,s",
        "2019-10-01 00:00:00 UTC,view,1,2,a.b,x,1.00,someone,s",
        "2019-10-01 00:00:00 UTC,wishlist,1,2,a.b,x,1.00,3,s",
        good,
        "2019-10-01 00:00:00 UTC,view,1,2,a.b,x,1.00,52040",  # truncated, no line end
    )
    assert [e["messageId"] for e in rees46_events(path)] == ["rees46-2", "rees46-12"]


def test_reads_lf_files_too(tmp_path: Path) -> None:
    path = _write_csv(tmp_path, "2019-10-01 00:00:00 UTC,view,1,2,a.b,x,1.00,3,s", end="\n")
    (event,) = rees46_events(path)
    assert event["context"] == {"sessionId": "s"}


def test_refuses_a_file_that_is_not_rees46(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("SessionId,ItemId,Time\n1,2,3\n")
    with pytest.raises(ValueError, match="not a REES46 file"):
        list(rees46_events(path))


def test_event_time_ms_reads_iso_timestamps() -> None:
    assert event_time_ms({"timestamp": "2019-10-01T00:00:00.000Z"}) == 1_569_888_000_000
    assert event_time_ms({"timestamp": "2026-01-01T00:00:00.123Z"}) == 1_767_225_600_123
    assert event_time_ms({"timestamp": "2026-01-01T01:00:00.001+01:00"}) == 1_767_225_600_001
    assert event_time_ms({"timestamp": "2026-01-01T00:00:00"}) == 1_767_225_600_000  # naive means UTC
    with pytest.raises(ValueError):
        event_time_ms({"timestamp": "yesterday"})
