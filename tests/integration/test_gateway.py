"""The websocket gateway on a running stack: token checks, isolation between users, limits, and delivery that
survives reconnects and reaches whichever gateway holds the socket.

Messages are made the real way: a track frame over the socket goes to ``nudge.events``, the worker fires a trigger,
the decision goes to ``nudge.messages``, a gateway's deliverer writes the inbox and publishes to the node.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.batching import PartitionBatcher
from app.devstack import DevStack, EmbeddedBroker, EmbeddedRedis, Node, create_topic, free_port
from app.settings import Settings
from tests.integration.conftest import get_json, wait_for
from tests.integration.test_intelligence import rule_files
from ws import delivery
from ws.server import MAX_STORES_IN_FLIGHT, Gateway
from ws.tokens import issue_token

pytestmark = pytest.mark.integration

TRIGGERS = """\
cap_per_user_per_day: 50
triggers:
  help_offer:
    when: {event: Help Wanted}
    message: {title: "Need a hand?", body: "We are here for you"}
    consent: marketing
"""


def gateway_env(tmp_path: Path) -> dict[str, str]:
    return rule_files(tmp_path, triggers=TRIGGERS)  # the dev stack's shoppers consent to every purpose


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[DevStack]:
    async with DevStack(root=tmp_path / "stack", keep_files=True, extra_env=gateway_env(tmp_path)) as running:
        yield running


async def token_for(stack: DevStack, user: str) -> str:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.api_key}"}) as session,
        session.post(f"{stack.http}/v1/ws-token", json={"userId": user}) as response,
    ):
        assert response.status == 200, await response.text()
        return str((await response.json())["token"])


class Tab:
    """A browser tab's socket as the SDK uses it: collects pushed messages, acks them on request."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.messages: list[dict[str, Any]] = []
        #: messageIds of the events the gateway said it stored.
        self.stored: list[str] = []

    async def track(self, event: str, **fields: Any) -> None:
        await self.socket.send(orjson.dumps({"type": "track", "event": event, **fields}).decode())

    async def drain(self) -> list[dict[str, Any]]:
        """Everything pushed so far: ping, and collect messages until the pong (frames arrive in order)."""
        await self.socket.send('{"type":"ping"}')
        while True:
            frame = orjson.loads(await asyncio.wait_for(self.socket.recv(), timeout=10))
            if frame["type"] == "pong":
                return self.messages
            self._note(frame)

    def _note(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "stored":
            self.stored.append(frame["id"])
        else:
            self.messages.append(frame)

    async def wait_for_messages(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(self.messages)} of {count} messages after {timeout} s")
            try:
                frame = orjson.loads(await asyncio.wait_for(self.socket.recv(), timeout=left))
            except TimeoutError:
                continue
            if frame["type"] != "pong":
                self._note(frame)
        return self.messages

    async def ack(self, message_id: str) -> None:
        await self.socket.send(orjson.dumps({"type": "ack", "id": message_id}).decode())


@asynccontextmanager
async def tab(gateway: Node | Gateway, token: str) -> AsyncIterator[Tab]:
    async with connect(f"ws://127.0.0.1:{gateway.port}/v1/ws?token={quote(token)}") as socket:
        yield Tab(socket)


async def decisions(stack: DevStack, user: str) -> list[dict[str, Any]]:
    status, body = await get_json(f"{stack.http}/v1/users/{user}/messages", api_key=stack.api_key)
    assert status == 200, body
    return list(body["messages"])


async def test_forged_expired_and_missing_tokens_are_refused_before_the_upgrade(stack: DevStack) -> None:
    url = f"ws://127.0.0.1:{stack.gateway.port}/v1/ws"
    forged = issue_token(b"not-the-deployment-secret", "ann", expires_at=int(time.time()) + 60)
    expired = issue_token(stack.secret.encode(), "ann", expires_at=int(time.time()) - 1)
    for query, reason in (
        (f"?token={quote(forged)}", "token refused: bad signature"),
        (f"?token={quote(expired)}", "token refused: expired"),
        ("", "token missing"),
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url + query):
                pass
        assert refused.value.response.status_code == 401
        assert orjson.loads(refused.value.response.body)["error"].startswith(reason)
    # A page from another site cannot open a socket, even with a good token.
    good = await token_for(stack, "ann")
    with pytest.raises(InvalidStatus) as foreign:
        async with connect(f"{url}?token={quote(good)}", origin="https://evil.example"):  # type: ignore[arg-type]
            pass
    assert foreign.value.response.status_code == 403


async def test_a_user_receives_only_their_own_messages_and_cannot_speak_for_another(stack: DevStack) -> None:
    async with (
        tab(stack.gateway, await token_for(stack, "ann")) as ann,
        tab(stack.gateway, await token_for(stack, "bob")) as bob,
    ):
        # ann claims to be bob: the gateway stamps her own id on the event.
        await ann.track("Help Wanted", userId="bob", anonymousId="bob", context={"userId": "bob"}, messageId="ann-1")
        [pushed] = await ann.wait_for_messages(1)
        assert pushed["payload"]["title"] == "Need a hand?"
        assert ann.stored == ["ann-1"]  # the receipt: stored by the broker, the SDK may forget it
        assert [d["id"] for d in await decisions(stack, "ann")] == [pushed["id"]]
        assert await decisions(stack, "bob") == []
        assert await bob.drain() == []

        await bob.track("Help Wanted")
        [for_bob] = await bob.wait_for_messages(1)
        assert for_bob["id"] != pushed["id"]
        assert [d["id"] for d in await decisions(stack, "bob")] == [for_bob["id"]]
        assert [m["id"] for m in await ann.drain()] == [pushed["id"]]


async def test_an_oversized_or_malformed_frame_or_a_tab_too_many_closes_only_that_socket(stack: DevStack) -> None:
    token = await token_for(stack, "ann")
    async with tab(stack.gateway, token) as big, tab(stack.gateway, token) as bad, tab(stack.gateway, token) as calm:
        await big.socket.send("x" * 20_000)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(big.socket.recv(), timeout=10)
        assert big.socket.close_code == 1009
        await bad.socket.send('{"type": "track"}')
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(bad.socket.recv(), timeout=10)
        assert (bad.socket.close_code, bad.socket.close_reason) == (
            4000,
            "track frame needs an event name of 1 to 200 characters",
        )
        assert await calm.drain() == []  # still served
        # Five tabs per user: with calm and four more open, a sixth is refused on its own.
        async with (
            tab(stack.gateway, token) as fourth,
            tab(stack.gateway, token),
            tab(stack.gateway, token),
            tab(stack.gateway, token),
        ):
            async with tab(stack.gateway, token) as sixth:
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(sixth.socket.recv(), timeout=10)
                assert sixth.socket.close_code == 4009
            assert await fourth.drain() == [] and await calm.drain() == []


async def test_a_reconnecting_user_receives_what_they_missed_exactly_once(stack: DevStack) -> None:
    token = await token_for(stack, "ann")
    async with tab(stack.gateway, token) as first:
        await first.track("Help Wanted")
        await first.socket.close()
    # Offline now: the decision waits in the inbox.
    await wait_for(lambda: _decided(stack, "ann", 1), timeout=20, what="ann's decision")
    [decision] = await decisions(stack, "ann")
    async with tab(stack.gateway, token) as second:
        await second.wait_for_messages(1)
        assert [m["id"] for m in await second.drain()] == [decision["id"]]
        await second.ack(decision["id"])
        assert [m["id"] for m in await second.drain()] == [decision["id"]]  # no repeat on this socket
    async with tab(stack.gateway, token) as third:
        assert await third.drain() == []  # acked: gone from the inbox


async def _decided(stack: DevStack, user: str, count: int) -> bool:
    return len(await decisions(stack, user)) >= count


async def test_a_message_reaches_the_user_on_whichever_gateway_holds_the_socket(tmp_path: Path) -> None:
    async with DevStack(root=tmp_path / "stack", gateways=2, keep_files=True, extra_env=gateway_env(tmp_path)) as stack:

        async def both_deliver() -> bool:
            held = [(await _health(node))["partitions"] for node in stack.gateway_nodes]
            return min(held) > 0 and sum(held) == stack.partitions

        await wait_for(both_deliver, timeout=30, what="the gateways to share nudge.messages")
        users = [f"user-{n}" for n in range(12)]
        # Every socket on the second gateway: the first one's deliverer must publish across to it.
        tabs = {user: tab(stack.gateway_nodes[1], await token_for(stack, user)) for user in users}
        opened = {user: await context.__aenter__() for user, context in tabs.items()}
        try:
            for user in users:
                await opened[user].track("Help Wanted")
            for user in users:
                [message] = await opened[user].wait_for_messages(1)
                assert [d["id"] for d in await decisions(stack, user)] == [message["id"]]
            health = [await _health(node) for node in stack.gateway_nodes]
            assert [h["connections"] for h in health] == [0, len(users)]
            assert health[0]["delivered"] > 0  # published across to the second gateway
            assert health[0]["delivered"] + health[1]["delivered"] == len(users)
        finally:
            for context in tabs.values():
                await context.__aexit__(None, None, None)


async def _health(node: Node) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{node.url}/health") as response:
        assert response.status == 200
        return dict(await response.json())


async def test_a_socket_is_closed_when_its_token_expires(stack: DevStack) -> None:
    # Without this, a leaked token would read the user's messages for as long as the socket is kept alive.
    short_lived = issue_token(stack.secret.encode(), "ann", expires_at=int(time.time()) + 3)
    async with tab(stack.gateway, short_lived) as ann:
        assert await ann.drain() == []  # served until then
        await asyncio.wait_for(ann.socket.wait_closed(), timeout=10)
        assert (ann.socket.close_code, ann.socket.close_reason) == (
            4001,
            "token expired: connect again with a new token",
        )


class GatedBatcher:
    """The gateway's batcher behind a gate, standing for a slow broker: each store waits for a :meth:`let_one`."""

    def __init__(self, batcher: PartitionBatcher) -> None:
        self.batcher = batcher
        self.gate = asyncio.Semaphore(0)
        self.in_flight = 0
        self.most_in_flight = 0

    async def submit(self, events: Iterable[tuple[int, bytes]]) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate.acquire()
            await self.batcher.submit(events)
        finally:
            self.in_flight -= 1

    def let_one(self) -> None:
        self.gate.release()

    async def drain(self) -> None:
        await self.batcher.drain()


@asynccontextmanager
async def gateway_in_process(node_id: str) -> AsyncIterator[Gateway]:
    """A gateway in this process, on its own broker and Redis, serving until the block ends."""
    broker, redis = EmbeddedBroker(), EmbeddedRedis()
    broker.start()
    redis.start()
    settings = Settings(
        broker_url=f"kafka://{broker.bootstrap}",
        redis_url=redis.url,
        secret=secrets.token_hex(16),
        app_id=f"test-{secrets.token_hex(4)}",  # the machine's Redis may be shared: keys of this test only
        ws_port=free_port(),
        node_id=node_id,
    )
    try:
        for topic in (settings.events_topic, settings.messages_topic):
            await create_topic(broker.bootstrap, topic, settings.partitions)
        gateway = Gateway(settings)
        stop, ready = asyncio.Event(), asyncio.Event()
        running = asyncio.create_task(gateway.run(stop, ready=ready))
        await asyncio.wait_for(ready.wait(), timeout=30)
        try:
            yield gateway
        finally:
            stop.set()
            await asyncio.wait_for(running, timeout=30)
    finally:
        redis.stop()
        broker.stop()


@asynccontextmanager
async def gated_gateway() -> AsyncIterator[tuple[Gateway, GatedBatcher]]:
    """A gateway in this process, on its own broker and Redis, whose event stores wait at a gate."""
    async with gateway_in_process("gated") as gateway:
        gated = GatedBatcher(gateway._batcher)
        gateway._batcher = gated  # type: ignore[assignment]
        try:
            yield gateway, gated
        finally:
            for _ in range(MAX_STORES_IN_FLIGHT * 2):
                gated.let_one()


async def test_a_socket_has_at_most_32_stores_in_flight_while_the_broker_is_slow() -> None:
    async with gated_gateway() as (gateway, gated):
        token = issue_token(gateway.settings.secret.encode(), "ann", expires_at=int(time.time()) + 600)
        async with tab(gateway, token) as ann:
            for number in range(MAX_STORES_IN_FLIGHT + 1):
                await ann.track("Product Viewed", messageId=f"e{number}")

            async def bound_reached() -> bool:
                return gated.in_flight >= MAX_STORES_IN_FLIGHT

            await wait_for(bound_reached, timeout=10, what="the stores in flight to reach the bound")
            # One store done lets the last track in; the ping behind it is answered only then.
            gated.let_one()
            await ann.drain()
            assert gated.most_in_flight == MAX_STORES_IN_FLIGHT
            for _ in range(MAX_STORES_IN_FLIGHT):
                gated.let_one()

            async def all_stored() -> bool:
                await ann.drain()
                return len(ann.stored) == MAX_STORES_IN_FLIGHT + 1

            await wait_for(all_stored, timeout=20, what="every event's receipt")
            assert sorted(ann.stored) == sorted(f"e{number}" for number in range(MAX_STORES_IN_FLIGHT + 1))


async def test_a_tab_opening_during_a_withdrawal_is_not_replayed_what_the_withdrawal_took_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The race, made to happen: the new tab's inbox is read before the withdrawal removes the offer, and the
    # withdrawal reaches the tab before that read is replayed.
    async with gateway_in_process("racing") as gateway:
        redis, prefix = gateway.redis, gateway.prefix
        offer = delivery.Outgoing("ann", "offer", {"title": "10% off", "consent": "marketing"}, 1, "marketing")
        tip = delivery.Outgoing("ann", "tip", {"title": "A tip", "consent": "personalization"}, 2, "personalization")
        assert await delivery.deliver(redis, prefix, [offer, tip]) == 0  # ann is offline: both wait in her inbox
        read_inbox, release = delivery.inbox, asyncio.Event()
        inbox_read = asyncio.get_running_loop().create_future()

        async def read_then_hold(*args: Any, **kwargs: Any) -> list[tuple[str, dict[str, Any]]]:
            pending = await read_inbox(*args, **kwargs)
            inbox_read.set_result(pending)
            await release.wait()
            return pending

        monkeypatch.setattr(delivery, "inbox", read_then_hold)
        token = issue_token(gateway.settings.secret.encode(), "ann", expires_at=int(time.time()) + 600)
        try:
            async with tab(gateway, token) as ann:
                assert [message_id for message_id, _ in await asyncio.wait_for(inbox_read, 10)] == ["offer", "tip"]
                withdrawal = delivery.Withdrawal("ann", frozenset({"marketing"}))
                assert await delivery.withdraw(redis, prefix, [withdrawal]) == 1
                withdrawn = orjson.loads(await asyncio.wait_for(ann.socket.recv(), timeout=10))
                assert withdrawn == {"type": "withdrawn", "purposes": ["marketing"]}
                release.set()
                assert await ann.drain() == [{"type": "message", "id": "tip", "payload": tip.payload}]
        finally:
            release.set()  # a failed assertion must not leave the socket's handler waiting
