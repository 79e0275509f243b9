"""``GET /metrics`` on a running worker and gateway: the counters match what was sent, the key is required, and
``NUDGE_LOG_FORMAT=json`` makes both processes log one JSON object per line.

The traffic is made the real way: events through the collector (good, bad, and with a wrong write key), malformed
records straight into ``nudge.events``, and a browser tab whose events fire a trigger that is first suppressed (no
marketing consent) and then sent, pushed and acked.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from app.devstack import DevStack, EmbeddedRedis
from app.events import iso_from_ms
from tests.integration.conftest import wait_for
from tests.integration.test_consent import outcomes
from tests.integration.test_gateway import tab, token_for
from tests.integration.test_intelligence import rule_files
from ws.delivery import inbox_key

pytestmark = pytest.mark.integration

TRIGGERS = """\
triggers:
  help_offer:
    when: {event: Help Wanted}
    message: {title: "Need a hand?"}
    consent: marketing
"""
STAMP = "2026-11-20T10:00:00.000Z"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str, api_key: str | None) -> tuple[int, str, str]:
    """``GET {url}/metrics``: status, content type and body."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with aiohttp.ClientSession(headers=headers) as session, session.get(f"{url}/metrics") as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def samples(url: str, api_key: str) -> Samples:
    status, content_type, body = await scrape(url, api_key)
    assert status == 200, body
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(scraped: Samples, name: str, **labels: str) -> float | None:
    return scraped.get((name, frozenset(labels.items())))


async def post(stack: DevStack, path: str, body: Any, write_key: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(auth=aiohttp.BasicAuth(write_key, "")) as session,
        session.post(f"{stack.http}{path}", json=body) as response,
    ):
        return response.status, await response.json(content_type=None)


def viewed(user: str, n: int) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": "Product Viewed", "messageId": f"{user}-{n}", "timestamp": STAMP}


async def test_metrics_count_what_was_sent_and_need_the_api_key(tmp_path: Path) -> None:
    env = {
        **rule_files(tmp_path, triggers=TRIGGERS),
        "NUDGE_DEFAULT_CONSENT": "analytics,personalization",  # marketing is opt-in: the first offer is suppressed
        "NUDGE_LOG_FORMAT": "json",
    }
    async with DevStack(root=tmp_path / "stack", keep_files=True, extra_env=env) as stack:
        worker, gateway = stack.http, stack.gateway.url

        # The key is required on both, /health stays open.
        for url in (worker, gateway):
            assert (await scrape(url, None))[0] == 401
            assert (await scrape(url, "ak_not-a-key"))[0] == 401
            async with aiohttp.ClientSession() as session, session.get(f"{url}/health") as response:
                assert response.status == 200

        # Collector: 4 good and 2 bad events in a batch, one good single event, one request with a wrong key.
        batch = [viewed(f"u{i}", 1) for i in range(4)]
        batch += [{"type": "track", "event": "Product Viewed"}, {**viewed("u9", 1), "timestamp": "yesterday"}]
        status, answer = await post(stack, "/v1/batch", {"batch": batch}, stack.write_key)
        assert (status, answer.get("accepted")) == (200, 4), answer
        assert (await post(stack, "/v1/track", viewed("u5", 1), stack.write_key))[0] == 200
        assert (await post(stack, "/v1/track", viewed("u6", 1), "wk_wrong"))[0] == 401

        # Straight into the topic: two records that are not JSON, one of the wrong shape, one event without a user.
        producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap)
        await producer.start()
        try:
            for raw in (b"not json", b"{also not", b'{"batch": 5}', b'{"type": "track", "event": "Product Viewed"}'):
                await producer.send_and_wait("nudge.events", raw, partition=0)
        finally:
            await producer.stop()

        async with tab(stack.gateway, await token_for(stack, "ann")) as ann:
            await ann.track("Help Wanted")
            assert await outcomes(stack, "ann", 1) == [("help_offer", "consent")]
            await ann.socket.send(
                orjson.dumps({"type": "consent", "categoryPreferences": {"marketing": True}}).decode()
            )
            await ann.track("Help Wanted")
            [pushed] = await ann.wait_for_messages(1)
            await ann.ack(pushed["id"])
            assert [m["id"] for m in await ann.drain()] == [pushed["id"]]  # the ping's pong is not a push

            async def acked() -> bool:
                return value(await samples(gateway, stack.api_key), "nudge_pushes_acked_total") == 1

            await wait_for(acked, timeout=20, what="the ack counted by the gateway")

            async def delivered() -> bool:  # the deliverer notes its positions just after delivering a batch
                lag = deliverer_lag(await samples(gateway, stack.api_key))
                return bool(lag) and set(lag.values()) == {0}

            await wait_for(delivered, timeout=10, what="the deliverer's lag known and zero")
            at_gateway = await samples(gateway, stack.api_key)

        # 5 collector events, 4 records straight into the topic, 3 from the tab (two tracks, one consent change).
        async def all_read() -> bool:
            return value(await samples(worker, stack.api_key), "nudge_events_in_total", source="topic") == 12

        await wait_for(all_read, timeout=30, what="the worker to read every event")
        at_worker = await samples(worker, stack.api_key)

        assert value(at_worker, "nudge_events_in_total", source="http") == 5
        assert value(at_worker, "nudge_events_folded_total") == 8  # 5 collector events and ann's 3
        rejected = {
            (dict(labels)["stage"], dict(labels)["reason"]): count
            for (name, labels), count in at_worker.items()
            if name == "nudge_events_rejected_total"
        }
        assert rejected == {
            ("collector", "no_user"): 1,
            ("collector", "timestamp"): 1,
            ("collector", "write_key"): 1,
            ("ingest", "not_json"): 2,
            ("ingest", "shape"): 1,
            ("ingest", "no_user"): 1,
        }
        triggers = {labels: count for (name, labels), count in at_worker.items() if name == "nudge_triggers_total"}
        assert triggers == {
            frozenset({"trigger": "help_offer", "outcome": "suppressed", "reason": "consent"}.items()): 1,
            frozenset({"trigger": "help_offer", "outcome": "sent", "reason": "none"}.items()): 1,
        }
        lag = {labels: left for (name, labels), left in at_worker.items() if name == "nudge_consumer_lag"}
        assert lag and set(lag.values()) == {0}, lag  # everything read was processed
        records = value(at_worker, "nudge_records_total")
        assert records is not None
        for histogram in ("nudge_fold_seconds", "nudge_score_seconds"):
            observed = value(at_worker, f"{histogram}_count")
            assert observed is not None and 1 <= observed <= records, (histogram, observed, records)
            assert (value(at_worker, f"{histogram}_sum") or 0) > 0
            assert value(at_worker, f"{histogram}_bucket", le="+Inf") == observed

        assert value(at_gateway, "nudge_sockets_open") == 1
        assert value(at_gateway, "nudge_sockets_opened_total") == 1
        assert value(at_gateway, "nudge_pushes_delivered_total") == 1
        assert value(at_gateway, "nudge_pushes_acked_total") == 1
        assert value(at_gateway, "nudge_events_in_total", source="websocket") == 3
        assert value(at_gateway, "nudge_inbox_writes_total") == 1
        assert value(at_gateway, "nudge_decisions_not_pushed_total", reason="suppressed") == 1
        assert len(deliverer_lag(at_gateway)) == value(at_gateway, "nudge_deliverer_partitions")  # every one held

        async def closed() -> bool:
            return value(await samples(gateway, stack.api_key), "nudge_sockets_open") == 0

        await wait_for(closed, timeout=10, what="the closed tab to leave the open-socket gauge")

    for log in ("worker-0.log", "gateway-0.log"):
        lines = [orjson.loads(line) for line in (tmp_path / "stack" / log).read_text().splitlines() if line.strip()]
        assert lines, log
        assert all({"ts", "level", "logger", "message", "process"} <= set(line) for line in lines), log


