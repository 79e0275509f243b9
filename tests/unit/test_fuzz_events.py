"""Fuzzing the event contract: whatever a producer sends, an event is accepted whole or refused with a reason.

Inputs are hostile on purpose: every contract field of an otherwise valid event replaced by a wrong type, text
with NUL, bidi overrides, lone surrogates and NaN-like spellings, huge numbers, deep nesting, batch envelopes that
are not, and bytes that are not JSON or not UTF-8. The properties: :func:`app.events.validate` either accepts (and
the result satisfies the contract) or raises :class:`InvalidEvent` with a non-empty reason; :func:`split_record`
never raises and accounts for every event of a record.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.events import (
    EVENT_TYPES,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    InvalidEvent,
    decode_record,
    encode_event,
    event_from,
    iso_from_ms,
    validate,
)
from app.records import split_record

NOW_MS = 1_772_366_400_000  # 2026-03-01T12:00:00Z
SECRET = b"fuzz-secret-0123456789abcdef"
EXAMPLES = settings().max_examples  # the profile tests/conftest.py loaded

#: Text that breaks naive code: NUL, bidi overrides, BOM, zero-width joiners, NaN-like and overflowing numbers.
HOSTILE_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "user\x00id",
        "\u202eevil\u202c",
        "\ufeffbom",
        "a\u200db",
        "NaN",
        "Infinity",
        "-0",
        "1e999",
        "null",
        "true",
        "\U0001f600" * 3,
        "\ud800",
        "x\udfffy",
        "é" * 300,
        "9" * 400,
        "2026-03-01T12:00:00Z",
        "2026-03-01T12:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "2026-02-30T00:00:00",
        "track",
        "alias",
    ]
)
TEXT = st.one_of(st.text(max_size=40), HOSTILE_TEXT, st.text(alphabet=st.characters(codec="utf-16"), max_size=8))
HUGE_NUMBERS = st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**400, float("inf"), float("-inf"), float("nan"), -0.0])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT, HUGE_NUMBERS)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
CONTRACT_FIELDS = [
    "type",
    "userId",
    "anonymousId",
    "event",
    "messageId",
    "timestamp",
    "originalTimestamp",
    "previousId",
    "properties",
    "context",
    "traits",
    "writeKey",
]


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid-looking event with some contract fields dropped or replaced by anything at all."""
    event: dict[str, Any] = {
        "type": draw(st.sampled_from(sorted(EVENT_TYPES))),
        "userId": draw(st.text(min_size=1, max_size=12)),
        "event": "Product Viewed",
        "properties": {"product_id": "p1", "category": "shoes", "price": 10.5},
        "context": {"sessionId": "s1"},
    }
    if event["type"] == "alias":
        event["previousId"] = "anon-" + event["userId"]
    if draw(st.booleans()):
        event["messageId"] = draw(st.text(min_size=1, max_size=20))
    if draw(st.booleans()):
        event["timestamp"] = "2026-03-01T11:00:00.000Z"
    for field in draw(st.lists(st.sampled_from(CONTRACT_FIELDS), max_size=3, unique=True)):
        if draw(st.booleans()):
            event.pop(field, None)
        else:
            event[field] = draw(JSONISH)
    if draw(st.integers(0, 4)) == 0:
        event["context"] = {"consent": {"categoryPreferences": draw(JSONISH)}}
    return event


def check_accepted(raw: Any, event: dict[str, Any], timestamp_ms: int) -> None:
    """What every accepted event guarantees to the fold, the topic and the dead-letter queue."""
    assert event["type"] in EVENT_TYPES
    internal = event_from(event, timestamp_ms)
    assert isinstance(internal.user_id, str) and 1 <= len(internal.user_id) <= MAX_ID_LENGTH
    assert isinstance(internal.message_id, str) and 1 <= len(internal.message_id) <= MAX_ID_LENGTH
    assert isinstance(internal.timestamp_ms, int)
    assert timestamp_ms <= NOW_MS + 24 * 3600 * 1000
    assert iso_from_ms(timestamp_ms), "the pipeline and profile views format every accepted timestamp"
    assert isinstance(internal.name, str) and internal.name.strip() and len(internal.name) <= MAX_NAME_LENGTH
    assert isinstance(internal.properties, dict) and isinstance(internal.context, dict)
    if event["type"] == "alias":
        assert internal.alias_to and internal.alias_to != internal.user_id
    try:
        orjson.dumps(raw)
    except orjson.JSONEncodeError:
        return  # not JSON to begin with (a lone surrogate, a 65-bit int): the collector refuses it on encoding
    back = orjson.loads(encode_event(event))
    assert (back["type"], back["messageId"], back["timestamp"]) == (
        event["type"],
        event["messageId"],
        event["timestamp"],
    )


def check_refused(error: InvalidEvent) -> None:
    reason = str(error)
    assert reason.strip(), "a refusal must say why"
    assert len(reason) < 2_000, "a reason is for people: it must not echo the whole input"


