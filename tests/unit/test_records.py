"""split_record: what the ingest agent folds, forwards and dead-letters for one ``nudge.events`` record."""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from app.events import MAX_BATCH_EVENTS, normalise
from app.partitioning import partition_for
from app.records import MAX_SEPARATE_REJECTS, split_record

PARTITIONS = 8
SECRET = b"s" * 32
HERE = 3
NOW_MS = 1_772_366_400_000  # 2026-03-01T12:00:00Z


def users_on(partition: int, count: int) -> list[str]:
    """The first ``count`` user ids that live on ``partition``."""
    ids = (f"user-{i}" for i in itertools.count())
    return list(itertools.islice((u for u in ids if partition_for(u, PARTITIONS) == partition), count))


def track(user: str, message_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Product Viewed",
        "userId": user,
        "messageId": message_id,
        "timestamp": "2026-03-01T11:00:00.000Z",
        **fields,
    }


def batch(*events: object) -> bytes:
    return orjson.dumps({"batch": list(events)})


def test_helper_picks_users_of_the_requested_partition() -> None:
    users = users_on(HERE, 3)
    assert len(set(users)) == 3
    assert all(partition_for(u, PARTITIONS) == HERE for u in users)


def test_events_are_grouped_by_user_in_record_order() -> None:
    alice, bob = users_on(HERE, 2)
    value = batch(track(alice, "a1"), track(bob, "b1"), track(alice, "a2"), track(bob, "b2"), track(alice, "a3"))
    plan = split_record(value, partition=HERE, partitions=PARTITIONS, now_ms=NOW_MS, secret=SECRET)
    assert {user: [e.message_id for e in events] for user, events in plan.by_user.items()} == {
        alice: ["a1", "a2", "a3"],
        bob: ["b1", "b2"],
    }
    assert list(plan.by_user) == [alice, bob]
    assert plan.accepted == 5
    assert plan.misrouted == [] and plan.rejects == []


def test_single_event_record_is_accepted() -> None:
    (alice,) = users_on(HERE, 1)
    plan = split_record(
        orjson.dumps(track(alice, "a1")), partition=HERE, partitions=PARTITIONS, now_ms=NOW_MS, secret=SECRET
    )
    assert [e.message_id for e in plan.by_user[alice]] == ["a1"]
    assert plan.by_user[alice][0].user_id == alice


def test_events_of_users_on_another_partition_are_misrouted() -> None:
    (local,) = users_on(HERE, 1)
    stranger, other = users_on(HERE + 1, 2)
    events = [track(stranger, "s1"), track(local, "l1"), track(other, "o1"), track(stranger, "s2")]
    plan = split_record(batch(*events), partition=HERE, partitions=PARTITIONS, now_ms=NOW_MS, secret=SECRET)
    assert list(plan.by_user) == [local]
    # Forwarded in normalised form, so a second forward after a crash carries the same messageId.
    assert [(user, orjson.loads(data)) for user, data in plan.misrouted] == [
        (stranger, normalise(events[0], now_ms=NOW_MS)),
        (other, normalise(events[2], now_ms=NOW_MS)),
        (stranger, normalise(events[3], now_ms=NOW_MS)),
    ]
    assert plan.accepted == 1


def test_forwarded_events_without_id_or_timestamp_keep_one_identity() -> None:
    """A misrouted event is forwarded with its derived messageId and timestamp fixed, not re-derived later."""
    (stranger,) = users_on(HERE + 1, 1)
    bare = {"type": "track", "event": "Product Viewed", "userId": stranger}
    first = split_record(orjson.dumps(bare), partition=HERE, partitions=PARTITIONS, now_ms=NOW_MS, secret=SECRET)
    again = split_record(
        orjson.dumps(bare), partition=HERE, partitions=PARTITIONS, now_ms=NOW_MS + 5_000, secret=SECRET
    )
    forwarded, forwarded_again = orjson.loads(first.misrouted[0][1]), orjson.loads(again.misrouted[0][1])
    assert forwarded["messageId"].startswith("auto-")
    replayed = split_record(
        first.misrouted[0][1], partition=HERE + 1, partitions=PARTITIONS, now_ms=NOW_MS + 9_000, secret=SECRET
    )
    assert replayed.by_user[stranger][0].message_id == forwarded["messageId"]
    assert forwarded_again["messageId"] != forwarded["messageId"]  # a genuinely new event, received later


