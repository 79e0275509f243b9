"""Scores, segments, delayed labels, the decision API and the Redis read model on a running worker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from app.devstack import DevStack
from app.events import iso_from_ms
from tests.integration.conftest import get_json, read_topic, wait_for
from ws.tokens import TokenError, verify_token

pytestmark = pytest.mark.integration

SEGMENTS = """\
segments:
  shoe_browser:
    description: more than 5 views of one category this session
    when: session_top_category_views > 5
  cart_idle:
    description: cart untouched for 3 seconds
    when: cart_items > 0 and minutes_since_cart_change >= 0.05
  buyer:
    when: orders >= 1
"""
CONTENT = """\
default:
  banner: {title: "Welcome"}
rules:
  - segment: cart_idle
    priority: 10
    blocks:
      banner: {title: "Your cart is waiting"}
      cta: {text: "Complete your order", href: "/cart"}
  - segment: shoe_browser
    blocks:
      recommendation: {slot: "home-top", strategy: "top_category"}
"""


def rule_files(
    tmp_path: Path, segments: str = SEGMENTS, content: str = CONTENT, triggers: str = "triggers: {}\n"
) -> dict[str, str]:
    (tmp_path / "segments.yaml").write_text(segments)
    (tmp_path / "content.yaml").write_text(content)
    (tmp_path / "triggers.yaml").write_text(triggers)
    return {
        "NUDGE_SEGMENTS_FILE": str(tmp_path / "segments.yaml"),
        "NUDGE_CONTENT_FILE": str(tmp_path / "content.yaml"),
        "NUDGE_TRIGGERS_FILE": str(tmp_path / "triggers.yaml"),
    }


async def track(stack: DevStack, *events: dict[str, Any]) -> None:
    async with (
        aiohttp.ClientSession(auth=aiohttp.BasicAuth(stack.write_key, "")) as session,
        session.post(f"{stack.http}/v1/batch", json={"batch": [{"type": "track", **e} for e in events]}) as response,
    ):
        assert response.status == 200, await response.text()


async def decision(stack: DevStack, user: str) -> dict[str, Any]:
    status, body = await get_json(f"{stack.http}/v1/users/{user}/decision", api_key=stack.api_key)
    assert status == 200, body
    return body


async def models(stack: DevStack, url: str | None = None) -> dict[str, Any]:
    status, body = await get_json(f"{url or stack.http}/v1/models", api_key=stack.api_key)
    assert status == 200, body
    return body


async def topic_records(stack: DevStack, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in await read_topic(stack.broker.bootstrap, topic, stack.partitions)]


async def segment_records(stack: DevStack) -> list[dict[str, Any]]:
    return await topic_records(stack, "nudge.segments")


async def test_a_shopper_enters_and_leaves_segments_and_the_decision_follows(tmp_path: Path) -> None:
    async with DevStack(root=tmp_path / "stack", extra_env=rule_files(tmp_path)) as stack:
        views = [
            {"userId": "ann", "event": "Product Viewed", "properties": {"product_id": f"p{i}", "category": "shoes"}}
            for i in range(6)
        ]
        await track(stack, *views)

        async def in_segments(*names: str) -> bool:
            return (await decision(stack, "ann"))["segments"] == list(names)

        await wait_for(lambda: in_segments("shoe_browser"), timeout=10, what="ann in shoe_browser")
        shown = await decision(stack, "ann")
        assert shown["content"]["recommendation"]["segment"] == "shoe_browser"
        assert shown["content"]["banner"] == {"title": "Welcome", "segment": None}
        assert shown["intent"]["model"].startswith("p") and 0 <= shown["intent"]["score"] <= 1
        assert shown["cluster"]["id"] is not None

        added_at = time.monotonic()
        await track(stack, {"userId": "ann", "event": "Product Added", "properties": {"product_id": "p1", "price": 9}})
        # No further event: the wall clock alone puts ann in cart_idle three seconds after the add.
        await wait_for(lambda: in_segments("cart_idle", "shoe_browser"), timeout=10, what="ann in cart_idle")
        assert time.monotonic() - added_at >= 2.9
        assert (await decision(stack, "ann"))["content"]["banner"] == {
            "title": "Your cart is waiting",
            "segment": "cart_idle",
        }

        await track(stack, {"userId": "ann", "event": "Order Completed", "properties": {"revenue": 9}})
        await wait_for(lambda: in_segments("buyer", "shoe_browser"), timeout=10, what="ann out of cart_idle")

        async def all_changes_produced() -> bool:
            return len(await segment_records(stack)) == 4

        await wait_for(all_changes_produced, timeout=10, what="four records on nudge.segments")
        records = sorted(await segment_records(stack), key=lambda r: (r["timestamp"], r["type"]))
        assert [(r["type"], r["segment"], r["cause"]) for r in records] == [
            ("segment_entered", "shoe_browser", "Product Viewed"),
            ("segment_entered", "cart_idle", "clock"),
            ("segment_entered", "buyer", "Order Completed"),
            ("segment_exited", "cart_idle", "Order Completed"),
        ]
        assert {r["userId"] for r in records} == {"ann"}
        assert len({r["messageId"] for r in records}) == 4

        redis = Redis.from_url(stack.redis.url, decode_responses=True)
        try:
            key = f"{stack.app_id}:user:ann"

            async def read_model_current() -> bool:
                return (await redis.hget(key, "segments")) == '["buyer","shoe_browser"]'

            await wait_for(read_model_current, timeout=5, what="the Redis read model to follow")
            stored = await redis.hgetall(key)
            assert stored["intent_model"].startswith("p") and float(stored["intent"]) >= 0
            assert 0 < await redis.ttl(key) <= 7 * 86400
        finally:
            await redis.aclose()


async def test_scores_wait_for_their_labels_then_the_model_learns_from_them(tmp_path: Path) -> None:
    env = {**rule_files(tmp_path), "NUDGE_LABEL_HORIZON_S": "2"}
    async with DevStack(root=tmp_path / "stack", extra_env=env) as stack:
        buyers, browsers = [f"buyer-{i}" for i in range(20)], [f"browser-{i}" for i in range(30)]
        events = []
        viewed = int(time.time() * 1000) - 500  # the add 100 ms later: more than the horizon / 32 between samples
        for user in buyers + browsers:
            events += [
                {"userId": user, "event": "Product Viewed", "properties": {"product_id": "p1", "price": 5},
                 "timestamp": iso_from_ms(viewed)},
                {"userId": user, "event": "Product Added", "properties": {"product_id": "p1", "price": 5},
                 "timestamp": iso_from_ms(viewed + 100)},
            ]  # fmt: skip
        await track(stack, *events)
        await track(stack, *({"userId": u, "event": "Order Completed", "properties": {"revenue": 5}} for u in buyers))

        async def all_resolved() -> bool:
            return (await models(stack))["pooled"]["samples"] == 2 * (len(buyers) + len(browsers))

        # Buyers' moments resolve at their purchase; browsers' when the 2 s horizon passes on the wall clock.
        await wait_for(all_resolved, timeout=15, what="every scored moment to get its label")
        described = await models(stack)
        assert described["pooled"]["positives"] == 2 * len(buyers)
        learned = sum(p["intent"]["learned"] for p in described["partitions"].values())
        assert learned == 2 * (len(buyers) + len(browsers))
        assert described["pooled"]["calibration"] and described["pooled"]["log_loss"] is not None
        assert all(p["version"] == f"p{n}.v{p['intent']['learned']}" for n, p in described["partitions"].items())


async def test_an_edited_segment_file_hot_reloads_and_a_bad_one_is_refused_while_the_old_keeps_serving(
    tmp_path: Path,
) -> None:
    async with DevStack(root=tmp_path / "stack", extra_env=rule_files(tmp_path)) as stack:
        before = (await models(stack))["segments"]
        segments_file = tmp_path / "segments.yaml"
        segments_file.write_text(SEGMENTS + "  broken:\n    when: views >\n")

        async def refused() -> bool:
            return (await models(stack))["segments"]["error"] is not None

        await wait_for(refused, timeout=10, what="the bad segment file to be refused")
        status = (await models(stack))["segments"]
        assert status["error"].startswith(f"{segments_file}:11: segment 'broken':")
        assert status["version"] == before["version"]
        await track(stack, {"userId": "bo", "event": "Order Completed", "properties": {"revenue": 1}})

        async def served(user: str, expected: list[str]) -> bool:
            return (await decision(stack, user))["segments"] == expected

        await wait_for(lambda: served("bo", ["buyer"]), timeout=10, what="the old version to keep serving")

        segments_file.write_text(SEGMENTS + "  big_spender:\n    when: revenue >= 100\n")

        async def reloaded() -> bool:
            status = (await models(stack))["segments"]
            return status["error"] is None and status["version"] != before["version"]

        await wait_for(reloaded, timeout=10, what="the fixed file to be loaded")
        assert "big_spender" in (await models(stack))["segments"]["segments"]
        await track(stack, {"userId": "bo", "event": "Order Completed", "properties": {"revenue": 150}})
        await wait_for(lambda: served("bo", ["big_spender", "buyer"]), timeout=10, what="bo in the new segment")


async def test_a_worker_refuses_to_start_with_a_bad_segment_file(tmp_path: Path) -> None:
    env = rule_files(tmp_path, segments="segments:\n  x:\n    when: __import__('os')\n")
    stack = DevStack(root=tmp_path / "stack", extra_env=env)
    with pytest.raises(RuntimeError, match="worker exited with 2"):
        await stack.start()
    stack.stop()
    log = (tmp_path / "stack" / "worker-0.log").read_text()
    assert f"nudge worker: {tmp_path / 'segments.yaml'}:3: segment 'x':" in log


async def test_unknown_users_get_the_default_decision_and_strangers_none(tmp_path: Path) -> None:
    async with DevStack(root=tmp_path / "stack", extra_env=rule_files(tmp_path)) as stack:
        shown = await decision(stack, "nobody")
        assert shown["known"] is False and shown["segments"] == [] and shown["intent"] is None
        assert shown["content"] == {"banner": {"title": "Welcome", "segment": None}}
        status, _ = await get_json(f"{stack.http}/v1/users/nobody/decision", api_key="wrong")
        assert status == 401


async def test_the_shop_backend_gets_a_short_lived_websocket_token_for_a_user(stack: DevStack) -> None:
    async def post(body: bytes, key: str | None = stack.api_key) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with (
            aiohttp.ClientSession(headers=headers) as session,
            session.post(f"{stack.http}/v1/ws-token", data=body) as response,
        ):
            return response.status, await response.json(content_type=None)

    status, issued = await post(b'{"userId": "ann", "ttl_s": 60}')
    assert status == 200, issued
    assert verify_token(stack.secret.encode(), issued["token"], now=time.time()) == "ann"
    assert 55 <= issued["expires_at"] - time.time() <= 60
    with pytest.raises(TokenError, match="expired"):
        verify_token(stack.secret.encode(), issued["token"], now=time.time() + 61)
    assert (await post(b'{"userId": "ann"}', key=None))[0] == 401
    assert await post(b"not json") == (400, {"error": "the body is not JSON"})
    assert (await post(b'{"userId": "ann", "ttl_s": 86400}'))[1]["error"].startswith("ttl_s must be")
    assert (await post(b'{"userId": "a\\u0000b"}'))[1] == {"error": "userId refused: user id invalid"}


TRIGGERS = """\
cap_per_user_per_day: 5
triggers:
  cart_idle:
    when: {inactive: 3s}
    if: cart_items > 0
    message: {title: "Still thinking about {top_cart_item}?", body: "{cart_items} item(s), {cart_value} in total"}
    consent: marketing
  add_thanks:
    when: {event: Product Added}
    message: {title: "Added!"}
    consent: marketing
    holdout: 100
