"""``make demo``: the embedded stack, simulated shoppers over the Segment API, the demo store for you to shop in,
and a live summary until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import aiohttp

from app.devstack import REPO_ROOT, DevStack
from app.events import iso_from_ms
from app.sending import Progress, send_http
from app.simulate import simulate_events
from models.triggers import in_holdout

SUMMARY_EVERY_S = 2.0
#: Labels resolve after 30 seconds instead of 30 minutes, so the model's rolling quality shows while you watch.
DEMO_HORIZON_S = 30
#: triggers.yaml with seconds-scale timers: a cart left alone for 20 seconds gets its pop-up.
DEMO_TRIGGERS = REPO_ROOT / "triggers.demo.yaml"


async def run(*, rate: float, users: int, bad_share: float) -> None:
    demo_env = {
        "NUDGE_LABEL_HORIZON_S": str(DEMO_HORIZON_S),
        "NUDGE_TRIGGERS_FILE": str(DEMO_TRIGGERS),
    }
    async with DevStack(workers=1, extra_env=demo_env) as stack:
        sample_user = "u1"
        print(_banner(stack, sample_user), flush=True)
        sent = Progress("sent", stream=None)
        sender = asyncio.create_task(
            send_http(
                _live(simulate_events(users=users, events=10_000_000, seed=1, bad_share=bad_share)),
                url=stack.http,
                write_key=stack.write_key,
                rate=rate,
                progress=sent,
            )
        )
        try:
            await _summarise(stack, sender, sent)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            print("\nstopping: worker, gateway, broker and Redis are shut down; nothing is left running.", flush=True)


def _live(events: Iterator[dict[str, Any] | bytes]) -> Iterator[dict[str, Any] | bytes]:
    """Stamp simulated events with the wall clock as they are sent: the demo is live."""
    for event in events:
        if isinstance(event, dict):
            event = {**event, "timestamp": iso_from_ms(int(time.time() * 1000))}
        yield event


async def _summarise(stack: DevStack, sender: asyncio.Task[Any], sent: Progress) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    previous: tuple[float, int] | None = None
    async with aiohttp.ClientSession(headers=headers) as session:
        while not sender.done():
            await asyncio.sleep(SUMMARY_EVERY_S)
            async with session.get(f"{stack.http}/v1/stats") as response:
                stats = await response.json()
            async with session.get(f"{stack.http}/v1/models") as response:
                models = await response.json()
            async with session.get(f"{stack.gateway.url}/health") as response:
                gateway = await response.json()
            now = time.monotonic()
            if previous is not None:
                rate = (stats["events"] - previous[1]) / (now - previous[0])
                print(
                    f"{time.strftime('%H:%M:%S')}  {rate:6,.0f} events/s  {stats['folded']:9,} folded  "
                    f"{stats['profiles']:6,} profiles  {sent.rejected:5,} refused by the collector (400)  "
                    f"{stats['rejected']:4,} dead-lettered",
                    flush=True,
                )
                pooled = models["pooled"]
                quality = (
                    f"rolling AUC {pooled['auc']} against the has-cart baseline's {pooled['baseline_auc']}"
                    if pooled["auc"] is not None
                    else f"AUC once the first labels expire ({DEMO_HORIZON_S} s without a purchase)"
                )
                decided = models["triggers"]["decisions"]
                outcomes = ", ".join(f"{count:,} {outcome}" for outcome, count in sorted(decided.items())) or "none"
                print(
                    f"          {models['segments']['changes_emitted']:7,} segment changes   intent model: "
                    f"{pooled['samples']:,} labels learned ({pooled['positives']:,} purchases), {quality}\n"
                    f"          trigger decisions: {outcomes}\n"
                    f"          gateway: {gateway['connections']} browser sockets, {gateway['pushed']:,} pop-ups "
                    f"pushed, {gateway['acked']:,} acked, {gateway['delivered']:,} messages into inboxes",
                    flush=True,
                )
            previous = (now, stats["events"])
    sender.result()


def holdout_shopper(trigger: str = "cart_recovery", percent: float = 10) -> str:
    """A demo store shopper id in ``trigger``'s control group: they get nothing, counted as "would have sent"."""
    return next(f"demo-holdout-{n}" for n in range(10_000) if in_holdout(f"demo-holdout-{n}", trigger, percent))


def _banner(stack: DevStack, user: str) -> str:
    auth = f"-H 'Authorization: Bearer {stack.api_key}'"
    store = stack.ready_line()["store"]
    return "\n".join(
        [
            "Nudge demo: simulated shoppers -> Segment API -> Kafka (Tansu) -> Faust worker -> live profiles, "
            "intent scores, segments and decisions -> websocket gateway -> pop-ups in your browser",
            f"  store      {store}   <- open it, add something to the cart, wait 20 s: a pop-up names it",
            f"  holdout    {store}?user={holdout_shopper()}   (in the 10% control group: no pop-up, "
            "recorded as suppressed: holdout)",
            f"  collector  {stack.http}/v1/batch   (write key {stack.write_key})",
            f"  profile    curl -s {auth} {stack.http}/v1/users/{user}/profile",
            f"  decision   curl -s {auth} {stack.http}/v1/users/{user}/decision",
            f"  messages   curl -s {auth} {stack.http}/v1/users/{user}/messages",
            f"  models     curl -s {auth} {stack.http}/v1/models",
            f"  read model redis-cli -u {stack.redis.url} hgetall {stack.app_id}:user:{user}",
            f"  stats      curl -s {auth} {stack.http}/v1/stats",
            f"  send one   curl -s -u {stack.write_key}: {stack.http}/v1/track "
            """-d '{"userId":"me","event":"Product Added","properties":{"product_id":"p1","price":9.5}}'""",
            "Ctrl-C stops everything.",
            "",
        ]
    )
