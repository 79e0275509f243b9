"""The offset guard: records are processed in order with no holes, whatever the consumer delivers."""

from __future__ import annotations

from app.offsets import MAX_DROPPED_WHILE_REWINDING, REWIND_AGAIN_EVERY, OffsetTracker, Verdict


def run(tracker: OffsetTracker, partition: int, offsets: list[int]) -> list[int]:
    """Feed offsets as a consumer would deliver them; return the ones processed."""
    processed = []
    for offset in offsets:
        if tracker.check(partition, offset) is Verdict.PROCESS:
            tracker.processed(partition, offset)
            processed.append(offset)
    return processed


def test_contiguous_records_are_processed_and_become_committable() -> None:
    tracker = OffsetTracker()
    assert run(tracker, 0, [72, 73, 74]) == [72, 73, 74]
    assert tracker.committable() == {0: 75}
    tracker.mark_committed({0: 75})
    assert tracker.committable() == {}


def test_a_hole_rewinds_drops_stale_records_and_resumes_in_order() -> None:
    """The failure seen live: 87..160 never delivered, the consumer jumped to 161."""
    tracker = OffsetTracker()
    run(tracker, 2, list(range(72, 87)))
    assert tracker.check(2, 161) is Verdict.REWIND
    assert tracker.next_offset(2) == 87
    assert tracker.committable() == {2: 87}  # never past the hole
    assert run(tracker, 2, [162, 163]) == []  # stale, fetched before the seek
    assert run(tracker, 2, list(range(87, 170))) == list(range(87, 170))
    assert tracker.committable() == {2: 170}


def test_redelivered_records_are_already_done() -> None:
    tracker = OffsetTracker()
    run(tracker, 1, [5, 6, 7])
    assert tracker.check(1, 6) is Verdict.ALREADY_DONE


def test_partitions_are_independent() -> None:
    tracker = OffsetTracker()
    run(tracker, 0, [10, 11])
    assert run(tracker, 1, [500]) == [500]
    assert tracker.check(0, 13) is Verdict.REWIND
    assert tracker.check(1, 501) is Verdict.PROCESS


def test_reset_trusts_the_first_record_of_a_new_assignment() -> None:
    tracker = OffsetTracker()
    run(tracker, 0, [10, 11])
    tracker.reset()
    assert run(tracker, 0, [4]) == [4]


def test_a_long_rewind_seeks_again_and_finally_accepts_a_real_hole() -> None:
    tracker = OffsetTracker()
    run(tracker, 0, [0])
    verdicts = [tracker.check(0, 10 + i) for i in range(MAX_DROPPED_WHILE_REWINDING + 2)]
    assert verdicts[0] is Verdict.REWIND
    assert verdicts[REWIND_AGAIN_EVERY] is Verdict.REWIND
    assert verdicts[1] is Verdict.DROP
    assert verdicts[-1] is Verdict.PROCESS
    assert tracker.accepted_holes == 1
