"""Two workers split the partitions; either one answers for any user by routing to the owner."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.devstack import DevStack
from app.simulate import simulate_events
from tables.profile_view import profile_view
from tests.integration.conftest import expected_profiles, fetch_profiles, produce_batched, stable, stats, wait_for

pytestmark = pytest.mark.integration


async def test_any_worker_answers_for_any_user(tmp_path: Any) -> None:
    async with DevStack(workers=2, root=tmp_path / "stack") as stack:
        first, second = stack.nodes

        async def both_own_partitions() -> bool:
            held = [set((await stats(stack, node.url))["offsets"]) for node in (first, second)]
            return all(held) and not held[0] & held[1]

        events = [e for e in simulate_events(users=200, events=3_000, seed=13) if isinstance(e, dict)]
        await produce_batched(stack.broker.bootstrap, events, partitions=stack.partitions)

        async def all_folded() -> bool:
            return sum([(await stats(stack, node.url))["folded"] for node in (first, second)]) >= len(events)

        await wait_for(all_folded, timeout=60, what="every event folded by one of the two workers")
        await wait_for(both_own_partitions, timeout=10, what="each worker to own a disjoint share of partitions")

        now_ms = int(time.time() * 1000)
        wanted = {u: stable(profile_view(p, now_ms=now_ms)) for u, p in expected_profiles(events).items()}
        for node in (first, second):
            answered = await fetch_profiles(stack, wanted, base_url=node.url)
            assert {u: stable(v) for u, v in answered.items()} == wanted, f"worker {node.url} answered differently"
