"""Models are state: when a worker dies, the survivor continues its partitions' models where they stopped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.devstack import DevStack
from app.events import iso_from_ms
from app.partitioning import partition_for
from tests.integration.conftest import get_json, wait_for

pytestmark = pytest.mark.integration


async def models(stack: DevStack, url: str) -> dict[str, Any]:
    status, body = await get_json(f"{url}/v1/models", api_key=stack.api_key)
    assert status == 200, body
    return body


async def track(stack: DevStack, url: str, events: list[dict[str, Any]]) -> None:
    async with aiohttp.ClientSession(auth=aiohttp.BasicAuth(stack.write_key, "")) as session:
        for start in range(0, len(events), 200):
            batch = [{"type": "track", **e} for e in events[start : start + 200]]
            async with session.post(f"{url}/v1/batch", json={"batch": batch}) as response:
                assert response.status == 200, await response.text()


def shopping(users: list[str]) -> list[dict[str, Any]]:
    """Two scored moments per user; every third user buys (positives), the others' labels expire (negatives).

    The two are stamped 100 ms apart, more than the 1 s horizon / 32 between samples: both are learned from.
    """
    events = []
    viewed = int(time.time() * 1000) - 500
    for index, user in enumerate(users):
        product = {"product_id": f"p{index % 7}", "price": 5}
        events += [
            {"userId": user, "event": "Product Viewed", "properties": product, "timestamp": iso_from_ms(viewed)},
            {"userId": user, "event": "Product Added", "properties": product, "timestamp": iso_from_ms(viewed + 100)},
        ]
        if index % 3 == 0:
            events.append({"userId": user, "event": "Order Completed", "properties": {"revenue": 5}})
    return events


async def test_a_killed_workers_partitions_continue_with_their_learned_models(tmp_path: Path) -> None:
    env = {"NUDGE_LABEL_HORIZON_S": "1"}
    async with DevStack(workers=2, root=tmp_path / "stack", extra_env=env) as stack:
        survivor, victim = stack.nodes

        async def split() -> bool:
            held = [set((await models(stack, node.url))["partitions"]) for node in stack.nodes]
            return all(held) and not held[0] & held[1] and len(held[0] | held[1]) == stack.partitions

        await wait_for(split, timeout=30, what="both workers to hold partitions")
        users = [f"shopper-{i}" for i in range(300)]
        await track(stack, survivor.url, shopping(users))

        async def learned_and_snapshotted() -> bool:
            views = [(await models(stack, node.url))["partitions"] for node in stack.nodes]
            parts = [p for view in views for p in view.values()]
            learned = sum(p["intent"]["learned"] for p in parts)
            return learned == 2 * len(users) and all(p["snapshot_learned"] == p["learned"] for p in parts)

        await wait_for(learned_and_snapshotted, timeout=30, what="every label learned and snapshotted")
        before = (await models(stack, victim.url))["partitions"]
        assert before and all(p["intent"]["learned"] > 0 for p in before.values())

        victim.kill()

        async def taken_over() -> bool:
            return len((await models(stack, survivor.url))["partitions"]) == stack.partitions

        await wait_for(taken_over, timeout=60, what="the survivor to take every partition")
        after = (await models(stack, survivor.url))["partitions"]
        for partition, held in before.items():
            assert after[partition]["version"] == held["version"], f"partition {partition} lost its model"
            assert after[partition]["intent"]["samples"] == held["intent"]["samples"]
            assert after[partition]["clusters"] == held["clusters"]

        # ... and keeps learning from there.
        moved = [u for u in (f"late-{i}" for i in range(200)) if str(partition_for(u, stack.partitions)) in before]
        await track(stack, survivor.url, shopping(moved))

        async def learned_on() -> bool:
            now = (await models(stack, survivor.url))["partitions"]
            grown = sum(now[p]["intent"]["learned"] - before[p]["intent"]["learned"] for p in before)
            return grown == 2 * len(moved)

        await wait_for(learned_on, timeout=30, what="the taken-over models to learn the new labels")
