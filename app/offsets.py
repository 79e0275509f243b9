"""Which source records are processed, in order, with no holes: the guard behind "nothing lost".

Faust's consumer can drop records it already fetched (a flow-control pause or a generation change in the middle of a
fetched batch) and then treats the jump in offsets as a legitimate gap that it commits across: the records are
silently skipped. Measured here: after a worker restart with a backlog, 74 consecutive records of one partition were
never delivered to the agent and their offsets were committed.

``nudge.events`` is neither compacted nor written by transactional producers, so within one assignment its offsets
are contiguous. :class:`OffsetTracker` checks every record against the next expected offset of its partition: a
record beyond it means records were lost upstream, so the caller rewinds the consumer to the expected offset and
drops what arrives until that record does. Offsets are committed only up to what was processed without a hole
(``agents/commit.py``), so a crash never skips records either.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

#: Records dropped while waiting for a rewound offset before the hole is accepted as real (it cannot be on a
#: non-compacted, non-transactional topic; this only keeps a wrong assumption from stalling a partition forever).
MAX_DROPPED_WHILE_REWINDING = 100_000
#: Seek again after this many dropped records: Faust's fetch loop may still be delivering what it fetched before
#: the seek, and would then skip the re-fetched records as already read.
REWIND_AGAIN_EVERY = 256


class Verdict(enum.Enum):
    PROCESS = "process"
    ALREADY_DONE = "already done"
    REWIND = "rewind"
    DROP = "drop"


@dataclass
class OffsetTracker:
    """Per-partition next expected offset, rewinds in progress, and what is ready to commit. Not thread-safe."""

    expected: dict[int, int] = field(default_factory=dict)
    committed: dict[int, int] = field(default_factory=dict)
    rewinding: dict[int, int] = field(default_factory=dict)  # partition -> records dropped while rewinding
    accepted_holes: int = 0

    def reset(self) -> None:
        """Forget expectations (call on a new assignment: the consumer restarts from committed offsets)."""
        self.expected.clear()
        self.rewinding.clear()

    def check(self, partition: int, offset: int) -> Verdict:
        """What to do with the record at ``offset``; on :attr:`Verdict.REWIND` seek to :meth:`next_offset`."""
        expected = self.expected.get(partition)
        if expected is None or offset == expected:
            self.rewinding.pop(partition, None)
            return Verdict.PROCESS
        if offset < expected:
            return Verdict.ALREADY_DONE
        dropped = self.rewinding.get(partition)
        if dropped is None:
            self.rewinding[partition] = 0
            return Verdict.REWIND
        if dropped >= MAX_DROPPED_WHILE_REWINDING:
            self.rewinding.pop(partition)
            self.accepted_holes += 1
            return Verdict.PROCESS
        self.rewinding[partition] = dropped + 1
        return Verdict.REWIND if (dropped + 1) % REWIND_AGAIN_EVERY == 0 else Verdict.DROP

    def next_offset(self, partition: int) -> int:
        return self.expected[partition]

    def processed(self, partition: int, offset: int) -> None:
        """Record that ``offset`` was processed; the next expected one follows it."""
        self.expected[partition] = offset + 1

    def committable(self) -> dict[int, int]:
        """Partitions whose processed position moved since the last commit, with the offset to commit."""
        return {p: o for p, o in self.expected.items() if self.committed.get(p) != o}

    def mark_committed(self, offsets: dict[int, int]) -> None:
        self.committed.update(offsets)
