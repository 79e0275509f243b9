"""The collector's pure core on batches: how many events a batch may hold, and what its answer lists."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.intake import MAX_BATCH_EVENTS, MAX_LISTED_REJECTIONS, HttpError, batch_answer, batch_events

NOW_MS = 1_772_366_400_000  # 2026-03-01T12:00:00Z


def track(index: int) -> dict[str, Any]:
    return {"type": "track", "event": "Product Viewed", "userId": f"user-{index}", "messageId": f"m{index}"}


def test_a_batch_over_the_event_limit_is_refused_whole_with_413() -> None:
    """A 538-byte gzip body inflates to ``{"batch":[1,1,...]}`` of 250,000 items: refused before any is read."""
    with pytest.raises(HttpError) as refused:
        batch_events({"batch": [1] * 250_000}, now_ms=NOW_MS)
    assert refused.value.status == 413
    assert str(refused.value) == f"batch of 250000 events is over the {MAX_BATCH_EVENTS} event limit: split it"


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
