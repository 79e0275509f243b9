"""The collector with real clients: Segment's own Python SDK, and raw HTTP for the error cases."""

from __future__ import annotations

import base64
import gzip
import secrets
import time
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from segment.analytics import Client

from app.devstack import DevStack
from app.events import iso_from_ms, parse_timestamp
from app.sending import send_http
from app.simulate import simulate_events
from tables.profile_view import profile_view
from tests.integration.conftest import expected_profiles, fetch_profiles, read_topic, stable, stats, wait_for

pytestmark = pytest.mark.integration


async def test_segment_sdk_events_give_exact_profiles(stack: DevStack) -> None:
    """10,000 events sent by segment-analytics-python end up as exactly the profiles the pure fold predicts."""
    events = [e for e in simulate_events(users=800, events=10_000, seed=3) if isinstance(e, dict)]
    assert len(events) == 10_000
    failures: list[Any] = []
    client = Client(
        write_key=stack.write_key,
        host=stack.http,
        on_error=lambda error, batch: failures.append(error),
        upload_size=250,
        max_retries=0,
        sync_mode=False,
    )
    for event in events:
        common = {
            "user_id": event.get("userId"),
            "anonymous_id": event.get("anonymousId"),
            "context": event["context"],
            "timestamp": _datetime(event["timestamp"]),
            "message_id": event["messageId"],
        }
        if event["type"] == "page":
            client.page(name=event.get("name"), properties=event.get("properties"), **common)
        else:
            client.track(event=event["event"], properties=event["properties"], **common)
    client.flush()
    client.join()
    assert failures == []

    async def all_folded() -> bool:
        return (await stats(stack))["folded"] >= len(events)

    await wait_for(all_folded, timeout=60, what="all 10,000 events folded")
    # The SDK sends each batch with its sentAt, and the collector corrects every timestamp by the client's clock
    # skew: here by the few milliseconds between sending and receipt. The oracle folds the instants stored.
    records = await read_topic(stack.broker.bootstrap, "nudge.events", stack.partitions)
    stored = {e["messageId"]: e for r in records for e in orjson.loads(r.value or b"{}").get("batch", [])}
    for event in events:
        kept = stored[event["messageId"]]
        sent_ms = parse_timestamp(event["timestamp"], field="timestamp")
        assert parse_timestamp(kept["originalTimestamp"], field="originalTimestamp") == sent_ms
        assert abs(parse_timestamp(kept["timestamp"], field="timestamp") - sent_ms) < 60_000
    expected = expected_profiles([{**e, "timestamp": stored[e["messageId"]]["timestamp"]} for e in events])
    actual = await fetch_profiles(stack, expected)
    now_ms = int(time.time() * 1000)
    mismatched = [
        user
        for user, profile in expected.items()
        if actual[user] is None or stable(actual[user]) != stable(profile_view(profile, now_ms=now_ms))
    ]
    assert mismatched == [], f"{len(mismatched)} profiles differ, e.g. {mismatched[:3]}"
    totals = await stats(stack)
    assert totals["folded"] == 10_000
    assert totals["rejected"] == 0


