"""The offset guard: records are processed in order with no holes, whatever the consumer delivers."""

from __future__ import annotations

from app.offsets import OffsetTracker, Verdict


def run(tracker: OffsetTracker, partition: int, offsets: list[int]) -> list[int]:
    """Feed offsets as a consumer would deliver them; fill holes as the agent does; return what was processed."""
    processed = []
    for offset in offsets:
        verdict = tracker.check(partition, offset)
        if verdict is Verdict.ALREADY_DONE:
            continue
        if verdict is Verdict.HOLE:
            for missing in range(tracker.next_offset(partition), offset):
                tracker.processed(partition, missing)
                processed.append(missing)
        tracker.processed(partition, offset)
        processed.append(offset)
    return processed


def test_contiguous_records_are_processed_and_become_committable() -> None:
    tracker = OffsetTracker()
    assert run(tracker, 0, [72, 73, 74]) == [72, 73, 74]
    assert tracker.committable() == {0: 75}
    tracker.mark_committed({0: 75})
    assert tracker.committable() == {}


def test_a_hole_is_reported_before_anything_past_it() -> None:
    """The failure seen live: 87..160 never delivered, the consumer jumped to 161."""
    tracker = OffsetTracker()
    run(tracker, 2, list(range(72, 87)))
    assert tracker.check(2, 161) is Verdict.HOLE
    assert tracker.next_offset(2) == 87
    assert tracker.committable() == {2: 87}  # never past the hole
    assert run(tracker, 2, [161, 162]) == [*range(87, 161), 161, 162]
    assert tracker.committable() == {2: 163}


def test_redelivered_records_are_already_done() -> None:
    tracker = OffsetTracker()
    run(tracker, 1, [5, 6, 7])
    assert tracker.check(1, 6) is Verdict.ALREADY_DONE


def test_partitions_are_independent() -> None:
    tracker = OffsetTracker()
    run(tracker, 0, [10, 11])
    assert run(tracker, 1, [500]) == [500]
    assert tracker.check(0, 13) is Verdict.HOLE
    assert tracker.check(1, 501) is Verdict.PROCESS


def test_a_new_assignment_expects_each_partition_at_its_committed_offset() -> None:
    tracker = OffsetTracker()
    run(tracker, 0, [10, 11])
    tracker.reset({0: 4, 1: 20})
    assert run(tracker, 0, [4]) == [4]  # back to the committed offset: redelivered records are processed again
    # The consumer restarted partition 1 past its committed offset: the records in between are a hole to read.
    assert tracker.check(1, 25) is Verdict.HOLE and tracker.next_offset(1) == 20
    # A partition never committed starts wherever the consumer puts it.
    assert run(tracker, 2, [7]) == [7]
