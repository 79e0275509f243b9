"""A shopper's consent withdrawal, made in a real browser with the real SDK, reaches the worker's profile even when the
tab cannot send it at once: track events made after it while the socket is still connecting do not push it out, and
a tab the gateway refuses (one tab too many) hands it to the shopper's other tabs. Once applied, it takes the pop-ups
of that purpose off the shopper's screen, and only theirs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Route, expect

from app.devstack import DevStack
from tests.integration.browser import launch_browser
from tests.integration.conftest import get_json, wait_for
from tests.integration.test_browser import open_store
from tests.integration.test_intelligence import rule_files

pytestmark = pytest.mark.integration

# Twice this is more than the SDK keeps of track events waiting to be sent (MAX_QUEUED_TRACKS in nudge.js).
TRACKS_AFTER_EACH_CONSENT = 60
QUEUED_TRACKS_KEPT = 100
TABS_PER_USER = 5  # the gateway's max_connections_per_user: one more tab is refused with 4009
TRIGGERS = """\
cap_per_user_per_day: 50
triggers:
  help_offer:
    when: {event: Help Wanted}
    message: {title: "Need a hand?"}
    consent: marketing
  tip:
    when: {event: Tip Wanted}
    message: {title: "A tip"}
    consent: personalization
"""


async def shop_context(browser: Browser) -> BrowserContext:
    """One browser profile: its tabs share localStorage, as a shopper's tabs of one shop do."""
    return await browser.new_context()


async def profile(stack: DevStack, user: str) -> dict[str, Any]:
    status, body = await get_json(f"{stack.http}/v1/users/{user}/profile", api_key=stack.api_key)
    return body if status == 200 else {}


async def test_a_withdrawal_made_while_connecting_survives_more_track_events_than_the_sdk_queues(
    tmp_path: Any,
) -> None:
    user = "demo-withdrawing-while-connecting"
    async with DevStack(root=tmp_path / "stack", keep_files=True) as stack, launch_browser() as browser:
        context = await shop_context(browser)
        # The shop's backend is slow to hand out the token: the SDK's first connection waits for it.
        token_request: asyncio.Future[Route] = asyncio.get_running_loop().create_future()

        async def hold_the_first(route: Route) -> None:
            if token_request.done():
                await route.continue_()
            else:
                token_request.set_result(route)

        await context.route("**/store/session*", hold_the_first)
        page = await context.new_page()
        await page.goto(f"{stack.gateway.url}/store/?user={user}")

        await page.evaluate(
            """(tracks) => {
                const client = window.demoStore.client;
                client.consent({marketing: false});
                for (let n = 0; n < tracks; n++) client.track("Help Wanted", {n});
                client.consent({personalization: true});
                for (let n = 0; n < tracks; n++) client.track("Help Wanted", {n: tracks + n});
            }""",
            TRACKS_AFTER_EACH_CONSENT,
        )
        await (await asyncio.wait_for(token_request, timeout=10)).continue_()
        await expect(page.locator("#nudge-status")).to_have_attribute("data-state", "open", timeout=15_000)
        # Queued behind everything the tab kept, and folded in order: once it is in, the rest is too.
        await page.evaluate("() => window.demoStore.client.track('Cart Viewed', {})")

        async def last_event_folded() -> bool:
            return (await profile(stack, user)).get("event_counts", {}).get("Cart Viewed") == 1

        await wait_for(last_event_folded, timeout=30, what="the event tracked after the queue was sent")
        folded = await profile(stack, user)
        # The later statement replaced the earlier one in the tab without losing its withdrawal.
        assert folded["consent"] == {"marketing": False, "personalization": True}
        assert folded["event_counts"]["Help Wanted"] == QUEUED_TRACKS_KEPT


async def test_a_withdrawal_made_in_a_refused_tab_is_sent_by_the_shoppers_other_tabs(tmp_path: Any) -> None:
    user = "demo-withdrawing-sixth-tab"
    async with DevStack(root=tmp_path / "stack", keep_files=True) as stack, launch_browser() as browser:
        context = await shop_context(browser)
        for _ in range(TABS_PER_USER):
            await open_store(await context.new_page(), stack, user)

        refused = await context.new_page()
        async with refused.expect_console_message(lambda message: "closed with 4009" in message.text, timeout=15_000):
            await refused.goto(f"{stack.gateway.url}/store/?user={user}")
        await refused.evaluate("() => window.demoStore.client.consent({marketing: false})")

        async def withdrawn() -> bool:
            return (await profile(stack, user)).get("consent") == {"marketing": False}

        await wait_for(withdrawn, timeout=20, what="the withdrawal made in the refused tab")


async def test_a_withdrawal_takes_that_purposes_pop_ups_off_the_shoppers_screen_and_no_one_elses(tmp_path: Any) -> None:
    env = {**rule_files(tmp_path, triggers=TRIGGERS), "NUDGE_DEFAULT_CONSENT": "analytics,personalization,marketing"}
    withdrawing, other = "demo-withdrawing-on-screen", "demo-agreeing-on-screen"
    async with (
        DevStack(root=tmp_path / "stack", keep_files=True, extra_env=env) as stack,
        launch_browser() as browser,
    ):
        page = await (await shop_context(browser)).new_page()
        other_page = await (await shop_context(browser)).new_page()
        await open_store(page, stack, withdrawing)
        await open_store(other_page, stack, other)
        await page.evaluate("() => ['Tip Wanted', 'Help Wanted'].forEach((e) => window.demoStore.client.track(e, {}))")
        await other_page.evaluate("() => window.demoStore.client.track('Help Wanted', {})")
        offer, tip = page.locator("[data-trigger=help_offer]"), page.locator("[data-trigger=tip]")
        others_offer = other_page.locator("[data-trigger=help_offer]")
        for popup in (offer, tip, others_offer):
            await expect(popup).to_be_visible(timeout=20_000)
        await expect(offer).to_have_attribute("data-consent", "marketing")

        await page.evaluate("() => window.demoStore.client.consent({marketing: false})")

        await expect(offer).to_have_count(0, timeout=20_000)
        await expect(tip).to_be_visible()  # personalization, still allowed
        await expect(others_offer).to_be_visible()  # another shopper's marketing pop-up
