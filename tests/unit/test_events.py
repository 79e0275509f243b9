"""The Segment event contract: what normalise accepts, what it refuses and why, and how records are split."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from app.events import (
    LATEST_TIMESTAMP_MS,
    MAX_BATCH_BYTES,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    InvalidEvent,
    decode_record,
    encode_batch,
    iso_from_ms,
    normalise,
    parse_timestamp,
    to_event,
)

NOW_ISO = "2026-03-01T12:00:00.000Z"
NOW_MS = 1_772_366_400_000  # 2026-03-01T12:00:00Z
HOUR_MS = 3600 * 1000


def track(**fields: Any) -> dict[str, Any]:
    """A valid track event, with ``fields`` added or replaced."""
    return {
        "type": "track",
        "event": "Product Viewed",
        "userId": "user-1",
        "messageId": "msg-1",
        "timestamp": "2026-03-01T11:00:00.000Z",
        "properties": {"product_id": "p1", "category": "shoes"},
        **fields,
    }


def refused(raw: object, **kwargs: Any) -> str:
    """The reason normalise gives for refusing ``raw``."""
    with pytest.raises(InvalidEvent) as caught:
        normalise(raw, now_ms=NOW_MS, **kwargs)
    return str(caught.value)


# --- valid events -----------------------------------------------------------------------------------------------


def test_now_constant_is_what_it_claims() -> None:
    assert iso_from_ms(NOW_MS) == NOW_ISO
    assert parse_timestamp(NOW_ISO, field="timestamp") == NOW_MS


def test_valid_track_event_is_kept_and_stamped_with_received_at() -> None:
    raw = track()
    event = normalise(raw, now_ms=NOW_MS)
    assert event == {**raw, "receivedAt": NOW_ISO}


def test_identify_event_with_traits_normalises() -> None:
    raw = {"type": "identify", "userId": "user-1", "traits": {"email": "a@example.com"}, "messageId": "m"}
    event = normalise(raw, now_ms=NOW_MS)
    assert event["type"] == "identify"
    assert event["traits"] == {"email": "a@example.com"}


def test_page_event_from_the_page_endpoint_gets_its_type() -> None:
    raw = {"anonymousId": "anon-1", "name": "Home", "properties": {"url": "https://example.com/"}}
    event = normalise(raw, now_ms=NOW_MS, default_type="page")
    assert event["type"] == "page"
    assert event["anonymousId"] == "anon-1"


def test_alias_event_with_previous_id_normalises() -> None:
    event = normalise({"type": "alias", "userId": "user-1", "previousId": "anon-1"}, now_ms=NOW_MS)
    assert event["previousId"] == "anon-1"


def test_normalise_does_not_modify_the_callers_object() -> None:
    raw = {"type": "track", "event": "Signed Up", "userId": "user-1"}
    before = copy.deepcopy(raw)
    normalise(raw, now_ms=NOW_MS)
    assert raw == before


def test_empty_user_id_falls_back_to_anonymous_id() -> None:
    event = normalise(track(userId="", anonymousId="anon-1"), now_ms=NOW_MS)
    assert event["anonymousId"] == "anon-1"


def test_id_of_exactly_the_maximum_length_is_accepted() -> None:
    normalise(track(userId="u" * MAX_ID_LENGTH), now_ms=NOW_MS)


def test_null_properties_context_and_traits_are_accepted() -> None:
    normalise(track(properties=None, context=None, traits=None), now_ms=NOW_MS)


# --- refusals, one per rule -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kind"),
    [([track()], "an array"), ("event", "a string"), (42, "a number"), (None, "null"), (True, "a boolean")],
)
def test_non_object_is_refused(raw: object, kind: str) -> None:
    assert refused(raw) == f"an event must be a JSON object, not {kind}"


def test_unknown_type_is_refused() -> None:
    assert refused(track(type="click")) == (
        "type must be one of alias, group, identify, page, screen, track, not 'click'"
    )


def test_missing_type_without_endpoint_default_is_refused() -> None:
    raw = track()
    del raw["type"]
    assert refused(raw).startswith("type must be one of")
    assert refused(raw).endswith("not None")


def test_type_not_matching_the_endpoint_is_refused() -> None:
    assert refused(track(), default_type="page") == "type 'track' sent to the /v1/page endpoint"


def test_event_without_any_id_is_refused() -> None:
    raw = track()
    del raw["userId"]
    assert refused(raw) == "userId or anonymousId is required"
    assert refused(track(userId="", anonymousId=None)) == "userId or anonymousId is required"


@pytest.mark.parametrize(("value", "kind"), [(12345, "a number"), (["u1"], "an array"), (True, "a boolean")])
@pytest.mark.parametrize("field", ["userId", "anonymousId"])
def test_id_of_the_wrong_type_is_refused(field: str, value: object, kind: str) -> None:
    assert refused(track(**{field: value})) == f"{field} must be a string, not {kind}"


@pytest.mark.parametrize("field", ["userId", "anonymousId"])
def test_overlong_id_is_refused(field: str) -> None:
    assert refused(track(**{field: "u" * (MAX_ID_LENGTH + 1)})) == f"{field} longer than {MAX_ID_LENGTH} characters"


@pytest.mark.parametrize("name", [None, "", "   ", 42])
def test_track_without_event_name_is_refused(name: object) -> None:
    assert refused(track(event=name)) == "a track event needs an event name (string)"


def test_track_with_overlong_event_name_is_refused() -> None:
    assert refused(track(event="x" * (MAX_NAME_LENGTH + 1))) == f"event name longer than {MAX_NAME_LENGTH} characters"
    normalise(track(event="x" * MAX_NAME_LENGTH), now_ms=NOW_MS)


def test_alias_without_previous_id_is_refused() -> None:
    assert refused({"type": "alias", "userId": "user-1"}) == "an alias event needs previousId and userId (strings)"
    same = {"type": "alias", "userId": "user-1", "previousId": "user-1"}
    assert refused(same) == "an alias event's previousId and userId must differ"
    assert (
        refused({"type": "alias", "userId": "user-1", "previousId": 7}) == "previousId must be a string, not a number"
    )


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [("properties", ["a"], "an array"), ("context", "ctx", "a string"), ("traits", 3, "a number")],
)
def test_object_fields_must_be_objects(field: str, value: object, kind: str) -> None:
    assert refused(track(**{field: value})) == f"{field} must be an object, not {kind}"


@pytest.mark.parametrize("value", [42, "", ["m"], True])
def test_message_id_of_the_wrong_type_is_refused(value: object) -> None:
    assert refused(track(messageId=value)) == "messageId must be a non-empty string"


def test_overlong_message_id_is_refused() -> None:
    assert refused(track(messageId="m" * (MAX_ID_LENGTH + 1))) == f"messageId longer than {MAX_ID_LENGTH} characters"


@pytest.mark.parametrize(("value", "kind"), [(1_772_366_400_000, "a number"), (["2026-03-01"], "an array")])
def test_timestamp_that_is_not_a_string_is_refused(value: object, kind: str) -> None:
    assert refused(track(timestamp=value)) == f"timestamp must be an ISO-8601 string, not {kind}"


@pytest.mark.parametrize(("value", "kind"), [(0, "a number"), (False, "a boolean")])
def test_falsy_timestamp_is_refused_not_replaced(value: object, kind: str) -> None:
    """A timestamp that is present but wrong is an error, even when it is falsy (0, false)."""
    assert refused(track(timestamp=value)) == f"timestamp must be an ISO-8601 string, not {kind}"


def test_timestamp_that_is_not_iso_is_refused() -> None:
    assert refused(track(timestamp="yesterday")) == "timestamp is not an ISO-8601 date-time: 'yesterday'"
    assert refused(track(timestamp="")) == "timestamp is not an ISO-8601 date-time: ''"


def test_timestamp_more_than_a_day_ahead_is_refused_but_23_hours_is_fine() -> None:
    too_far = iso_from_ms(NOW_MS + 25 * HOUR_MS)
    assert refused(track(timestamp=too_far)) == "timestamp is more than 24 h in the future"
    near = iso_from_ms(NOW_MS + 23 * HOUR_MS)
    assert normalise(track(timestamp=near), now_ms=NOW_MS)["timestamp"] == near


# --- filled-in fields -------------------------------------------------------------------------------------------


def test_original_timestamp_is_used_when_timestamp_is_missing() -> None:
    raw = track(originalTimestamp="2026-02-28T10:00:00.000Z")
    del raw["timestamp"]
    assert normalise(raw, now_ms=NOW_MS)["timestamp"] == "2026-02-28T10:00:00.000Z"


def test_original_timestamp_is_validated_too() -> None:
    raw = track(originalTimestamp="not a date")
    del raw["timestamp"]
    assert refused(raw).startswith("timestamp is not an ISO-8601 date-time")


def test_missing_timestamp_becomes_the_time_of_receipt() -> None:
    raw = track()
    del raw["timestamp"]
    event = normalise(raw, now_ms=NOW_MS)
    assert event["timestamp"] == NOW_ISO
    assert event["receivedAt"] == NOW_ISO


def test_auto_message_id_is_stable_for_a_retry() -> None:
    """A client retry (same content and timestamp, later arrival, keys in another order) gets the same messageId."""
    raw = {"type": "track", "event": "Signed Up", "userId": "u1", "timestamp": NOW_ISO, "properties": {"a": 1, "b": 2}}
    retry = {
        "properties": {"b": 2, "a": 1},
        "timestamp": NOW_ISO,
        "userId": "u1",
        "event": "Signed Up",
        "type": "track",
    }
    first = normalise(raw, now_ms=NOW_MS)["messageId"]
    again = normalise(retry, now_ms=NOW_MS + 5_000)["messageId"]
    assert first == again
    assert first.startswith("auto-")


def test_identical_events_without_timestamp_received_apart_are_two_events() -> None:
    raw = {"type": "track", "event": "Button Clicked", "userId": "user-1"}
    assert normalise(raw, now_ms=NOW_MS)["messageId"] == normalise(raw, now_ms=NOW_MS)["messageId"]
    assert normalise(raw, now_ms=NOW_MS)["messageId"] != normalise(raw, now_ms=NOW_MS + 1_000)["messageId"]


def test_auto_message_id_differs_for_different_content() -> None:
    a = normalise({"type": "track", "event": "Signed Up", "userId": "user-1"}, now_ms=NOW_MS)
    b = normalise({"type": "track", "event": "Signed Up", "userId": "user-2"}, now_ms=NOW_MS)
    c = normalise({"type": "track", "event": "Logged In", "userId": "user-1"}, now_ms=NOW_MS)
    assert len({a["messageId"], b["messageId"], c["messageId"]}) == 3


def test_null_message_id_is_replaced_by_an_auto_one() -> None:
    assert normalise(track(messageId=None), now_ms=NOW_MS)["messageId"].startswith("auto-")


# --- timestamps -------------------------------------------------------------------------------------------------


def test_naive_timestamp_is_utc() -> None:
    assert parse_timestamp("2026-03-01T12:00:00", field="timestamp") == NOW_MS
    assert to_event(track(timestamp="2026-03-01T12:00:00"), now_ms=NOW_MS).timestamp_ms == NOW_MS


def test_offset_timestamps_are_converted() -> None:
    assert parse_timestamp("2026-03-01T14:00:00+02:00", field="timestamp") == NOW_MS
    assert parse_timestamp("2026-03-01T12:00:00.250Z", field="timestamp") == NOW_MS + 250


def test_parse_timestamp_names_the_field() -> None:
    with pytest.raises(InvalidEvent, match=r"^originalTimestamp must be an ISO-8601 string, not null$"):
        parse_timestamp(None, field="originalTimestamp")


@pytest.mark.parametrize(
    "stamp",
    [
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC: accepted once, then crashed the worker on formatting
        "0001-01-01T00:00:00",
        "1969-12-31T23:59:59.999Z",
    ],
)
@pytest.mark.parametrize("field", ["timestamp", "originalTimestamp"])
def test_timestamp_before_1970_is_refused(field: str, stamp: str) -> None:
    raw = track(**{field: stamp})
    if field == "originalTimestamp":
        del raw["timestamp"]
    reason = f"timestamp must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: {stamp!r}"
    assert refused(raw) == reason
    with pytest.raises(InvalidEvent, match=r"^timestamp must be between"):
        to_event(raw, now_ms=NOW_MS)  # the ingest agent dead-letters it


def test_timestamp_past_9999_in_utc_is_refused_whatever_the_time_of_receipt() -> None:
    with pytest.raises(InvalidEvent, match=r"^timestamp must be between .*'9999-12-31T23:59:59-14:00'$"):
        parse_timestamp("9999-12-31T23:59:59-14:00", field="timestamp")


def test_the_first_and_last_accepted_instants_can_be_formatted() -> None:
    assert parse_timestamp("1970-01-01T00:00:00Z", field="timestamp") == 0
    assert parse_timestamp("9999-12-31T23:59:59.999Z", field="timestamp") == LATEST_TIMESTAMP_MS
    assert iso_from_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_from_ms(LATEST_TIMESTAMP_MS).startswith("9999-12-31T23:59:59.")


def test_iso_from_ms_uses_segment_format() -> None:
    assert iso_from_ms(NOW_MS + 123) == "2026-03-01T12:00:00.123Z"


# --- to_event ---------------------------------------------------------------------------------------------------


def test_to_event_uses_the_track_event_name() -> None:
    event = to_event(track(), now_ms=NOW_MS)
    assert event.type == "track"
    assert event.name == "Product Viewed"
    assert event.message_id == "msg-1"
    assert event.timestamp_ms == NOW_MS - HOUR_MS
    assert event.properties == {"product_id": "p1", "category": "shoes"}


@pytest.mark.parametrize(
    ("type_", "name"), [("page", "Page Viewed"), ("screen", "Screen Viewed"), ("identify", "Identify")]
)
def test_to_event_names_other_types(type_: str, name: str) -> None:
    assert to_event({"type": type_, "userId": "user-1"}, now_ms=NOW_MS).name == name


def test_to_event_prefers_user_id_over_anonymous_id() -> None:
    assert to_event(track(anonymousId="anon-1"), now_ms=NOW_MS).user_id == "user-1"
    raw = track(anonymousId="anon-1")
    del raw["userId"]
    assert to_event(raw, now_ms=NOW_MS).user_id == "anon-1"


def test_to_event_defaults_missing_properties_and_context_to_empty() -> None:
    event = to_event({"type": "track", "event": "X", "userId": "u", "properties": None}, now_ms=NOW_MS)
    assert event.properties == {}
    assert event.context == {}
    assert event.session_id is None


def test_to_event_reads_the_session_id_from_context() -> None:
    assert to_event(track(context={"sessionId": "s-1"}), now_ms=NOW_MS).session_id == "s-1"


def test_to_event_refuses_what_normalise_refuses() -> None:
    with pytest.raises(InvalidEvent, match="userId or anonymousId is required"):
        to_event({"type": "track", "event": "X"}, now_ms=NOW_MS)


# --- records ----------------------------------------------------------------------------------------------------


def test_decode_record_single_event() -> None:
    assert decode_record(orjson.dumps(track())) == [track()]


def test_decode_record_batch_envelope_keeps_order() -> None:
    events = [track(messageId=f"m{i}") for i in range(3)]
    assert decode_record(orjson.dumps({"batch": events})) == events


def test_decode_record_batch_that_is_not_a_list_is_refused() -> None:
    with pytest.raises(InvalidEvent, match=r"^batch must be an array, not an object$"):
        decode_record(b'{"batch": {"type": "track"}}')


def test_decode_record_not_json_is_refused() -> None:
    with pytest.raises(InvalidEvent, match=r"^record is not valid JSON"):
        decode_record(b"{not json")


@pytest.mark.parametrize(("value", "kind"), [(b"[1, 2]", "an array"), (b"42", "a number"), (b'"x"', "a string")])
def test_decode_record_json_that_is_not_an_object_is_refused(value: bytes, kind: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_record(value)
    assert str(caught.value) == f"record must be an event object or a batch envelope, not {kind}"


def test_decode_record_without_value_is_refused() -> None:
    with pytest.raises(InvalidEvent, match=r"^record has no value$"):
        decode_record(None)


def test_decode_record_oversize_is_refused_before_parsing() -> None:
    limit = 2 * MAX_BATCH_BYTES
    padding = b" " * (limit + 1 - len(b"{}"))
    with pytest.raises(InvalidEvent, match=f"^record of {limit + 1} bytes is over the {limit} byte limit$"):
        decode_record(b"{}" + padding)
    decode_record(b"{}" + padding[:-1])  # exactly at the limit is fine


def test_encode_batch_round_trips_through_decode_record() -> None:
    events = [track(messageId=f"m{i}", properties={"i": i, "text": 'é"\\'}) for i in range(5)]
    assert decode_record(encode_batch([orjson.dumps(e) for e in events])) == events


def test_encode_batch_of_nothing_is_an_empty_batch() -> None:
    assert decode_record(encode_batch([])) == []


@pytest.mark.parametrize(
    ("consent", "reason"),
    [
        ({"categoryPreferences": {"marketing": "yes"}}, "context.consent.categoryPreferences.marketing must be true"),
        (
            {"categoryPreferences": {"C0001": True, "analytics": None}},
            "context.consent.categoryPreferences.analytics must be true",
        ),
        ({"categoryPreferences": ["marketing"]}, "context.consent.categoryPreferences must be an object"),
        ({"marketing": True}, "context.consent must be an object with categoryPreferences"),
        ("all", "context.consent must be an object with categoryPreferences"),
    ],
)
def test_a_consent_statement_of_the_wrong_shape_or_with_a_non_boolean_purpose_is_refused(
    consent: object, reason: str
) -> None:
    assert refused(track(context={"consent": consent})).startswith(reason)


def test_a_well_formed_consent_statement_is_kept() -> None:
    preferences = {"analytics": True, "marketing": False}
    event = normalise(track(context={"consent": {"categoryPreferences": preferences}}), now_ms=NOW_MS)
    assert event["context"]["consent"]["categoryPreferences"] == preferences


@pytest.mark.parametrize(
    "preferences",
    [
        {"C0001": True, "C0004": False, "analytics": True},  # OneTrust's category ids
        {"Advertising": True, "Functional": "yes", "marketing": False},  # Segment Consent Management's categories
        {"C0002": True},
    ],
)
def test_categories_nudge_does_not_know_are_kept_not_refused(preferences: dict[str, object]) -> None:
    """Consent managers state their own categories on every event: refusing them lost all of a site's events."""
    event = normalise(track(context={"consent": {"categoryPreferences": preferences}}), now_ms=NOW_MS)
    assert event["context"]["consent"]["categoryPreferences"] == preferences


