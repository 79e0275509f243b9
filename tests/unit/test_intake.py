"""The collector's pure core on batches: how many events a batch may hold, and what its answer lists."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.events import encode_batch, encode_event, normalise
from app.intake import (
    MAX_BATCH_EVENTS,
    MAX_LISTED_REJECTIONS,
    HttpError,
    batch_answer,
    batch_events,
    check_write_key,
    events_in,
    single_event,
)

NOW_MS = 1_772_366_400_000  # 2026-03-01T12:00:00Z


def track(index: int) -> dict[str, Any]:
    return {"type": "track", "event": "Product Viewed", "userId": f"user-{index}", "messageId": f"m{index}"}


def test_a_batch_over_the_event_limit_is_refused_whole_with_413() -> None:
    """A 538-byte gzip body inflates to ``{"batch":[1,1,...]}`` of 250,000 items: refused before any is read."""
    with pytest.raises(HttpError) as refused:
        batch_events({"batch": [1] * 250_000}, now_ms=NOW_MS)
    assert refused.value.status == 413
    assert str(refused.value) == f"batch of 250000 events is over the {MAX_BATCH_EVENTS} event limit: split it"


def test_a_request_counts_its_events_for_the_rate_limit_valid_or_not() -> None:
    assert events_in({"userId": "u", "event": "E"}, event_type="track") == 1
    assert events_in({"batch": [{"type": "track"}, 5, "x"]}, event_type=None) == 3
    for body, status in (({"batch": 5}, 400), ({"batch": [{}] * (MAX_BATCH_EVENTS + 1)}, 413)):
        with pytest.raises(HttpError) as refused:
            events_in(body, event_type=None)
        assert refused.value.status == status


def test_the_write_key_accepted_is_returned_to_name_its_rate_limit() -> None:
    keys = {"wk-a", "wk-b"}
    assert check_write_key("Basic d2stYjo=", {}, keys) == "wk-b"  # base64("wk-b:")
    assert check_write_key("", {"writeKey": "wk-a"}, keys) == "wk-a"


def test_a_batch_at_the_event_limit_keeps_every_good_event() -> None:
    batch = [track(i) for i in range(MAX_BATCH_EVENTS - 1)] + [{"type": "track"}]
    accepted, rejected = batch_events({"batch": batch}, now_ms=NOW_MS)
    assert [event["messageId"] for event in accepted] == [f"m{i}" for i in range(MAX_BATCH_EVENTS - 1)]
    assert rejected == [{"index": MAX_BATCH_EVENTS - 1, "message": "userId or anonymousId is required"}]


def test_a_batch_without_refusals_is_answered_with_success_only() -> None:
    assert batch_answer(3, []) == (200, {"success": True})


def test_the_answer_lists_the_first_refusals_and_counts_them_all() -> None:
    batch = [5] * 2 * MAX_LISTED_REJECTIONS + [track(0)]
    accepted, rejected = batch_events({"batch": batch}, now_ms=NOW_MS)
    status, answer = batch_answer(len(accepted), rejected)
    assert status == 200
    assert answer["success"] is True and answer["accepted"] == 1
    assert [r["index"] for r in answer["rejected"]] == list(range(MAX_LISTED_REJECTIONS))
    assert answer["rejectedCount"] == 2 * MAX_LISTED_REJECTIONS


def test_the_answer_to_a_batch_of_refusals_only_is_a_bounded_400() -> None:
    accepted, rejected = batch_events({"batch": [1] * MAX_BATCH_EVENTS}, now_ms=NOW_MS)
    status, answer = batch_answer(len(accepted), rejected)
    assert status == 400
    assert answer["message"] == "no valid event"
    assert len(answer["rejected"]) == MAX_LISTED_REJECTIONS
    assert answer["rejectedCount"] == MAX_BATCH_EVENTS
    assert len(orjson.dumps(answer)) < 10_000


def test_no_write_key_reaches_the_topic_from_a_single_event_or_a_batch() -> None:
    secret = "wk-secret-of-the-site"
    event = single_event({**track(0), "writeKey": secret}, event_type="track", now_ms=NOW_MS)
    payload = {"writeKey": secret, "batch": [{**track(1), "writeKey": secret}, track(2)]}
    accepted, rejected = batch_events(payload, now_ms=NOW_MS)
    assert rejected == [] and len(accepted) == 2
    record = encode_batch([encode_event(e) for e in [event, *accepted]])  # what the collector produces
    assert secret.encode() not in record


def test_a_batch_sent_at_corrects_its_items_and_an_item_sent_at_wins() -> None:
    stamped = {**track(0), "timestamp": "2026-03-03T11:59:00.000Z"}  # a client clock 2 days ahead
    payload = {"sentAt": "2026-03-03T12:00:00.000Z", "batch": [stamped, {**stamped, "sentAt": stamped["timestamp"]}]}
    (corrected, own), _ = batch_events(payload, now_ms=NOW_MS)
    assert corrected["timestamp"] == "2026-03-01T11:59:00.000Z"
    assert corrected["originalTimestamp"] == stamped["timestamp"]
    assert own["timestamp"] == "2026-03-01T12:00:00.000Z"


def test_an_invalid_batch_sent_at_refuses_each_item_with_the_reason() -> None:
    accepted, rejected = batch_events({"sentAt": "soon", "batch": [track(0), track(1)]}, now_ms=NOW_MS)
    assert accepted == []
    assert rejected == [{"index": i, "message": "sentAt is not an ISO-8601 date-time: 'soon'"} for i in (0, 1)]


def test_a_retried_batch_is_recognised_though_its_sent_at_and_arrival_moved() -> None:
    """Segment's SDKs stamp sentAt on every send; a retried batch's events keep their derived messageIds."""
    item = {"type": "track", "event": "Product Viewed", "userId": "u1", "timestamp": "2026-03-01T11:59:00.000Z"}
    (first,), _ = batch_events({"sentAt": "2026-03-01T12:00:00.000Z", "batch": [item]}, now_ms=NOW_MS)
    (retry,), _ = batch_events({"sentAt": "2026-03-01T12:00:30.000Z", "batch": [item]}, now_ms=NOW_MS + 31_000)
    assert first["messageId"] == retry["messageId"]
    assert first["messageId"].startswith("auto-")


def test_identical_events_without_timestamp_in_one_batch_stay_apart() -> None:
    """Two clicks sent in one batch with no messageId and no timestamp are two events, not a retry of one."""
    click = {"type": "track", "event": "Button Clicked", "userId": "u1"}
    accepted, _ = batch_events(
        {"batch": [click, click, {**click, "timestamp": "2026-03-01T11:59:00.000Z"}]}, now_ms=NOW_MS
    )
    assert len({event["messageId"] for event in accepted[:2]}) == 2
    # The first keeps the id it had before positions counted, and a timestamp still makes a retry's id stable.
    assert accepted[0]["messageId"] == normalise(click, now_ms=NOW_MS)["messageId"]
