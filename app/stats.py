"""Counters a worker keeps about what it did, served at ``GET /v1/stats`` and shown by ``make demo``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field


@dataclass(slots=True)
class IngestStats:
    records: int = 0
    events: int = 0
    folded: int = 0
    #: What is left of ``events``: skipped, mostly as applied already (a redelivered record, a repeated messageId).
    duplicates: int = 0
    rejected: int = 0
    #: Sent on to the user they belong to through ``nudge.events`` (and counted again there): misrouted events, and
    #: the events of an id merged into another user, its ``alias`` event included (sent as the merge record).
    forwarded: int = 0
    first_event_at: float | None = None
    last_event_at: float | None = None
    #: Per source partition: [first offset, last offset] this worker processed.
    offsets: dict[int, list[int]] = field(default_factory=dict)

    def add(self, *, partition: int, offset: int, events: int, folded: int, rejected: int, forwarded: int) -> None:
        now = time.time()
        if self.first_event_at is None:
            self.first_event_at = now
        self.last_event_at = now
        self.offsets.setdefault(partition, [offset, offset])[1] = offset
        self.records += 1
        self.events += events
        self.folded += folded
        self.duplicates += events - folded - rejected - forwarded
        self.rejected += rejected
        self.forwarded += forwarded

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


ingest_stats = IngestStats()
