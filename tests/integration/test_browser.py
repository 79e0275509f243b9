"""The whole loop in a real browser: the demo store in Chromium, a filled cart left alone, and a pop-up pushed over the
websocket that names the item -- while a shopper in the holdout group gets nothing and both are counted."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from playwright.async_api import Page, expect
from redis.asyncio import Redis

from app.devstack import DevStack
from models.triggers import in_holdout
from tests.integration.browser import artifact_path, launch_browser
from tests.integration.conftest import get_json, wait_for
from tests.integration.test_gateway import decisions
from tests.integration.test_intelligence import rule_files
from ws.delivery import inbox

pytestmark = pytest.mark.integration

HOLDOUT_PERCENT = 50
TRIGGERS = f"""\
cap_per_user_per_day: 5
triggers:
  cart_recovery:
    when: {{inactive: 2s}}
    if: cart_items > 0
    message:
      title: Still thinking about {{top_cart_item}}?
      body: Your cart holds {{cart_items}} items worth {{cart_value}}.
    cooldown: 1h
    consent: marketing
    holdout: {HOLDOUT_PERCENT}
"""


def shopper(in_control_group: bool) -> str:
    return next(
        user
        for n in range(1000)
        if in_holdout(user := f"demo-shopper-{n}", "cart_recovery", HOLDOUT_PERCENT) == in_control_group
    )


async def open_store(page: Page, stack: DevStack, user: str) -> None:
    await page.goto(f"{stack.gateway.url}/store/?user={user}")
    await expect(page.locator("#nudge-status")).to_have_attribute("data-state", "open", timeout=15_000)
    await expect(page.locator("#shopper-id")).to_have_text(user)


async def test_a_shopper_who_leaves_a_filled_cart_gets_a_pop_up_naming_the_item(tmp_path: Path) -> None:
    env = rule_files(tmp_path, triggers=TRIGGERS)
    treated, control = shopper(in_control_group=False), shopper(in_control_group=True)
    async with (
        DevStack(root=tmp_path / "stack", keep_files=True, extra_env=env) as stack,
        launch_browser() as browser,
    ):
        control_page = await (await browser.new_context(viewport={"width": 1280, "height": 800})).new_page()
        page = await (await browser.new_context(viewport={"width": 1280, "height": 800})).new_page()
        await open_store(control_page, stack, control)
        await open_store(page, stack, treated)

        await control_page.get_by_role("button", name="Add Trail running shoes to cart").click()
        await page.get_by_role("button", name="Add Trail running shoes to cart").click()
        await expect(page.locator("#cart-items")).to_contain_text("Trail running shoes")

        # Nothing more happens in the tab: the worker's deadline fires 2 s later and the gateway pushes.
        popup = page.get_by_role("dialog")
        await expect(popup).to_be_visible(timeout=20_000)
        await expect(popup.locator(".nudge-popup-title")).to_have_text("Still thinking about Trail running shoes?")
        await expect(popup.locator(".nudge-popup-body")).to_have_text("Your cart holds 1 items worth 89.")
        await page.screenshot(path=artifact_path("store-cart-recovery.png"))

        [sent] = await decisions(stack, treated)
        assert (sent["trigger"], sent["outcome"], sent["arm"]) == ("cart_recovery", "sent", "treatment")
        assert await popup.get_attribute("data-message-id") == sent["id"]

        # Seen and acked: dismissing it leaves nothing in the user's inbox to show again.
        await popup.get_by_role("button", name="Dismiss").click()
        await expect(page.get_by_role("dialog")).to_have_count(0)
        redis = Redis.from_url(stack.redis.url)
        try:

            async def inbox_empty() -> bool:
                return await inbox(redis, stack.app_id, treated) == []

            await wait_for(inbox_empty, timeout=10, what="the acked message to leave the inbox")
        finally:
            await redis.aclose()

        # The control shopper's trigger came due at the same moment: recorded, counted, never shown.
        async def control_decided() -> bool:
            return len(await decisions(stack, control)) == 1

        await wait_for(control_decided, timeout=10, what="the control shopper's decision")
        [held] = await decisions(stack, control)
        assert (held["outcome"], held["reason"], held["arm"]) == ("suppressed", "holdout", "control")
        assert held["message"]["title"] == "Still thinking about Trail running shoes?"  # what would have been sent
        await control_page.reload()
        await expect(control_page.locator("#nudge-status")).to_have_attribute("data-state", "open", timeout=15_000)
        await expect(control_page.get_by_role("dialog")).to_have_count(0)
        await control_page.screenshot(path=artifact_path("store-holdout.png"))


async def test_events_a_killed_gateway_never_stored_are_sent_again_by_the_sdk_and_counted_once(tmp_path: Path) -> None:
    user = "demo-resending-shopper"
    async with DevStack(root=tmp_path / "stack", keep_files=True) as stack, launch_browser() as browser:
        page = await (await browser.new_context()).new_page()
        await open_store(page, stack, user)

        async def counts() -> dict[str, int]:
            status, body = await get_json(f"{stack.http}/v1/users/{user}/profile", api_key=stack.api_key)
            return dict(body["event_counts"]) if status == 200 else {}

        async def landed() -> bool:
            return (await counts()).get("Product List Viewed") == 1

        await wait_for(landed, timeout=30, what="the store's first event")
        # The gateway freezes: the browser's frames reach its socket buffer and go no further. Then it is killed.
        gateway = stack.gateway
        assert gateway.process is not None
        os.kill(gateway.process.pid, signal.SIGSTOP)
        await page.evaluate("() => [1, 2, 3, 4, 5].forEach((n) => window.demoStore.client.track('Help Wanted', {n}))")
        gateway.kill()
        gateway.start()
        await gateway.wait_ready()
        await expect(page.locator("#nudge-status")).to_have_attribute("data-state", "open", timeout=30_000)

        async def resent() -> bool:
            return (await counts()).get("Help Wanted") == 5

        await wait_for(resent, timeout=30, what="the five events, sent again after the reconnect")
        # A later event is folded after any second copy would have been: still five, none counted twice.
        await page.evaluate("() => window.demoStore.client.track('Cart Viewed', {})")

        async def later() -> bool:
            return (await counts()).get("Cart Viewed") == 1

        await wait_for(later, timeout=30, what="the later event")
        assert (await counts())["Help Wanted"] == 5