def test_deeply_nested_events_are_rejected_with_a_reason_not_raised() -> None:
    """orjson reads 1024 levels but writes only 254: such an event must become a reject, never an exception."""
    (local,) = users_on(HERE, 1)
    deep = b'{"a":' * 300 + b"{}" + b"}" * 300
    raw = b'{"type":"track","event":"E","userId":"' + local.encode() + b'","properties":' + deep + b"}"
    plan = split_record(raw, partition=HERE, partitions=PARTITIONS, now_ms=NOW_MS, secret=SECRET)
    assert plan.by_user == {}
    assert [r.original for r in plan.rejects] == [raw]
    assert "cannot be encoded as JSON" in plan.rejects[0].reason
    (stranger,) = users_on(HERE + 1, 1)
    with_id = raw.replace(local.encode(), stranger.encode()).replace(b'"event":"E"', b'"event":"E","messageId":"m"')
    plan = split_record(
        b'{"batch":[' + with_id + b"]}", partition=HERE, partitions=PARTITIONS, now_ms=NOW_MS, secret=SECRET
    )
    assert plan.misrouted == [] and len(plan.rejects) == 1


def test_misrouted_events_are_keyed_by_user_id_over_anonymous_id() -> None:
    (stranger,) = users_on(HERE + 1, 1)
    (local,) = users_on(HERE, 1)
    event = track(stranger, "s1", anonymousId=local)
    plan = split_record(batch(event), partition=HERE, partitions=PARTITIONS, now_ms=NOW_MS, secret=SECRET)
    assert [user for user, _ in plan.misrouted] == [stranger]
    assert plan.by_user == {}


def test_a_bad_event_in_a_batch_is_rejected_alone_with_its_own_bytes() -> None:
    alice, bob = users_on(HERE, 2)
    bad = {"type": "track", "event": "Product Viewed", "messageId": "x1"}  # no user id
    worse = {"type": "track", "userId": bob, "messageId": "x2"}  # no event name
    plan = split_record(
        batch(track(alice, "a1"), bad, track(bob, "b1"), worse),
        partition=HERE,
        partitions=PARTITIONS,
        now_ms=NOW_MS,
        secret=SECRET,
    )
    assert {user: [e.message_id for e in events] for user, events in plan.by_user.items()} == {
        alice: ["a1"],
        bob: ["b1"],
    }
    assert [(r.reason, orjson.loads(r.original)) for r in plan.rejects] == [
        ("userId or anonymousId is required", bad),
        ("a track event needs an event name (string)", worse),
    ]


def test_a_non_object_in_a_batch_is_rejected_alone() -> None:
    (alice,) = users_on(HERE, 1)
    plan = split_record(
        batch(track(alice, "a1"), 42), partition=HERE, partitions=PARTITIONS, now_ms=NOW_MS, secret=SECRET
    )
    assert plan.accepted == 1
    assert [(r.reason, r.original) for r in plan.rejects] == [("an event must be a JSON object, not a number", b"42")]


def test_a_record_that_is_not_json_is_rejected_whole_with_its_bytes() -> None:
    value = b'{"batch": [oops'
    plan = split_record(value, partition=HERE, partitions=PARTITIONS, now_ms=NOW_MS, secret=SECRET)
    assert plan.accepted == 0 and plan.misrouted == []
    (reject,) = plan.rejects
    assert reject.original == value
    assert reject.reason.startswith("record is not valid JSON")


def test_a_batch_that_is_not_an_array_is_rejected_whole_with_its_bytes() -> None:
    value = b'{"batch": "nope"}'
    plan = split_record(value, partition=HERE, partitions=PARTITIONS, now_ms=NOW_MS, secret=SECRET)
    assert [(r.reason, r.original) for r in plan.rejects] == [("batch must be an array, not a string", value)]


def test_a_record_without_value_is_rejected_with_empty_bytes() -> None:
    plan = split_record(None, partition=HERE, partitions=PARTITIONS, now_ms=NOW_MS, secret=SECRET)
    assert [(r.reason, r.original) for r in plan.rejects] == [("record has no value", b"")]


