"""Scale-out: two workers split the partitions, two gateways hold the sockets, and when one worker is killed the
other takes over its partitions with their profiles and armed timers, while users on either gateway keep receiving
their messages (what ``nudge cluster --workers 2 --gateways 2`` runs)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.devstack import DevStack, Node
from app.partitioning import partition_for
from tests.integration.conftest import get_json, wait_for
from tests.integration.test_gateway import Tab, decisions, tab, token_for
from tests.integration.test_intelligence import models, rule_files

pytestmark = pytest.mark.integration

TRIGGERS = """\
cap_per_user_per_day: 50
triggers:
  help_offer:
    when: {event: Help Wanted}
    message: {title: "Need a hand?"}
    consent: marketing
  cart_recovery:
    when: {inactive: 8s}
    if: cart_items > 0
    message: {title: "Still thinking about {top_cart_item}?"}
    consent: marketing
"""


async def held_partitions(stack: DevStack, node: Node) -> set[int]:
    return {int(p) for p in (await models(stack, node.url))["partitions"]}


async def gateway_health(node: Node) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{node.url}/health") as response:
        return dict(await response.json())


async def test_a_killed_worker_hands_over_profiles_and_timers_while_both_gateways_keep_delivering(
    tmp_path: Path,
) -> None:
    env = rule_files(tmp_path, triggers=TRIGGERS)
    async with DevStack(workers=2, gateways=2, root=tmp_path / "stack", keep_files=True, extra_env=env) as stack:
        survivor, victim = stack.nodes

        async def split() -> bool:
            held = [await held_partitions(stack, node) for node in stack.nodes]
            gateways = [(await gateway_health(node))["partitions"] for node in stack.gateway_nodes]
            return all(held) and not held[0] & held[1] and min(gateways) > 0

        await wait_for(split, timeout=60, what="both workers and both gateways to hold partitions")
        doomed = await held_partitions(stack, victim)
        users = [u for u in (f"shopper-{n}" for n in range(200)) if partition_for(u, stack.partitions) in doomed][:8]
        assert len(users) == 8
        async with AsyncExitStack() as sockets:
            # Half the users on each gateway.
            tabs: dict[str, Tab] = {}
            for index, user in enumerate(users):
                gateway = stack.gateway_nodes[index % 2]
                tabs[user] = await sockets.enter_async_context(tab(gateway, await token_for(stack, user)))

            for user in users:
                await tabs[user].track("Help Wanted")
            for user in users:
                [first] = await tabs[user].wait_for_messages(1, timeout=30)
                assert first["payload"]["title"] == "Need a hand?"
            # Half of them fill a cart: an inactivity timer is armed on the doomed worker's partitions.
            carted = users[::2]
            for user in carted:
                product = {"product_id": "boots", "name": "Trail boots", "price": 80}
                await tabs[user].track("Product Added", properties=product)

            async def carts_folded() -> bool:
                for user in carted:
                    status, body = await get_json(f"{survivor.url}/v1/users/{user}/profile", api_key=stack.api_key)
                    if status != 200 or not body["cart"]:
                        return False
                return True

            await wait_for(carts_folded, timeout=30, what="the carts to be folded on the doomed worker")
            victim.kill()

            async def taken_over() -> bool:
                return len(await held_partitions(stack, survivor)) == stack.partitions

            await wait_for(taken_over, timeout=60, what="the survivor to take every partition")
            # The armed timers fire on the survivor: each carted user gets the cart pop-up on their gateway.
            for user in carted:
                messages = await tabs[user].wait_for_messages(2, timeout=60)
                assert messages[1]["payload"]["title"] == "Still thinking about Trail boots?", messages
            # Every user's profile moved over intact and new events are decided by the survivor.
            for user in users:
                status, profile = await get_json(f"{survivor.url}/v1/users/{user}/profile", api_key=stack.api_key)
                assert status == 200 and profile["event_counts"]["Help Wanted"] == 1
                await tabs[user].track("Help Wanted")
            for user in users:
                expected = 3 if user in carted else 2
                messages = await tabs[user].wait_for_messages(expected, timeout=60)
                assert len({m["id"] for m in messages}) == expected  # nothing twice
                recorded = [d["id"] for d in await decisions(stack, user)]  # stack.http is the survivor
                assert sorted(recorded) == sorted(m["id"] for m in messages)
            assert [(await gateway_health(node))["connections"] for node in stack.gateway_nodes] == [4, 4]