"""


async def messages(stack: DevStack, user: str) -> list[dict[str, Any]]:
    status, body = await get_json(f"{stack.http}/v1/users/{user}/messages", api_key=stack.api_key)
    assert status == 200, body
    return list(body["messages"])


async def test_triggers_fire_on_inactivity_respect_consent_and_holdout_and_explain_themselves(tmp_path: Path) -> None:
    # Marketing is opt-in here: bob, who never says, gets nothing.
    env = {**rule_files(tmp_path, triggers=TRIGGERS), "NUDGE_DEFAULT_CONSENT": "analytics,personalization"}
    async with DevStack(root=tmp_path / "stack", extra_env=env) as stack:
        consent = {"consent": {"categoryPreferences": {"marketing": True}}}
        add = {"event": "Product Added", "properties": {"product_id": "red-shoes", "price": 59.5}}
        await track(stack, {"userId": "ann", **add, "context": consent}, {"userId": "bob", **add})

        async def decided(user: str, count: int) -> bool:
            return len(await messages(stack, user)) == count

        await wait_for(lambda: decided("ann", 2), timeout=15, what="ann's two decisions")
        await wait_for(lambda: decided("bob", 2), timeout=15, what="bob's two decisions")
        ann = {m["trigger"]: m for m in await messages(stack, "ann")}
        assert (ann["cart_idle"]["outcome"], ann["cart_idle"]["reason"], ann["cart_idle"]["cause"]) == (
            "sent",
            None,
            "clock",
        )
        assert ann["cart_idle"]["message"] == {
            "title": "Still thinking about red-shoes?",
            "body": "1 item(s), 59.50 in total",
        }
        assert ann["cart_idle"]["values"]["cart_items"] == 1
        assert (ann["add_thanks"]["reason"], ann["add_thanks"]["arm"]) == ("holdout", "control")
        bob = {m["trigger"]: m for m in await messages(stack, "bob")}
        assert {t: (m["outcome"], m["reason"]) for t, m in bob.items()} == {
            "cart_idle": ("suppressed", "consent"),
            "add_thanks": ("suppressed", "consent"),
        }

        async def on_the_topic() -> bool:
            return len(await topic_records(stack, "nudge.messages")) == 4

        await wait_for(on_the_topic, timeout=10, what="four decision records on nudge.messages")
        records = await topic_records(stack, "nudge.messages")
        assert {r["id"] for r in records} == {m["id"] for m in [*ann.values(), *bob.values()]}
