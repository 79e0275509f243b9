"""Identity resolution's pure parts: merging an anonymous profile into a known one, and the signed merge record."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.codecs import decode_profile, encode_profile
from app.events import InvalidEvent, to_event
from app.identity import Merge, alias_event, is_merge, merge_record, read_merge
from models import labels
from models.insight import Insight, merge_insights
from tables.profile import CartItem, Profile, merge_profiles

SECRET = b"k" * 32
T0 = 1_772_366_400_000
HOUR = 3_600_000


def anonymous() -> Profile:
    return Profile(
        user_id="anon-1",
        first_seen_ms=T0,
        last_seen_ms=T0 + HOUR,
        event_counts={"Product Viewed": 3, "Product Added": 1},
        sessions=1,
        cart={"p1": CartItem("p1", 1, 20.0, "shoes", "Red shoes")},
        cart_changed_ms=T0 + HOUR,
        affinity={"shoes": 4.0},
        affinity_as_of_ms=T0 + HOUR,
        recent_items=("p1", "p2"),
        consent={"marketing": False},
    )


def known() -> Profile:
    return Profile(
        user_id="user-1",
        first_seen_ms=T0 - 10 * HOUR,
        last_seen_ms=T0 - 9 * HOUR,
        event_counts={"Product Viewed": 2, "Order Completed": 1},
        sessions=2,
        cart={"p1": CartItem("p1", 2, 20.0, "shoes"), "p3": CartItem("p3", 1, 5.0)},
        orders=1,
        revenue=50.0,
        last_order_ms=T0 - 9 * HOUR,
        recent_items=("p3",),
        consent={"marketing": True, "analytics": True},
        source_partition=3,
        source_offset=77,
    )


def test_an_anonymous_profile_merges_into_the_known_one_adding_up_what_both_did() -> None:
    merged = merge_profiles(known(), anonymous())
    assert merged.user_id == "user-1"
    assert merged.event_counts == {"Product Viewed": 5, "Order Completed": 1, "Product Added": 1}
    assert (merged.first_seen_ms, merged.last_seen_ms, merged.sessions) == (T0 - 10 * HOUR, T0 + HOUR, 3)
    assert merged.cart == {"p1": CartItem("p1", 3, 20.0, "shoes", "Red shoes"), "p3": CartItem("p3", 1, 5.0)}
    assert (merged.orders, merged.revenue, merged.cart_changed_ms) == (1, 50.0, T0 + HOUR)
    assert merged.recent_items == ("p1", "p2", "p3")  # the more recent visitor's views first
    assert merged.consent == {"marketing": False, "analytics": True}  # a refusal on either side stands
    assert (merged.source_partition, merged.source_offset) == (3, 77)  # the known user's stream position
    assert merged.aliases == ("anon-1",)


def test_a_merge_into_a_user_seen_for_the_first_time_keeps_everything_under_the_new_id() -> None:
    merged = merge_profiles(None, anonymous(), user_id="user-1")
    assert merged.user_id == "user-1" and merged.cart == anonymous().cart and merged.aliases == ("anon-1",)
    assert decode_profile(encode_profile(merged)) == merged


def test_a_merge_record_with_a_null_revenue_merges_as_zero() -> None:
    """Revenue that was infinite before money was bounded reached merge records as null."""
    body = orjson.loads(encode_profile(anonymous())) | {"revenue": None}
    merge = read_merge(orjson.loads(merge_record(Merge("anon-1", "user-1", body, None), SECRET)), SECRET)
    assert merge.profile is not None
    merged = merge_profiles(known(), Profile.from_dict(merge.profile))
    assert merged.revenue == known().revenue == 50.0


def test_the_intent_score_survives_the_merge() -> None:
    visitor = Insight(intent=0.7, model_version="p1.v10", as_of_ms=T0 + HOUR, cluster=2)
    assert merge_insights(None, visitor, personal=True) == visitor
    user = Insight(intent=0.1, model_version="p3.v5", as_of_ms=T0 - 9 * HOUR, cluster=1, segments=("buyer",))
    merged = merge_insights(user, visitor, personal=True)
    assert (merged.intent, merged.model_version, merged.as_of_ms) == (0.7, "p1.v10", T0 + HOUR)
    assert (merged.cluster, merged.segments) == (1, ("buyer",))


def test_a_merge_gives_no_score_to_a_user_who_refused_personalization() -> None:
    # The visitor was scored before logging in; the known user had refused: the merged user is not scored, and the
    # visitor's samples are not learned from.
    visitor = Insight(
        intent=0.91, model_version="p1.v10", as_of_ms=T0 + HOUR, cluster=4, pending=(labels.Sample(T0, (1,), {}, 0.5),)
    )
    user = Insight(as_of_ms=T0, segments=("buyer",))
    for into in (user, None):
        merged = merge_insights(into, visitor, personal=False)
        assert (merged.intent, merged.model_version, merged.cluster, merged.pending) == (None, "", None, ())
        assert merged.as_of_ms == T0 + HOUR
    assert merge_insights(user, visitor, personal=False).segments == ("buyer",)


samples = st.lists(
    st.builds(
        labels.Sample,
        st.integers(T0, T0 + 4),  # few distinct times: ties at the cut past MAX_PENDING are the hard case
        st.tuples(st.integers(0, 3)),
        st.just({}),
        st.sampled_from([0.25, 0.75]),
    ),
    max_size=labels.MAX_PENDING + 8,
).map(tuple)


@given(samples, samples)
def test_a_merge_applied_twice_is_applied_once(known_pending: tuple, visitor_pending: tuple) -> None:
    # A crash after the merged insight's write and before the merged profile's: the merge record is redelivered,
    # and only the profile (which has not seen the alias) shows it was not applied. Merging the visitor's insight a
    # second time must not give the model the visitor's samples to learn from twice.
    user = Insight(intent=0.1, as_of_ms=T0, pending=known_pending)
    visitor = Insight(intent=0.7, as_of_ms=T0 + HOUR, pending=visitor_pending)
    once = merge_insights(user, visitor, personal=True)
    assert merge_insights(once, visitor, personal=True) == once
    assert len(set(map(repr, once.pending))) == len(once.pending)
    assert len(once.pending) == min(labels.MAX_PENDING, len(set(map(repr, (*known_pending, *visitor_pending)))))


def test_a_merge_record_is_signed_and_a_forged_one_is_refused() -> None:
    merge = Merge("anon-1", "user-1", {"user_id": "anon-1"}, '{"intent":0.5}')
    item = orjson.loads(merge_record(merge, SECRET))
    assert is_merge(item) and read_merge(item, SECRET) == merge
    with pytest.raises(InvalidEvent, match="bad signature"):
        read_merge(item, b"x" * 32)
    forged = {**item, "nudgeMerge": {**item["nudgeMerge"], "into": "attacker"}}
    with pytest.raises(InvalidEvent, match="bad signature"):
        read_merge(forged, SECRET)
    with pytest.raises(InvalidEvent, match="expected nudgeMerge"):
        read_merge({"nudgeMerge": "x"}, SECRET)


def test_an_alias_event_is_routed_to_the_anonymous_id_and_links_to_the_user() -> None:
    event = to_event(alias_event("anon-1", "user-1", timestamp="2026-03-01T12:00:00Z"), now_ms=T0)
    assert (event.user_id, event.alias_to) == ("anon-1", "user-1")
    identify = to_event(
        {"type": "identify", "userId": "user-1", "anonymousId": "anon-1", "messageId": "m", "timestamp": "2026-03-01"},
        now_ms=T0,
    )
    assert (identify.user_id, identify.anonymous_id, identify.alias_to) == ("user-1", "anon-1", None)


def test_an_erasure_record_is_signed_and_a_forged_one_is_refused() -> None:
    from app.identity import Erase, erase_record, is_erase, read_erase

    item = orjson.loads(erase_record(Erase("ann", T0), SECRET))
    assert is_erase(item) and read_erase(item, SECRET) == Erase("ann", T0)
    with pytest.raises(InvalidEvent, match="bad signature"):
        read_erase({**item, "nudgeErase": {"user": "bob", "at_ms": T0}}, SECRET)
    with pytest.raises(InvalidEvent, match="user \\(string\\) and at_ms"):
        read_erase(orjson.loads(erase_record(Erase("", T0), SECRET)), SECRET)


def test_personal_fields_are_encrypted_per_user_and_unreadable_without_the_key() -> None:
    from app.pii import Unreadable, decrypt_fields, encrypt_fields, is_token, new_key

    key = new_key()
    event = {"type": "identify", "userId": "ann", "traits": {"email": "ann@example.com", "plan": "gold"}}
    sealed = encrypt_fields(event, key, "ann")
    assert is_token(sealed["traits"]["email"]) and sealed["traits"]["plan"] == "gold"
    assert event["traits"]["email"] == "ann@example.com"  # the caller's event is untouched
    assert "ann@example.com" not in orjson.dumps(sealed).decode()
    assert encrypt_fields(sealed, key, "ann") == sealed  # tokens are not encrypted twice
    assert decrypt_fields(sealed, key, "ann")["traits"]["email"] == "ann@example.com"
    with pytest.raises(Unreadable, match="erased"):
        decrypt_fields(sealed, None, "ann")
    with pytest.raises(Unreadable, match="does not open"):
        decrypt_fields(sealed, new_key(), "ann")
    with pytest.raises(Unreadable, match="does not open"):
        decrypt_fields(sealed, key, "bob")  # bound to its user: cannot be replayed as someone else's