# --- clock skew: sentAt ----------------------------------------------------------------------------------------


def sent(**fields: Any) -> dict[str, Any]:
    """A track event from a client whose clock runs 2 days ahead: stamped 5 s before it was sent."""
    ahead = NOW_MS + 48 * HOUR_MS
    return track(timestamp=iso_from_ms(ahead - 5_000), sentAt=iso_from_ms(ahead), **fields)


def test_the_edge_corrects_the_client_clock_by_sent_at_and_keeps_the_client_value() -> None:
    raw = sent()
    event = normalise(raw, now_ms=NOW_MS, received=True)
    assert event["timestamp"] == iso_from_ms(NOW_MS - 5_000)  # receivedAt - (sentAt - timestamp)
    assert event["originalTimestamp"] == raw["timestamp"]
    assert event["sentAt"] == raw["sentAt"]
    assert event["receivedAt"] == NOW_ISO
    assert to_event(event, now_ms=NOW_MS).timestamp_ms == NOW_MS - 5_000  # ingest reads it as corrected, once


def test_a_batch_sent_at_applies_to_items_without_their_own() -> None:
    raw = track(timestamp=iso_from_ms(NOW_MS - 60_000))
    event = normalise(raw, now_ms=NOW_MS + 1_000, received=True, batch_sent_at=NOW_ISO)
    assert event["timestamp"] == iso_from_ms(NOW_MS - 59_000)
    own = normalise({**raw, "sentAt": iso_from_ms(NOW_MS - 30_000)}, now_ms=NOW_MS, received=True, batch_sent_at="x")
    assert own["timestamp"] == iso_from_ms(NOW_MS - 30_000)  # the item's own sentAt wins