async def test_http_edge_answers_like_segment(stack: DevStack) -> None:
    url = stack.http
    good = {"userId": "edge-user", "event": "Product Viewed", "properties": {"product_id": "p1", "category": "c"}}
    typed = {**good, "type": "track"}
    async with aiohttp.ClientSession() as session:

        async def post(path: str, body: Any, *, key: str | None = stack.write_key, **kw: Any) -> tuple[int, Any]:
            headers = dict(kw.pop("headers", {}))
            if key is not None:
                headers["Authorization"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
            data = body if isinstance(body, bytes) else orjson.dumps(body)
            async with session.post(url + path, data=data, headers=headers) as response:
                return response.status, await response.json(content_type=None)

        assert await post("/v1/track", good) == (200, {"success": True})
        assert (await post("/v1/track", good, key=None))[0] == 401
        assert (await post("/v1/track", good, key="wrong"))[0] == 401
        status, body = await post("/v1/track", b"{not json")
        assert status == 400 and "not valid JSON" in body["message"]
        status, body = await post("/v1/track", {**good, "userId": 42})
        assert status == 400 and body["message"] == "userId must be a string, not a number"
        status, body = await post("/v1/track", {"event": "X"})
        assert status == 400 and body["message"] == "userId or anonymousId is required"
        future = iso_from_ms(int(time.time() * 1000) + 25 * 3600 * 1000)
        status, body = await post("/v1/track", {**good, "timestamp": future})
        assert status == 400 and "24 h in the future" in body["message"]
        status, body = await post("/v1/track", {**good, "properties": {"blob": "x" * 33_000}})
        assert status == 413
        status, body = await post(
            "/v1/batch", {"batch": [typed] * 20 + [{**typed, "properties": {"b": "x" * 30_000}}] * 20}
        )
        assert status == 413
        status, body = await post(
            "/v1/batch", {"batch": [typed, {"type": "track", "event": "no user"}, {**good, "type": "nope"}]}
        )
        assert status == 200
        assert body["accepted"] == 1
        assert [r["index"] for r in body["rejected"]] == [1, 2]
        compressed = gzip.compress(orjson.dumps({"batch": [typed]}))
        status, body = await post("/v1/batch", compressed, headers={"Content-Encoding": "gzip"})
        assert (status, body) == (200, {"success": True})
        status, body = await post("/v1/identify", {"userId": "edge-user", "traits": {"plan": "pro"}})
        assert status == 200

    async def counted() -> bool:
        view = (await fetch_profiles(stack, ["edge-user"]))["edge-user"]
        return view is not None and sum(view["event_counts"].values()) >= 4

    # Accepted: the first track, one event of the mixed batch, the gzip batch and the identify.
    await wait_for(counted, timeout=30, what="the four accepted events")
    view = (await fetch_profiles(stack, ["edge-user"]))["edge-user"]
    assert view["event_counts"] == {"Product Viewed": 3, "Identify": 1}  # nothing rejected leaked in


async def test_read_api_needs_a_key_and_answers_404_for_strangers(stack: DevStack) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{stack.http}/v1/users/nobody/profile") as response:
            assert response.status == 401
        headers = {"Authorization": "Bearer wrong"}
        async with session.get(f"{stack.http}/v1/users/nobody/profile", headers=headers) as response:
            assert response.status == 401
        headers = {"Authorization": f"Bearer {stack.api_key}"}
        async with session.get(f"{stack.http}/v1/users/nobody/profile", headers=headers) as response:
            assert response.status == 404
            assert "nobody" in (await response.json())["error"]


async def test_a_flooding_write_key_gets_429_while_another_keys_events_go_through(tmp_path: Any) -> None:
    """Per write key: the flood is refused whole with ``Retry-After`` and nothing of it produced; the other key's
    event reaches its user's profile, and the refusals are counted as ``rate_limited``."""
    flood, calm = "wk_flood_" + secrets.token_hex(4), "wk_calm_" + secrets.token_hex(4)
    env = {"NUDGE_WRITE_KEYS": f"{flood},{calm}", "NUDGE_COLLECTOR_RATE": "1", "NUDGE_COLLECTOR_BURST": "5"}

    def batch(user: str, tag: str, size: int) -> dict[str, Any]:
        event = {"type": "track", "userId": user, "event": "Product Viewed"}
        return {"batch": [{**event, "messageId": f"{tag}-{n}"} for n in range(size)]}

    async with (
        DevStack(root=tmp_path / "stack", keep_files=True, write_key=flood, extra_env=env) as stack,
        aiohttp.ClientSession() as session,
    ):

        async def post(path: str, body: Any, key: str) -> tuple[int, Any, str | None]:
            auth = aiohttp.BasicAuth(key, "")
            async with session.post(f"{stack.http}{path}", json=body, auth=auth) as response:
                return response.status, await response.json(), response.headers.get("Retry-After")

        assert await post("/v1/batch", batch("flood-user", "admitted", 5), flood) == (200, {"success": True}, None)
        # The burst is spent: 5 more need 5 s of refill at 1 event/s, far more than the next request takes.
        status, body, retry_after = await post("/v1/batch", batch("flood-user", "refused", 5), flood)
        assert status == 429, body
        assert body["success"] is False and "rate limit of 1 events/s (burst 5)" in body["message"]
        assert retry_after is not None and 1 <= int(retry_after) <= 5
        status, body, retry_after = await post("/v1/batch", batch("flood-user", "too-big", 6), flood)
        assert status == 413 and "can never pass" in body["message"] and retry_after is None
        event = {"userId": "calm-user", "event": "Product Viewed", "messageId": "calm-1"}
        assert await post("/v1/track", event, calm) == (200, {"success": True}, None)

        async def calm_profiled() -> bool:
            return (await fetch_profiles(stack, ["calm-user"]))["calm-user"] is not None

        await wait_for(calm_profiled, timeout=30, what="calm-user's profile")
        # The collector answers once the broker has the events: a refused batch would be on the topic by now.
        records = await read_topic(stack.broker.bootstrap, "nudge.events", stack.partitions)
        stored = {e["messageId"] for r in records for e in orjson.loads(r.value or b"{}").get("batch", [])}
        assert stored == {*(f"admitted-{n}" for n in range(5)), "calm-1"}
        headers = {"Authorization": f"Bearer {stack.api_key}"}
        async with session.get(f"{stack.http}/metrics", headers=headers) as response:
            exposition = await response.text()
        refusals = [
            sample.value
            for family in text_string_to_metric_families(exposition)
            for sample in family.samples
            if sample.name == "nudge_events_rejected_total"
            and sample.labels == {"stage": "collector", "reason": "rate_limited"}
        ]
        assert refusals == [2.0]  # each request refused whole counts once


async def test_the_sender_waits_out_a_429_and_sends_every_event_once(tmp_path: Any) -> None:
    """``nudge send`` / ``replay`` against a collector over its rate: each refused batch is sent again after its
    ``Retry-After``, so every event arrives, and none twice (a refused request produced nothing)."""
    env = {"NUDGE_COLLECTOR_RATE": "50", "NUDGE_COLLECTOR_BURST": "50"}
    events = [
        {"type": "track", "userId": f"u{n % 7}", "event": "Product Viewed", "messageId": f"paced-{n}"}
        for n in range(150)
    ]
    async with DevStack(root=tmp_path / "stack", keep_files=True, extra_env=env) as stack:
        accepted, rejected = await send_http(
            events, url=stack.http, write_key=stack.write_key, batch_size=50, concurrency=1
        )
        assert (accepted, rejected) == (150, 0)
        records = await read_topic(stack.broker.bootstrap, "nudge.events", stack.partitions)
        stored = [e["messageId"] for r in records for e in orjson.loads(r.value or b"{}").get("batch", [])]
        assert sorted(stored) == sorted(e["messageId"] for e in events)


def _datetime(stamp: str) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(parse_timestamp(stamp, field="timestamp") / 1000, UTC)


async def test_no_table_is_readable_without_a_key(stack: DevStack) -> None:
    """Faust serves every table at ``/table/<name>/<key>/`` unless told not to: a profile must not leak there."""
    auth = base64.b64encode(f"{stack.write_key}:".encode()).decode()
    event = {"type": "track", "userId": "table-peek", "event": "Product Added", "properties": {"product_id": "p-9"}}
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Basic {auth}"}
        async with session.post(f"{stack.http}/v1/track", json=event, headers=headers) as response:
            assert response.status == 200

        async def profiled() -> bool:
            return (await fetch_profiles(stack, ["table-peek"]))["table-peek"] is not None

        await wait_for(profiled, timeout=30, what="table-peek's profile")
        for table in ("profiles", "insights", "messages", "aliases"):
            async with session.get(f"{stack.http}/table/{table}/table-peek/") as response:
                body = await response.text()
                assert response.status == 404, (table, response.status, body)
                assert "p-9" not in body
        for path in ("/table/", "/router/"):
            async with session.get(f"{stack.http}{path}") as response:
                assert response.status == 404, path


async def test_batch_write_keys_are_never_stored_and_sent_at_corrects_the_client_clock(stack: DevStack) -> None:
    now_ms = int(time.time() * 1000)
    ahead_ms = now_ms + 3 * 3600 * 1000  # a client clock 3 h fast, stamping the event 10 s before sending it
    item = {"type": "track", "userId": "skewed", "event": "Product Viewed", "writeKey": stack.write_key}
    body = {
        "writeKey": stack.write_key,  # the only credential: the body's, as Segment allows
        "sentAt": iso_from_ms(ahead_ms),
        "batch": [{**item, "timestamp": iso_from_ms(ahead_ms - 10_000)}],
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.http}/v1/batch", data=orjson.dumps(body)) as response,
    ):
        assert (response.status, await response.json()) == (200, {"success": True})

    stored: list[dict[str, Any]] = []

    async def produced() -> bool:
        records = await read_topic(stack.broker.bootstrap, "nudge.events", stack.partitions)
        assert not any(stack.write_key.encode() in (record.value or b"") for record in records)
        stored[:] = [e for r in records for e in orjson.loads(r.value or b"{}").get("batch", [])]
        return bool(stored)

    await wait_for(produced, timeout=10, what="the batch on nudge.events")
    (event,) = stored
    assert "writeKey" not in event
    assert event["originalTimestamp"] == iso_from_ms(ahead_ms - 10_000)
    skew_ms = parse_timestamp(event["receivedAt"], field="receivedAt") - parse_timestamp(event["timestamp"], field="t")
    assert skew_ms == 10_000  # receivedAt - (sentAt - timestamp): the 10 s before sending, without the 3 h