async def test_damaged_inbox_entries_a_socket_skips_are_counted_by_reason(tmp_path: Path) -> None:
    user = "shopper-with-a-damaged-inbox"
    async with DevStack(root=tmp_path / "stack", keep_files=True, extra_env=rule_files(tmp_path)) as stack:
        redis = Redis.from_url(stack.redis.url)
        try:
            damaged = {"bad-1": "not json", "bad-2": "[]", "bad-3": '{"id": "bad-3"}'}
            await redis.hset(inbox_key(stack.app_id, user), mapping=damaged)
        finally:
            await redis.aclose()
        at_start = await samples(stack.gateway.url, stack.api_key)
        assert value(at_start, "nudge_inbox_entries_skipped_total", reason="not_json") == 0

        async with tab(stack.gateway, await token_for(stack, user)) as shopper:
            assert await shopper.drain() == []  # the pong comes after the inbox was read and sent: nothing readable

        at_gateway = await samples(stack.gateway.url, stack.api_key)
        assert value(at_gateway, "nudge_inbox_entries_skipped_total", reason="not_json") == 1
        assert value(at_gateway, "nudge_inbox_entries_skipped_total", reason="shape") == 2
    gateway_log = (tmp_path / "stack" / "gateway-0.log").read_text()
    assert gateway_log.count("skipped an unreadable inbox entry of a user") == 3
    assert user not in gateway_log


def deliverer_lag(at_gateway: Samples) -> dict[str, float]:
    """``nudge_deliverer_lag`` per partition label."""
    lag = {labels: left for (name, labels), left in at_gateway.items() if name == "nudge_deliverer_lag"}
    return {dict(labels)["partition"]: left for labels, left in lag.items()}


async def test_the_deliverers_lag_grows_while_redis_is_away_and_drains_when_it_is_back(tmp_path: Path) -> None:
    env = {**rule_files(tmp_path, triggers=TRIGGERS), "NUDGE_DEFAULT_CONSENT": "analytics,personalization,marketing"}
    redis = EmbeddedRedis(private_dir=tmp_path / "redis")  # the stack's own, to stop under it
    async with DevStack(root=tmp_path / "stack", extra_env=env, redis=redis) as stack:
        gateway = stack.gateway.url

        async def lag() -> dict[str, float]:
            return deliverer_lag(await samples(gateway, stack.api_key))

        async def caught_up() -> bool:
            known = await lag()
            return bool(known) and set(known.values()) == {0}

        await wait_for(caught_up, timeout=30, what="the deliverer's lag known and zero")
        await asyncio.to_thread(redis.stop)
        try:
            now = iso_from_ms(int(time.time() * 1000))  # not older than the inbox TTL: those are not pushed
            offers = [{**viewed(f"away-{i}", 1), "event": "Help Wanted", "timestamp": now} for i in range(3)]
            status, answer = await post(stack, "/v1/batch", {"batch": offers}, stack.write_key)
            assert (status, answer) == (200, {"success": True}), answer

            async def behind() -> bool:
                return sum((await lag()).values()) == 3  # three offers decided, none delivered

            await wait_for(behind, timeout=30, what="the three undelivered offers in the deliverer's lag")
        finally:
            await asyncio.to_thread(redis.start)
        await wait_for(caught_up, timeout=30, what="the deliverer to drain once Redis is back")
        assert value(await samples(gateway, stack.api_key), "nudge_inbox_writes_total") == 3
