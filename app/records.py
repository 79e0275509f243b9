"""What the ingest agent does with one ``nudge.events`` record, as a pure function.

:func:`split_record` validates every event in the record and sorts it into one of three piles: events to fold
here (grouped by user, in record order), events whose user lives on another partition (another system keyed the
record differently: they are forwarded, keyed by user id), and rejects for the dead-letter topic with a reason
and the original bytes: at most :data:`MAX_SEPARATE_REJECTS` + 1 of them per record, whatever it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from app.events import Event, InvalidEvent, decode_record, encode_event, event_from, validate
from app.identity import Erase, Merge, is_erase, is_merge, read_erase, read_merge
from app.partitioning import partition_for

#: The most bad events of one record dead-lettered one by one, each with its own reason; the rest of them go as one
#: batch envelope. The agent sends them while holding the lock every partition waits on.
#: 100 (not 2,500): a record of bad events costs at most 101 sends under that lock; most records have fewer bad ones.
MAX_SEPARATE_REJECTS = 100


@dataclass(frozen=True, slots=True)
class Reject:
    """A record or event refused by ingest: ``original`` is the bytes to keep in the dead-letter topic.

    ``events`` counts the events refused when ``original`` is a batch of them (the rest of a record's bad events);
    a whole record refused, however many items it claims, is one.
    """

    reason: str
    original: bytes
    events: int = 1


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

    @property
    def rejected(self) -> int:
        return sum(reject.events for reject in self.rejects)


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
    refused: list[tuple[str, object]] = []
    for position, item in enumerate(items):
        try:
            if is_merge(item):
                assert isinstance(item, dict)
                plan.merges.append(read_merge(item, secret))
                continue
            if is_erase(item):
                assert isinstance(item, dict)
                plan.erasures.append(read_erase(item, secret))
                continue
            normalised, timestamp_ms = validate(item, now_ms=now_ms, position=position)
            event = event_from(normalised, timestamp_ms)
            if partition_for(event.user_id, partitions) != partition:
                # Forward the normalised form: its messageId and timestamp are fixed, so a second forward
                # after a crash is recognised as a duplicate.
                plan.misrouted.append((event.user_id, encode_event(normalised)))
                continue
        except InvalidEvent as error:
            refused.append((str(error), item))
            continue
        plan.by_user.setdefault(event.user_id, []).append(event)
    if len(items) == 1:
        plan.rejects = [Reject(reason, value) for reason, _ in refused]
    else:
        plan.rejects = _rejects(refused, value)
    return plan


def _rejects(refused: list[tuple[str, object]], record: bytes) -> list[Reject]:
    """The dead-letter entries for the bad events of a batch: the first ones alone, the rest in one envelope."""
    rejects = [Reject(reason, _original(item, record)) for reason, item in refused[:MAX_SEPARATE_REJECTS]]
    rest = refused[MAX_SEPARATE_REJECTS:]
    if rest:
        reason = f"{len(rest)} more refused events of this record, as one batch; the first for: {rest[0][0]}"
        rejects.append(Reject(reason, _original({"batch": [item for _, item in rest]}, record), len(rest)))
    return rejects


def _original(item: object, record: bytes) -> bytes:
    """The bytes of one bad event of a batch; the whole record when the event cannot be re-encoded."""
    try:
        return orjson.dumps(item)
    except orjson.JSONEncodeError:
        return record
