"""Consent per purpose, enforced on a running stack: at ingest (analytics), scoring and segments (personalization),
triggers and push (marketing); set by events, by ``PUT /v1/users/{id}/consent`` and by the browser SDK's frame."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from app.devstack import DevStack
from tests.integration.conftest import get_json, wait_for
from tests.integration.test_gateway import decisions, tab, token_for
from tests.integration.test_intelligence import decision, rule_files, topic_records, track
from ws.delivery import inbox

pytestmark = pytest.mark.integration

TRIGGERS = """\
cap_per_user_per_day: 50
triggers:
  help_offer:
    when: {event: Help Wanted}
    message: {title: "Need a hand?"}
    consent: marketing
  cart_idle:
    when: {inactive: 2s}
    if: cart_items > 0
    message: {title: "Your cart misses you"}
    consent: marketing
"""


async def put_consent(stack: DevStack, user: str, body: bytes) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.api_key}"}) as session,
        session.put(f"{stack.http}/v1/users/{user}/consent", data=body) as response,
    ):
        return response.status, await response.json(content_type=None)


async def outcomes(stack: DevStack, user: str, count: int) -> list[tuple[str, str | None]]:
    async def arrived() -> bool:
        return len(await decisions(stack, user)) >= count

    await wait_for(arrived, timeout=20, what=f"{count} decisions for {user}")
    return [(d["trigger"], d["reason"] or d["outcome"]) for d in reversed(await decisions(stack, user))]


async def test_marketing_needs_consent_which_the_sdk_grants_and_the_api_withdraws_at_once(tmp_path: Path) -> None:
    # An EU-style deployment: marketing is opt-in.
    env = {**rule_files(tmp_path, triggers=TRIGGERS), "NUDGE_DEFAULT_CONSENT": "analytics,personalization"}
    async with DevStack(root=tmp_path / "stack", keep_files=True, extra_env=env) as stack:
        async with tab(stack.gateway, await token_for(stack, "ann")) as ann:
            await ann.track("Help Wanted")
            assert await outcomes(stack, "ann", 1) == [("help_offer", "consent")]

            await ann.socket.send(
                orjson.dumps({"type": "consent", "categoryPreferences": {"marketing": True}}).decode()
            )
            await ann.track("Help Wanted")
            [pushed] = await ann.wait_for_messages(1)
            assert await outcomes(stack, "ann", 2) == [("help_offer", "consent"), ("help_offer", "sent")]

            # Mid-session: a filled cart arms the idle trigger, then the shop's backend records a withdrawal.
            await ann.track("Product Added", properties={"product_id": "boots", "price": 80})
            status, accepted = await put_consent(stack, "ann", b'{"categoryPreferences": {"marketing": false}}')
            assert status == 202, accepted
            assert await outcomes(stack, "ann", 3) == [
                ("help_offer", "consent"),
                ("help_offer", "sent"),
                ("cart_idle", "consent"),
            ]
            # Nothing after the withdrawal, which reaches her open tab to take the pop-up back.
            withdrawn = {"type": "withdrawn", "purposes": ["marketing"]}
            assert await ann.wait_for_messages(2) == [pushed, withdrawn]
            assert await ann.drain() == [pushed, withdrawn]
        _, profile = await get_json(f"{stack.http}/v1/users/ann/profile", api_key=stack.api_key)
        assert profile["consent"] == {"marketing": False}

        # Every change is audited where it is applied, whichever channel stated it.
        async def applied() -> list[dict[str, Any]]:
            records = await topic_records(stack, "nudge.audit")
            return sorted((r for r in records if r["action"] == "consent_applied"), key=lambda r: r["at"])

        await wait_for(lambda: _count_is(applied, 2), timeout=10, what="two applied consent changes")
        assert [(r["by"], r["categoryPreferences"]) for r in await applied()] == [
            ("event:websocket", {"marketing": True}),
            ("event:api", {"marketing": False}),
        ]


async def _count_is(records: Callable[[], Awaitable[list[Any]]], count: int) -> bool:
    return len(await records()) == count


async def test_a_withdrawal_takes_back_the_messages_of_that_purpose_still_waiting_for_the_user(tmp_path: Path) -> None:
    # Decided while ann had agreed, not shown yet (she was offline): after she withdraws marketing, her next visit
    # must not show the marketing message; the one needing personalization, which she still allows, is shown.
    triggers = (
        TRIGGERS + "  tip:\n    when: {event: Tip Wanted}\n    message: {title: A tip}\n    consent: personalization\n"
    )
    env = {**rule_files(tmp_path, triggers=triggers), "NUDGE_DEFAULT_CONSENT": "analytics,personalization,marketing"}
    async with DevStack(root=tmp_path / "stack", keep_files=True, extra_env=env) as stack:
        token = await token_for(stack, "ann")
        async with tab(stack.gateway, token) as ann:
            await ann.socket.close()  # presence gone: what is decided now waits in her inbox
        await track(stack, {"userId": "ann", "event": "Help Wanted"}, {"userId": "ann", "event": "Tip Wanted"})
        assert sorted(await outcomes(stack, "ann", 2)) == [("help_offer", "sent"), ("tip", "sent")]
        [tip] = [d for d in await decisions(stack, "ann") if d["trigger"] == "tip"]
        assert tip["consent"] == "personalization"
        redis = Redis.from_url(stack.redis.url)
        try:
            await wait_for(lambda: _inbox_holds(redis, stack, 2), timeout=20, what="both messages in ann's inbox")
            status, accepted = await put_consent(stack, "ann", b'{"categoryPreferences": {"marketing": false}}')
            assert status == 202, accepted
            await wait_for(lambda: _inbox_holds(redis, stack, 1), timeout=20, what="the offer taken back")
        finally:
            await redis.aclose()
        async with tab(stack.gateway, token) as ann:
            assert [m["id"] for m in await ann.drain()] == [tip["id"]]


async def test_a_refusal_brought_by_a_merge_takes_back_the_waiting_messages_of_that_purpose(tmp_path: Path) -> None:
    # Ann agreed to marketing (the default) and has an offer waiting. Before signing in, her visitor id refused
    # marketing; signing in merges the two, the refusal stands, so the offer must not be shown, and the change of
    # consent is audited as the merge's.
    env = {**rule_files(tmp_path, triggers=TRIGGERS), "NUDGE_DEFAULT_CONSENT": "analytics,personalization,marketing"}
    async with DevStack(root=tmp_path / "stack", keep_files=True, extra_env=env) as stack:
        token = await token_for(stack, "ann")
        async with tab(stack.gateway, token) as ann:
            await ann.socket.close()  # presence gone: what is decided now waits in her inbox
        await track(stack, {"userId": "ann", "event": "Help Wanted"})
        assert await outcomes(stack, "ann", 1) == [("help_offer", "sent")]
        redis = Redis.from_url(stack.redis.url)
        try:
            await wait_for(lambda: _inbox_holds(redis, stack, 1), timeout=20, what="the offer in ann's inbox")
            refused = {"consent": {"categoryPreferences": {"marketing": False}}}
            await track(stack, {"anonymousId": "visitor-7", "event": "Page Viewed", "context": refused})
            await track(stack, {"userId": "ann", "anonymousId": "visitor-7", "event": "Signed In"})
            await wait_for(lambda: _inbox_holds(redis, stack, 0), timeout=20, what="the offer taken back")
        finally:
            await redis.aclose()
        _, profile = await get_json(f"{stack.http}/v1/users/ann/profile", api_key=stack.api_key)
        assert profile["consent"]["marketing"] is False
        async with tab(stack.gateway, token) as ann:
            assert await ann.drain() == []

        async def merge_audited() -> bool:
            records = await topic_records(stack, "nudge.audit")
            return any(r["action"] == "consent_applied" and r["by"] == "event:merge" for r in records)

        await wait_for(merge_audited, timeout=20, what="the merge's consent change audited")


async def _inbox_holds(redis: Redis, stack: DevStack, count: int) -> bool:
    return len(await inbox(redis, stack.app_id, "ann")) == count


async def test_without_analytics_nothing_is_profiled_and_without_personalization_nothing_is_inferred(
    tmp_path: Path,
) -> None:
    env = {**rule_files(tmp_path), "NUDGE_DEFAULT_CONSENT": ""}  # opt-in for everything
    async with DevStack(root=tmp_path / "stack", keep_files=True, extra_env=env) as stack:
        views = [
            {"event": "Product Viewed", "properties": {"product_id": f"p{n}", "category": "shoes"}} for n in range(7)
        ]
        analytics_only = {"consent": {"categoryPreferences": {"analytics": True}}}
        await track(
            stack,
            *({"userId": "silent", **view} for view in views),
            *({"userId": "counted", **view, "context": analytics_only} for view in views),
        )

        async def folded() -> bool:
            _, stats = await get_json(f"{stack.http}/v1/stats", api_key=stack.api_key)
            return bool(stats["events"] == 14 and stats["anonymous_events"].get("Product Viewed") == 7)

        await wait_for(folded, timeout=20, what="14 events, 7 of them only counted")
        _, silent = await get_json(f"{stack.http}/v1/users/silent/profile", api_key=stack.api_key)
        assert silent["event_counts"] == {} and silent["recently_viewed"] == [] and silent["sessions"]["count"] == 0
        _, counted = await get_json(f"{stack.http}/v1/users/counted/profile", api_key=stack.api_key)
        assert counted["event_counts"] == {"Product Viewed": 7}
        # Profiled, but not personalised: no score, no cluster, no segment (seven shoe views would make a binge).
        for user in ("silent", "counted"):
            shown = await decision(stack, user)
            assert (shown["segments"], shown["intent"], shown["cluster"]) == ([], None, None)


async def test_consent_with_unknown_purposes_or_wrong_types_is_refused_with_a_reason(stack: DevStack) -> None:
    for body, reason in (
        (b'{"categoryPreferences": {"ads": true}}', "categoryPreferences: unknown purpose 'ads'"),
        (b'{"categoryPreferences": {"marketing": "no"}}', "categoryPreferences.marketing must be true or false"),
        (b'{"marketing": false}', 'expected {"categoryPreferences"'),
        (b"[", "the body is not JSON"),
    ):
        status, answer = await put_consent(stack, "ann", body)
        assert status == 400 and answer["error"].startswith(reason), answer
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{stack.http}/v1/users/ann/consent", data=b"{}") as response:
            assert response.status == 401
        auth = aiohttp.BasicAuth(stack.write_key, "")
        bad_event = {
            "userId": "ann",
            "event": "Viewed",
            "context": {"consent": {"categoryPreferences": {"marketing": 1}}},
        }
        async with session.post(f"{stack.http}/v1/track", json=bad_event, auth=auth) as response:
            assert response.status == 400
            assert "categoryPreferences.marketing must be true or false" in (await response.json())["message"]
        # A consent manager's own categories ride along on every event of such a site: the event is kept.
        managed = {"C0001": True, "Advertising": False, "marketing": True}
        event = {"userId": "ann", "event": "Viewed", "context": {"consent": {"categoryPreferences": managed}}}
        async with session.post(f"{stack.http}/v1/track", json=event, auth=auth) as response:
            assert response.status == 200, await response.text()


async def test_export_returns_everything_held_and_consent_and_export_are_audited_without_the_user_id(
    stack: DevStack,
) -> None:
    from app.audit import key_fingerprint, subject

    await track(stack, {"userId": "ann", "event": "Product Added", "properties": {"product_id": "boots", "price": 80}})
    status, _ = await put_consent(stack, "ann", b'{"categoryPreferences": {"marketing": false}}')
    assert status == 202

    async def consented() -> bool:
        _, body = await get_json(f"{stack.http}/v1/users/ann/profile", api_key=stack.api_key)
        return bool(body.get("consent") == {"marketing": False})

    await wait_for(consented, timeout=20, what="ann's consent change")
    status, exported = await get_json(f"{stack.http}/v1/users/ann/export", api_key=stack.api_key)
    assert status == 200
    assert exported["profile"]["cart"]["items"][0]["product_id"] == "boots"
    assert exported["profile"]["consent"] == {"marketing": False}
    assert exported["insight"]["user_id"] == "ann" and isinstance(exported["messages"], list)
    assert (await get_json(f"{stack.http}/v1/users/nobody/export", api_key=stack.api_key))[0] == 404

    async def audited() -> bool:
        return len(await topic_records(stack, "nudge.audit")) == 3

    await wait_for(audited, timeout=10, what="three audit records")
    records = sorted(await topic_records(stack, "nudge.audit"), key=lambda r: r["action"])
    # The API's request, the worker's application of it, the export.
    assert [r["action"] for r in records] == ["consent", "consent_applied", "export"]
    assert {r["subject"] for r in records} == {subject(stack.secret.encode(), "ann")}
    assert [r["by"] for r in records] == [key_fingerprint(stack.api_key), "event:api", key_fingerprint(stack.api_key)]
    assert records[1]["categoryPreferences"] == {"marketing": False}
    assert "ann" not in orjson.dumps(records).decode()  # no user id, no key
    assert stack.api_key not in orjson.dumps(records).decode()