def test_sent_at_is_not_applied_to_a_record_read_from_the_topic() -> None:
    """Ingest re-validates what the edge corrected: a second correction, from the time of reading, would be wrong."""
    raw = sent()
    assert normalise(raw, now_ms=NOW_MS + 48 * HOUR_MS)["timestamp"] == raw["timestamp"]
    assert refused(raw) == "timestamp is more than 24 h in the future"  # no correction: the raw clock counts


def test_a_retried_request_keeps_its_derived_message_id_though_its_correction_moves() -> None:
    raw = {k: v for k, v in sent().items() if k != "messageId"}
    first = normalise(raw, now_ms=NOW_MS, received=True)
    retry = normalise(raw, now_ms=NOW_MS + 30_000, received=True)
    assert first["timestamp"] != retry["timestamp"]
    assert first["messageId"] == retry["messageId"]
    assert first["messageId"] == normalise(raw, now_ms=NOW_MS + 48 * HOUR_MS)["messageId"]  # as without correction


def test_a_retry_stamped_with_a_new_sent_at_keeps_its_derived_message_id() -> None:
    """An SDK stamps sentAt anew on each attempt; without a messageId of its own, the retry is still the same event."""
    raw = {k: v for k, v in sent().items() if k != "messageId"}
    first = normalise(raw, now_ms=NOW_MS, received=True)
    sent_again = iso_from_ms(NOW_MS + 48 * HOUR_MS + 60_000)  # a minute later, by the same fast clock
    retry = normalise({**raw, "sentAt": sent_again}, now_ms=NOW_MS + 60_000, received=True)
    assert first["timestamp"] == retry["timestamp"]  # the same skew, measured again
    assert first["messageId"] == retry["messageId"]


