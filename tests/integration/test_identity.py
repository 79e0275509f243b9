"""Identity resolution on a running stack: an anonymous shopper logs in and keeps their cart and intent score, even
though the anonymous and the known id live on different partitions; later anonymous events land on the known user."""

from __future__ import annotations

from typing import Any

import orjson

from app.devstack import DevStack
from app.partitioning import partition_for
from app.pipeline import HOPS_KEY, MAX_ALIAS_HOPS
from app.stack_client import read_topic
from tests.integration.conftest import get_json, stats, wait_for
from tests.integration.test_intelligence import decision, track


def two_ids_on_different_partitions(partitions: int) -> tuple[str, str]:
    user = "user-identity"
    anonymous = next(
        f"anon-{n}" for n in range(100) if partition_for(f"anon-{n}", partitions) != partition_for(user, partitions)
    )
    return anonymous, user


async def profile(stack: DevStack, user: str) -> tuple[int, Any]:
    return await get_json(f"{stack.http}/v1/users/{user}/profile", api_key=stack.api_key)


async def test_an_anonymous_shopper_who_logs_in_keeps_their_cart_and_intent_score(stack: DevStack) -> None:
    anonymous, user = two_ids_on_different_partitions(stack.partitions)
    boots = {"product_id": "boots", "name": "Hiking boots", "price": 80.0, "category": "shoes"}
    await track(
        stack,
        {"anonymousId": anonymous, "event": "Product Viewed", "properties": boots},
        {"anonymousId": anonymous, "event": "Product Added", "properties": boots},
    )

    async def scored() -> bool:
        return (await decision(stack, anonymous))["intent"] is not None

    await wait_for(scored, timeout=20, what="the anonymous shopper's intent score")
    intent = (await decision(stack, anonymous))["intent"]["score"]

    # Login: the shop identifies the visitor (twice: a retry must not merge twice), then more anonymous events.
    login = {"type": "identify", "userId": user, "anonymousId": anonymous, "traits": {"plan": "gold"}}
    await track(stack, login)
    await track(stack, {**login, "messageId": "login-retry"})
    await track(stack, {"anonymousId": anonymous, "event": "Product Viewed", "properties": {"product_id": "socks"}})

    async def merged() -> bool:
        status, body = await profile(stack, user)
        return status == 200 and body["event_counts"].get("Product Viewed") == 2

    await wait_for(merged, timeout=30, what="the anonymous profile merged into the known one, then one more view")
    _, known = await profile(stack, user)
    assert known["user_id"] == user
    assert [(i["product_id"], i["quantity"], i["name"]) for i in known["cart"]["items"]] == [
        ("boots", 1, "Hiking boots")
    ]
    assert known["event_counts"] == {"Product Viewed": 2, "Product Added": 1, "Identify": 2}
    assert known["recently_viewed"] == ["socks", "boots"]
    assert (await decision(stack, user))["intent"]["score"] == intent  # no scored event since the merge

    # The anonymous id answers with the canonical profile; it keeps nothing of its own.
    status, via_alias = await profile(stack, anonymous)
    assert status == 200 and via_alias["user_id"] == user and via_alias["cart"] == known["cart"]
    assert (await decision(stack, anonymous))["known"] is False


async def test_two_ids_are_never_merged_into_each_other(stack: DevStack) -> None:
    """An alias back into an id already merged here would send both ids' events round between them for ever."""
    anonymous, user = two_ids_on_different_partitions(stack.partitions)
    await track(stack, {"type": "identify", "userId": user, "anonymousId": anonymous})

    async def merged() -> bool:
        status, body = await profile(stack, anonymous)
        return status == 200 and body["user_id"] == user

    await wait_for(merged, timeout=30, what=f"{anonymous} merged into {user}")
    await track(stack, {"type": "alias", "previousId": user, "userId": anonymous, "messageId": "backwards"})
    # An event forwarded as often as a cycle formed by a race would forward it.
    looping = {"anonymousId": anonymous, "event": "Product Viewed", "messageId": "looping"}
    await track(stack, {**looping, "context": {HOPS_KEY: MAX_ALIAS_HOPS}})

    async def refused() -> dict[str, Any]:
        records = await read_topic(stack.broker.bootstrap, "nudge.events.dlq", stack.partitions)
        return {orjson.loads(r.value).get("messageId"): dict(r.headers) for r in records}

    async def both_refused() -> bool:
        return {"backwards", "looping"} <= (await refused()).keys()

    await wait_for(both_refused, timeout=30, what="the backwards alias and the looping event dead-lettered")
    dead = await refused()
    assert b"would make a cycle" in dead["backwards"]["nudge-reason"]
    assert b"an alias cycle" in dead["looping"]["nudge-reason"]
    for headers in dead.values():
        assert headers["nudge-source"].startswith(b"nudge.events/")
    # Both ids' later events land on the known user, once each.
    await track(
        stack,
        {"anonymousId": anonymous, "event": "Product Viewed", "properties": {"product_id": "a"}},
        {"userId": user, "event": "Product Viewed", "properties": {"product_id": "b"}},
    )

    async def both_counted() -> bool:
        _, body = await profile(stack, user)
        return body["event_counts"].get("Product Viewed") == 2

    await wait_for(both_counted, timeout=30, what="both views on the known user")
    _, body = await profile(stack, user)
    assert body["user_id"] == user and body["event_counts"] == {"Identify": 1, "Product Viewed": 2}


async def test_the_events_of_a_merged_id_count_as_forwarded_not_as_duplicates(stack: DevStack) -> None:
    """/v1/stats: the alias hand-over and a merged id's later events were sent on to its user, not skipped."""
    anonymous, user = two_ids_on_different_partitions(stack.partitions)
    await track(stack, {"anonymousId": anonymous, "event": "Product Viewed", "properties": {"product_id": "a"}})

    async def views_on_user(count: int) -> bool:
        status, body = await profile(stack, user)
        return status == 200 and body["event_counts"].get("Product Viewed") == count

    async def anonymous_profile() -> bool:
        return (await profile(stack, anonymous))[0] == 200

    await wait_for(anonymous_profile, timeout=20, what="the anonymous profile")
    await track(stack, {"type": "identify", "userId": user, "anonymousId": anonymous})
    # Merged once the user's profile holds the anonymous view: its later events then raise no new alias.
    await wait_for(lambda: views_on_user(1), timeout=30, what="the anonymous profile merged into the known one")
    await track(
        stack,
        *({"anonymousId": anonymous, "event": "Product Viewed", "properties": {"product_id": p}} for p in "bc"),
    )
    await wait_for(lambda: views_on_user(3), timeout=30, what="the later anonymous views on the known user")

    # Anonymous view, identify, alias, two views at the anonymous id's partition, the same two at the user's.
    async def all_counted() -> bool:
        return bool((await stats(stack))["events"] == 7)

    await wait_for(all_counted, timeout=20, what="every event counted")
    counts = await stats(stack)
    assert {key: counts[key] for key in ("folded", "forwarded", "rejected", "duplicates")} == {
        "folded": 4,  # the first view, the identify, and the two views once they reach the user
        "forwarded": 3,  # the alias, sent as the merge record, and the two later views
        "rejected": 0,
        "duplicates": 0,
    }
