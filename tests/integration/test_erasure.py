"""Erasure on a running stack: ``DELETE /v1/users/{id}`` removes the person from every table, Redis key and merged
alias, writes a receipt without their id, and re-sent old events do not bring them back."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from app.audit import subject
from app.devstack import DevStack
from app.events import iso_from_ms
from app.keys import key_name
from app.partitioning import partition_for
from app.pii import Unreadable, decrypt_value
from tests.integration.conftest import end_offsets, get_json, read_topic, stats, wait_for
from tests.integration.test_gateway import decisions
from tests.integration.test_intelligence import decision, rule_files, topic_records, track
from ws.delivery import inbox_key

EMAIL, NAME = "erase.me@example.com", "Erika Mustermann"


async def readable_anywhere(stack: DevStack, *needles: bytes) -> list[str]:
    """The topics holding any of ``needles`` in clear, in a key or a value: every Nudge topic and changelog."""
    names = ["nudge.events", "nudge.events.dlq", "nudge.segments", "nudge.messages", "nudge.audit"]
    names += [f"{stack.app_id}-{table}-changelog" for table in ("profiles", "insights", "messages", "aliases")]
    found = []
    for topic in names:
        for record in await read_topic(stack.broker.bootstrap, topic, stack.partitions):
            blob = (record.key or b"") + (record.value or b"")
            if any(needle in blob for needle in needles):
                found.append(topic)
    return found


async def events_of(stack: DevStack) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for record in await topic_records(stack, "nudge.events"):
        events += record.get("batch", [record])
    return events


TRIGGERS = """\
triggers:
  help_offer:
    when: {event: Help Wanted}
    message: {title: "Need a hand?"}
    consent: marketing