@pytest.mark.parametrize(
    ("sent_at", "reason"),
    [
        ("yesterday", "sentAt is not an ISO-8601 date-time: 'yesterday'"),
        (1_772_366_400, "sentAt must be an ISO-8601 string, not a number"),
        ("1969-12-31T23:59:59Z", "sentAt must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: "),
    ],
)
def test_an_invalid_sent_at_refuses_the_event_with_the_reason(sent_at: object, reason: str) -> None:
    assert refused(track(sentAt=sent_at), received=True).startswith(reason)
    assert refused(track(), received=True, batch_sent_at=sent_at).startswith(reason)


def test_a_corrected_timestamp_must_stay_within_1970_and_9999() -> None:
    raw = track(timestamp="1970-01-01T00:00:00.000Z", sentAt=iso_from_ms(LATEST_TIMESTAMP_MS))
    assert refused(raw, received=True).startswith(
        "timestamp corrected by sentAt (receivedAt - (sentAt - timestamp)) is not between 1970-01-01T00:00:00Z and "
        "9999-12-31T23:59:59.999Z"
    )


def test_an_event_stamped_over_a_day_after_it_was_sent_is_refused() -> None:
    raw = track(timestamp=iso_from_ms(NOW_MS + 25 * HOUR_MS), sentAt=NOW_ISO)
    assert refused(raw, received=True) == (
        "timestamp is more than 24 h after sentAt: corrected, it is more than 24 h in the future"
    )