def test_a_single_bad_event_record_keeps_the_record_bytes_exactly() -> None:
    """The dead letter holds what the producer sent, byte for byte, not a re-encoding of it."""
    value = b'{ "type": "track",  "event": "Product Viewed", "messageId": "x1" }\n'
    plan = split_record(value, partition=HERE, partitions=PARTITIONS, now_ms=NOW_MS, secret=SECRET)
    assert [(r.reason, r.original) for r in plan.rejects] == [("userId or anonymousId is required", value)]
    assert plan.accepted == 0


def test_an_empty_batch_yields_nothing() -> None:
    plan = split_record(batch(), partition=HERE, partitions=PARTITIONS, now_ms=NOW_MS, secret=SECRET)
    assert (plan.by_user, plan.misrouted, plan.rejects) == ({}, [], [])


def test_a_signed_merge_record_is_taken_and_a_forged_one_dead_lettered() -> None:
    from app.identity import Merge, merge_record

    [user] = users_on(HERE, 1)
    merge = Merge("anon-9", user, None, None)
    plan = split_record(
        merge_record(merge, SECRET), partition=HERE, partitions=PARTITIONS, now_ms=NOW_MS, secret=SECRET
    )
    assert plan.merges == [merge] and not plan.rejects
    forged = merge_record(merge, b"not-the-secret-of-this-deployment")
    plan = split_record(forged, partition=HERE, partitions=PARTITIONS, now_ms=NOW_MS, secret=SECRET)
    assert plan.merges == [] and [r.reason for r in plan.rejects] == [
        "merge record: bad signature (merge records come from Nudge workers only)"
    ]


def test_a_batch_over_the_event_limit_is_rejected_whole_before_any_event_is_read() -> None:
    """A 1 MB record of ``[1,1,...]`` would otherwise cost seconds and half a million dead-letter records."""
    value = b'{"batch":[' + b",".join([b"1"] * 511_990) + b"]}"
    plan = split_record(value, partition=HERE, partitions=PARTITIONS, now_ms=NOW_MS, secret=SECRET)
    assert [(r.reason, r.original) for r in plan.rejects] == [
        (f"batch of 511990 events is over the {MAX_BATCH_EVENTS} event limit", value)
    ]
    assert (plan.by_user, plan.misrouted, plan.rejected) == ({}, [], 1)


def test_a_batch_of_many_bad_events_is_dead_lettered_in_a_bounded_number_of_records_losing_none() -> None:
    [user] = users_on(HERE, 1)
    bad = [{"type": "track", "messageId": f"bad-{i}"} for i in range(MAX_BATCH_EVENTS - 1)]
    value = batch(*bad[:50], track(user, "good"), *bad[50:])
    plan = split_record(value, partition=HERE, partitions=PARTITIONS, now_ms=NOW_MS, secret=SECRET)
    assert plan.accepted == 1
    separate, rest = plan.rejects[:MAX_SEPARATE_REJECTS], plan.rejects[MAX_SEPARATE_REJECTS:]
    assert [orjson.loads(r.original) for r in separate] == bad[:MAX_SEPARATE_REJECTS]
    assert {r.reason for r in separate} == {"userId or anonymousId is required"}
    [summary] = rest
    left = MAX_BATCH_EVENTS - 1 - MAX_SEPARATE_REJECTS
    assert (
        summary.reason
        == f"{left} more refused events of this record, as one batch; the first for: userId or anonymousId is required"
    )
    assert orjson.loads(summary.original) == {"batch": bad[MAX_SEPARATE_REJECTS:]}
    assert (summary.events, plan.rejected) == (left, MAX_BATCH_EVENTS - 1)


def test_identical_events_without_timestamp_in_one_record_are_both_folded() -> None:
    click = {"type": "track", "event": "Button Clicked", "userId": "u1"}
    plan = split_record(
        orjson.dumps({"batch": [click, click]}),
        partition=partition_for("u1", 8),
        partitions=8,
        now_ms=NOW_MS,
        secret=b"s",
    )
    assert [event.name for event in plan.by_user["u1"]] == ["Button Clicked", "Button Clicked"]
    assert len({event.message_id for event in plan.by_user["u1"]}) == 2