@settings(max_examples=EXAMPLES * 4)
@given(raw=st.one_of(events(), JSONISH), default_type=st.none() | st.sampled_from(sorted(EVENT_TYPES)))
@example(raw={"type": [], "userId": "u", "event": "x"}, default_type=None)  # was TypeError: unhashable type: 'list'
@example(raw={"type": {"a": 1}, "userId": "u"}, default_type=None)
# Accepted, then ValueError: year 0 is out of range when the ingest agent formatted it: a poison pill.
@example(
    raw={"type": "track", "event": "x", "userId": "u", "timestamp": "0001-01-01T00:00:00+14:00"}, default_type=None
)
# Deep values are given as JSON bytes: Hypothesis prints every explicit example, and its printer recurses.
@example(raw=b'{"userId":"u","type":' + b"[" * 900 + b"]" * 900 + b"}", default_type=None)  # was RecursionError
@example(raw=b'{"type":"track","event":"x","userId":"u","properties":' + b"{}" + b"}", default_type="track")
@example(
    raw=b'{"type":"track","event":"x","userId":"u","messageId":"m","traits":{"a":' + b"[" * 400 + b"]" * 400 + b"}}",
    default_type=None,
)
def test_validate_accepts_or_refuses_with_a_reason(
    raw: Any, default_type: str | None, fuzz_cases: Counter[str]
) -> None:
    fuzz_cases["events"] += 1
    if isinstance(raw, bytes):
        raw = orjson.loads(raw)
    try:
        event, timestamp_ms = validate(raw, now_ms=NOW_MS, default_type=default_type)
    except InvalidEvent as error:
        check_refused(error)
        return
    if default_type is not None:
        assert event["type"] == default_type
    check_accepted(raw, event, timestamp_ms)


def json_bytes(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return b'{"batch": "not encodable"}'


RECORDS = st.one_of(
    st.binary(max_size=200),
    st.builds(json_bytes, events()),
    st.builds(json_bytes, JSONISH),
    st.builds(lambda items: json_bytes({"batch": items}), st.lists(st.one_of(events(), JSONISH), max_size=6)),
    st.builds(lambda batch: json_bytes({"batch": batch}), JSONISH),
    st.sampled_from(
        [
            None,
            b"",
            b"\xef\xbb\xbf{}",  # a BOM before the object
            b'{"type":"track","userId":"\xc0\xaf","event":"x"}',  # overlong UTF-8 for "/"
            b'{"type":"track","userId":"\xed\xa0\x80","event":"x"}',  # a surrogate encoded in UTF-8
            b'{"type":"track","userId":"\\ud800","event":"x"}',  # a lone surrogate escape
            b'{"type":"track","userId":"u","event":"x","properties":{"n":1e999}}',
            b'{"type":"track","userId":"u","event":"x","properties":{"n":123456789012345678901234567890}}',
            b'{"type":"track","userId":"u","event":"x","properties":{"n":NaN}}',
            b'{"batch":[' + b"1," * 5000 + b"{}]}",
            b"[" * 2000 + b"]" * 2000,
            b'{"type":' + b"[" * 1000 + b"]" * 1000 + b',"userId":"u"}',
            b'{"type":"track","userId":"u","event":"x","properties":' + b"[" * 1000 + b"]" * 1000 + b"}",
            b'{"batch":[{"type":"track","userId":"u","event":"x","messageId":"m","properties":'
            + b"[" * 300
            + b"]" * 300
            + b'}],"x":1}',
            b"x" * (1024 * 1024 + 1),
        ]
    ),
)


@settings(max_examples=EXAMPLES * 3)
@given(value=RECORDS, where=st.integers(1, 12).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))))
@example(value=b'{"type":[],"userId":"u"}', where=(0, 1))  # was TypeError from validate: the ingest agent crashed
def test_split_record_never_raises_and_accounts_for_every_event(
    value: bytes | None, where: tuple[int, int], fuzz_cases: Counter[str]
) -> None:
    fuzz_cases["events"] += 1
    partition, partitions = where
    plan = split_record(value, partition=partition, partitions=partitions, now_ms=NOW_MS, secret=SECRET)
    for reject in plan.rejects:
        check_refused(InvalidEvent(reject.reason))
        assert isinstance(reject.original, bytes)
    try:
        items = decode_record(value)
    except InvalidEvent:
        assert len(plan.rejects) == 1 and plan.accepted == 0 and not plan.misrouted
        assert plan.rejects[0].original == (value or b"")
        return
    assert plan.accepted + len(plan.misrouted) + len(plan.rejects) + len(plan.merges) + len(plan.erasures) == len(items)
    for user_id, user_events in plan.by_user.items():
        for event in user_events:
            assert event.user_id == user_id and event.type in EVENT_TYPES
            assert 1 <= len(event.message_id) <= MAX_ID_LENGTH
    for user_id, forwarded in plan.misrouted:
        assert isinstance(orjson.loads(forwarded), dict) and user_id
