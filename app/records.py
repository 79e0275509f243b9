"""What the ingest agent does with one ``nudge.events`` record, as a pure function.

:func:`split_record` validates every event in the record and sorts it into one of three piles: events to fold
here (grouped by user, in record order), events whose user lives on another partition (another system keyed the
record differently: they are forwarded, keyed by user id), and rejects for the dead-letter topic with a reason
and the original bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from app.events import Event, InvalidEvent, decode_record, encode_event, event_from, validate
from app.identity import Erase, Merge, is_erase, is_merge, read_erase, read_merge
from app.partitioning import partition_for


@dataclass(frozen=True, slots=True)
class Reject:
    """A record or event refused by ingest: ``original`` is the bytes to keep in the dead-letter topic."""

    reason: str
    original: bytes


@dataclass(slots=True)
class RecordPlan:
    by_user: dict[str, list[Event]] = field(default_factory=dict)
    misrouted: list[tuple[str, bytes]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    #: Anonymous profiles handed over to a user of this partition (signed by a worker: see app.identity).
    merges: list[Merge] = field(default_factory=list)
    #: Erasure requests (signed by the API: see app.identity).
    erasures: list[Erase] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(map(len, self.by_user.values()))


def split_record(value: bytes | None, *, partition: int, partitions: int, now_ms: int, secret: bytes) -> RecordPlan:
    """Validate the events in ``value`` (read from ``partition``) and sort them; never raises on bad input.

    ``secret`` checks merge records (:mod:`app.identity`), which only workers may write.
    """
    plan = RecordPlan()
    try:
        items = decode_record(value)
    except InvalidEvent as error:
        plan.rejects.append(Reject(str(error), value or b""))
        return plan
    assert value is not None  # decode_record refuses a missing value
    for item in items:
        try:
            if is_merge(item):
                assert isinstance(item, dict)
                plan.merges.append(read_merge(item, secret))
                continue
            if is_erase(item):
                assert isinstance(item, dict)
                plan.erasures.append(read_erase(item, secret))
                continue
            normalised, timestamp_ms = validate(item, now_ms=now_ms)
            event = event_from(normalised, timestamp_ms)
            if partition_for(event.user_id, partitions) != partition:
                # Forward the normalised form: its messageId and timestamp are fixed, so a second forward
                # after a crash is recognised as a duplicate.
                plan.misrouted.append((event.user_id, encode_event(normalised)))
                continue
        except InvalidEvent as error:
            plan.rejects.append(Reject(str(error), value if len(items) == 1 else _original(item, value)))
            continue
        plan.by_user.setdefault(event.user_id, []).append(event)
    return plan


def _original(item: object, record: bytes) -> bytes:
    """The bytes of one bad event of a batch; the whole record when the event cannot be re-encoded."""
    try:
        return orjson.dumps(item)
    except orjson.JSONEncodeError:
        return record