"""


async def test_an_erased_user_is_gone_everywhere_with_a_receipt_and_does_not_come_back(tmp_path: Path) -> None:
    env = rule_files(tmp_path, triggers=TRIGGERS)
    async with DevStack(root=tmp_path / "stack", keep_files=True, extra_env=env) as stack:
        user = "erase-me"
        anonymous = next(
            f"anon-{n}"
            for n in range(100)
            if partition_for(f"anon-{n}", stack.partitions) != partition_for(user, stack.partitions)
        )
        # A minute ago: old enough to precede the erasure, young enough for the inbox (a decision older than the
        # inbox TTL is stale and never pushed).
        stamp = iso_from_ms(int(time.time() * 1000) - 60_000)
        old_events = [
            {
                "anonymousId": anonymous,
                "event": "Product Viewed",
                "properties": {"product_id": "p1"},
                "timestamp": stamp,
            },
            {
                "userId": user,
                "anonymousId": anonymous,
                "event": "Product Added",
                "timestamp": stamp,
                "properties": {"product_id": "boots", "price": 80},
            },
            {"userId": user, "event": "Help Wanted", "timestamp": stamp, "messageId": "help-1"},
        ]
        await track(stack, *old_events)
        identify = {"type": "identify", "userId": user, "timestamp": stamp, "traits": {"email": EMAIL, "name": NAME}}
        async with (
            aiohttp.ClientSession(auth=aiohttp.BasicAuth(stack.write_key, "")) as session,
            session.post(f"{stack.http}/v1/identify", json=identify) as response,
        ):
            assert response.status == 200

        async def settled() -> bool:
            status, body = await get_json(f"{stack.http}/v1/users/{user}/profile", api_key=stack.api_key)
            merged = status == 200 and body["event_counts"].get("Product Viewed") == 1  # the anonymous view
            return merged and "email" in body["traits"] and len(await decisions(stack, user)) == 1

        await wait_for(settled, timeout=30, what="profile, merge and decision")
        redis = Redis.from_url(stack.redis.url)
        try:
            prefix = stack.app_id

            async def in_redis() -> bool:
                return bool(await redis.exists(f"{prefix}:user:{user}")) and bool(
                    await redis.exists(inbox_key(prefix, user))
                )

            await wait_for(in_redis, timeout=15, what="the read model and the inbox in Redis")
            # Held encrypted: the profile API and every topic show a token; only the export reads it.
            _, shown = await get_json(f"{stack.http}/v1/users/{user}/profile", api_key=stack.api_key)
            assert shown["traits"]["email"].startswith("enc:v1:")
            _, exported = await get_json(f"{stack.http}/v1/users/{user}/export", api_key=stack.api_key)
            assert exported["profile"]["traits"] == {"email": EMAIL, "name": NAME}
            assert not await readable_anywhere(stack, EMAIL.encode(), NAME.encode())
            # (the scan reads those topics: it finds the tokens in the event log and the profiles changelog)
            holding_tokens = set(await readable_anywhere(stack, b"enc:v1:"))
            assert {"nudge.events", f"{stack.app_id}-profiles-changelog"} <= holding_tokens

            async with (
                aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.api_key}"}) as session,
                session.delete(f"{stack.http}/v1/users/{user}") as response,
            ):
                assert response.status == 202
                receipt_id = (await response.json())["subject"]
            assert receipt_id == subject(stack.secret.encode(), user)

            async def erased() -> bool:
                status, _ = await get_json(f"{stack.http}/v1/users/{user}/profile", api_key=stack.api_key)
                return status == 404 and not await redis.exists(f"{prefix}:user:{user}", inbox_key(prefix, user))

            await wait_for(erased, timeout=20, what="the profile and the Redis keys to go")
            assert (await decision(stack, user))["known"] is False
            assert await decisions(stack, user) == []
            assert (await get_json(f"{stack.http}/v1/users/{user}/export", api_key=stack.api_key))[0] == 404

            async def alias_gone() -> bool:
                status, _ = await get_json(f"{stack.http}/v1/users/{anonymous}/profile", api_key=stack.api_key)
                return status == 404

            await wait_for(alias_gone, timeout=20, what="the merged anonymous id to be erased too")

            # The receipt follows the removal through the producer: the profile may answer 404 a moment before.
            receipts: list[dict[str, Any]] = []

            async def both_receipts() -> bool:
                receipts[:] = [r for r in await topic_records(stack, "nudge.audit") if r["action"] == "erasure"]
                return len(receipts) >= 2

            await wait_for(both_receipts, timeout=10, what="the erasure receipts of the user and the anonymous id")
            assert {r["subject"] for r in receipts} == {receipt_id, subject(stack.secret.encode(), anonymous)}
            mine = next(r for r in receipts if r["subject"] == receipt_id)
            assert mine["removed"]["profile"] and mine["removed"]["decision_records"] == 1
            assert mine["removed"]["merged_anonymous_ids"] == 1
            assert user not in orjson.dumps(receipts).decode() and anonymous not in orjson.dumps(receipts).decode()

            # A replay of the old events (a retry, or re-reading the log) does not bring the person back.
            replayed = [{**event, "messageId": f"replay-{n}"} for n, event in enumerate(old_events)]
            await track(stack, *replayed, {"userId": "someone-else", "event": "Product Viewed"})

            async def other_folded() -> bool:
                return (await get_json(f"{stack.http}/v1/users/someone-else/profile", api_key=stack.api_key))[0] == 200

            await wait_for(other_folded, timeout=20, what="a later event of another user")
            for person in (user, anonymous):
                assert (await get_json(f"{stack.http}/v1/users/{person}/profile", api_key=stack.api_key))[0] == 404

            # Crypto-shredded: the key is gone, so the tokens still on nudge.events can never be read again.
            assert not await redis.exists(key_name(stack.app_id, user))
            assert not await readable_anywhere(stack, EMAIL.encode(), NAME.encode())
            tokens = [
                event["traits"]["email"]
                for event in await events_of(stack)
                if event.get("type") == "identify" and event.get("userId") == user
            ]
            assert tokens
            for token in tokens:
                with pytest.raises(Unreadable):
                    decrypt_value(token, await redis.get(key_name(stack.app_id, user)), user)

            # A fresh deployment rebuilding every projection from the log (a new app id: empty tables, a new
            # consumer group reading nudge.events from offset 0) meets the erasure request after the person's
            # events, so they do not come back there either.
            stack.nodes[0].stop()
            rebuilt = stack.new_worker(1)
            rebuilt.env["NUDGE_APP_ID"] = f"{stack.app_id}-rebuilt"
            rebuilt.start()
            stack.nodes.append(rebuilt)
            await rebuilt.wait_ready()
            logged = await end_offsets(stack.broker.bootstrap, "nudge.events", stack.partitions)

            async def log_replayed() -> bool:
                offsets = (await stats(stack, rebuilt.url))["offsets"]
                return all(not end or offsets.get(str(p), [0, -1])[1] >= end - 1 for p, end in logged.items())

            await wait_for(log_replayed, timeout=60, what="the rebuilt deployment to replay the whole log")
            assert (await get_json(f"{rebuilt.url}/v1/users/someone-else/profile", api_key=stack.api_key))[0] == 200
            for person in (user, anonymous):
                for view in ("profile", "export"):
                    url = f"{rebuilt.url}/v1/users/{person}/{view}"
                    assert (await get_json(url, api_key=stack.api_key))[0] == 404, url
            assert not await redis.exists(f"{stack.app_id}-rebuilt:user:{user}")
        finally:
            await redis.aclose()


async def test_without_redis_an_export_is_a_retryable_503_and_the_rest_is_served(tmp_path: Path) -> None:
    """An export decrypts personal traits with the user's key from Redis: while Redis is away that is a 503 with the
    reason and ``Retry-After``, not a 500, and requests that need no Redis are answered as before."""
    async with DevStack(root=tmp_path / "stack", keep_files=True) as stack:
        user = "export-me"
        identify = {"userId": user, "traits": {"email": EMAIL, "name": NAME}}
        async with (
            aiohttp.ClientSession(auth=aiohttp.BasicAuth(stack.write_key, "")) as session,
            session.post(f"{stack.http}/v1/identify", json=identify) as response,
        ):
            assert response.status == 200

        async def exported() -> bool:
            status, body = await get_json(f"{stack.http}/v1/users/{user}/export", api_key=stack.api_key)
            return status == 200 and body["profile"]["traits"].get("email") == EMAIL

        await wait_for(exported, timeout=30, what="an export with the decrypted email")
        # The same deployment restarted with its Redis out of reach (nothing listens on port 1; the stack's Redis
        # stays up for everyone else): its tables recover from their changelogs, still holding the encrypted email.
        stack.nodes[0].stop()
        cut_off = stack.new_worker(1)
        cut_off.env["REDIS_URL"] = "redis://127.0.0.1:1/0"
        cut_off.start()
        stack.nodes.append(cut_off)
        await cut_off.wait_ready()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.api_key}"}) as session:
            for _ in range(2):  # and again: the worker is not left broken by the first
                async with session.get(f"{cut_off.url}/v1/users/{user}/export") as response:
                    body = await response.json()
                    assert response.status == 503, body
                    assert response.headers["Retry-After"] == "5"
                    assert "the key store (Redis) is unavailable; retry later" in body["error"]
            async with session.get(f"{cut_off.url}/v1/users/{user}/profile") as response:
                assert response.status == 200
                assert (await response.json())["traits"]["email"].startswith("enc:v1:")
            consent = {"categoryPreferences": {"marketing": False}}
            async with session.put(f"{cut_off.url}/v1/users/{user}/consent", json=consent) as response:
                assert response.status == 202  # no personal field in a consent event: no key needed
            async with session.get(f"{cut_off.url}/v1/users/{user}/decision") as response:
                assert response.status == 200
