"""The websocket gateway: a thin ``websockets`` server around the sans-I/O :class:`~ws.protocol.Hub`.

One gateway process (``nudge gateway``, Procfile ``ws``) runs four loops on one event loop:

- the ``websockets`` server: HTTP requests go to :class:`~ws.routes.Routes` (token check, SDK, demo store); each
  accepted socket is registered with the hub, recorded in Redis presence, sent its inbox, then its frames are fed to
  the hub until it closes, or until its token expires (closed with 4001);
- the node channel: messages published to this node (``<prefix>:node:<node id>``) are pushed through the hub, and
  consent withdrawals published to it are passed to the hub, which tells the user's tabs to take those pop-ups back;
- the deliverer (:mod:`ws.deliverer`): ``nudge.messages`` -> Redis inboxes -> the channels of the nodes holding the
  users' sockets (this node or another);
- presence upkeep: every few seconds this node re-marks its online users, so presence expires by itself if the
  process dies.

Everything the hub decides comes back as effects, carried out in :meth:`Gateway.carry_out`. A socket whose client
does not read (its send buffer passes ``max_buffered_bytes``) is dropped on its own, so one slow reader never holds
up the others; its messages stay in the inbox for its next connection.

Garbage collection: a full collection walks every live object, and a gateway holds many long-lived ones per socket
(measured: 100-170 ms pauses with 5,000 sockets). After start-up the gateway freezes what exists (``gc.freeze``) and
raises the young-generation threshold, so collections stay short and rare; see :func:`tune_gc`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import time
import weakref
from collections import Counter
from collections.abc import Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from app.batching import topic_batcher
from app.gc_tuning import tune_gc
from app.keys import KeyStore
from app.metrics import GatewayReading, exposition, gateway_registry
from app.partitioning import partition_for
from app.pii import encrypt_fields, has_personal_fields
from app.settings import Settings
from ws import delivery
from ws.deliverer import Deliverer
from ws.protocol import Acked, Close, Effect, Hub, Produce, Send
from ws.routes import Respond, Routes, Upgrade

log = logging.getLogger(__name__)

PRESENCE_REFRESH_S = delivery.DEFAULT_PRESENCE_TTL_S / 3
#: Connections to Redis per gateway, and how long an operation waits for one before it fails.
REDIS_CONNECTIONS = 100
REDIS_POOL_WAIT_S = 10.0
#: RFC 6455's "Try Again Later": the gateway cannot serve the socket right now (Redis is away).
CLOSE_TRY_AGAIN_LATER = 1013
#: A socket whose unsent bytes pass this is dropped: its client is not reading.
MAX_BUFFERED_BYTES = 256 * 1024
#: The kernel send buffer asked for each socket (Linux doubles it). Left to autotuning it grows to tcp_wmem's maximum
#: (4 MB here), so a client that stops reading would pin megabytes of kernel memory before the limit above is even
#: reached (measured: a silent client absorbed 600 KB of pop-ups without being dropped). Pop-ups are small: 128 KB
#: in flight is ample for a browser far away.
KERNEL_SEND_BUFFER_BYTES = 64 * 1024
#: Track and consent frames of one socket being stored at once. At the limit its handler reads no further frame, so
#: a slow broker holds the client back over TCP instead of piling up stores in the gateway's memory.
MAX_STORES_IN_FLIGHT = 32


class Gateway:
    """One gateway node. Use :meth:`run` (serves until ``stop`` is set); ``port`` is known once it serves."""

    def __init__(self, settings: Settings, *, hub: Hub | None = None) -> None:
        self.settings = settings
        self.node_id = settings.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.prefix = settings.app_id
        self.hub = hub or Hub()
        self.metrics = gateway_registry(self._reading)
        self.routes = Routes(
            secret=settings.secret.encode(),
            demo_store=settings.demo_store,
            stats=self.stats,
            api_keys=settings.api_keys,
            metrics=lambda: exposition(self.metrics),
        )
        self.port = settings.ws_port
        # A pool that waits for a free connection: redis-py's default one raises "Too many connections" past 100 at
        # once, which a burst of sockets opening (100 tabs at start-up, measured) or of acks easily asks for. And a
        # command retried on a connection error: after a Redis restart each idle pooled connection fails its next
        # command once (measured: 97 of 994 acks lost, the deliverer backing off), where a reconnect succeeds.
        pool = BlockingConnectionPool.from_url(
            settings.redis_url or "",
            max_connections=REDIS_CONNECTIONS,
            timeout=REDIS_POOL_WAIT_S,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3),
            retry_on_error=[RedisConnectionError],
        )
        self.redis: Redis = Redis.from_pool(pool)
        self._producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=2)
        # Track and consent frames go to nudge.events packed as the collector packs HTTP events (one record per
        # partition per linger): the worker pays its per-record cost (Faust's dispatch, the flushes) once per record.
        self._batcher = topic_batcher(
            self._producer, settings.events_topic, linger_s=settings.collector_linger_ms / 1000
        )
        self.deliverer = Deliverer(settings, self.redis)
        self.keys = KeyStore(self.redis, self.prefix)
        self._sockets: dict[int, ServerConnection] = {}
        self._users: dict[int, str] = {}
        # Weak: a handshake refused after _process_request (a foreign origin) never reaches _handle to pop its entry.
        self._token_expiries: weakref.WeakKeyDictionary[ServerConnection, int] = weakref.WeakKeyDictionary()
        self._store_slots: dict[int, asyncio.Semaphore] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.counts = {
            "opened": 0,
            "refused": 0,
            "pushed": 0,
            "acked": 0,
            "tracked": 0,
            "dropped_slow": 0,
            "withdrawals_sent": 0,
        }
        #: Damaged inbox entries skipped on reading an inbox, by reason (:data:`ws.delivery.INBOX_SKIP_REASONS`).
        self.inbox_skipped: Counter[str] = Counter()

    def stats(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "connections": len(self._sockets),
            "partitions": self.deliverer.partitions,
            **self.counts,
            **self.deliverer.counts,
        }

    def _reading(self) -> GatewayReading:
        counts, delivered = self.counts, self.deliverer.counts
        return GatewayReading(
            sockets_open=len(self._sockets),
            opened=counts["opened"],
            refused=counts["refused"],
            dropped_slow=counts["dropped_slow"],
            pushed=counts["pushed"],
            acked=counts["acked"],
            tracked=counts["tracked"],
            inbox_writes=delivered["delivered"],
            published=delivered["published"],
            batches=delivered["batches"],
            suppressed=delivered["suppressed"],
            stale=delivered["stale"],
            malformed=delivered["malformed"],
            partitions=self.deliverer.partitions,
            lag=self.deliverer.lag(),
            inbox_skipped={reason: self.inbox_skipped[reason] for reason in delivery.INBOX_SKIP_REASONS},
        )

    async def run(self, stop: asyncio.Event, *, ready: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set, then close every socket (1001) and stop the loops."""
        await self._producer.start()
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(delivery.channel(self.prefix, self.node_id))
        deliverer = self.deliverer
        await deliverer.start()
        origins: list[str | None] | None = self._origins()
        try:
            async with serve(
                self._handle,
                self.settings.ws_host,
                self.settings.ws_port,
                process_request=self._process_request,
                origins=origins,  # type: ignore[arg-type]
                compression=None,  # small JSON frames: deflate would cost CPU per socket and save little
                max_size=self.hub.max_frame_bytes,
                ping_interval=20,
                ping_timeout=20,
                server_header=None,
            ) as server:
                self.port = _bound_port(server)
                loops = [
                    asyncio.create_task(self._listen(pubsub), name="node channel"),
                    asyncio.create_task(deliverer.run(), name="deliverer"),
                    asyncio.create_task(self._refresh_presence(), name="presence"),
                ]
                tune_gc()
                log.info("gateway %s serving on %s:%d", self.node_id, self.settings.ws_host, self.port)
                if not self.settings.api_keys:
                    log.warning("NUDGE_API_KEYS is empty: GET /metrics refuses every request")
                if ready is not None:
                    ready.set()
                waiter = asyncio.create_task(stop.wait())
                done, _ = await asyncio.wait([waiter, *loops], return_when=asyncio.FIRST_COMPLETED)
                for task in [waiter, *loops]:
                    task.cancel()
                for task in done:
                    if task is not waiter and not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
        finally:
            await deliverer.stop()
            await pubsub.aclose()
            await self._batcher.drain()
            await self._producer.stop()
            await self.redis.aclose()
            log.info("gateway %s stopped: %s", self.node_id, self.counts)

    def _origins(self) -> list[str | None]:
        """Browsers must come from an allowed origin; clients that send none (servers, tools) are not browsers."""
        own = [f"http://{host}:{self.settings.ws_port}" for host in {self.settings.ws_host, "localhost", "127.0.0.1"}]
        return [None, *sorted(self.settings.ws_origins or own)]

    # -- HTTP ----------------------------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        route = self.routes.handle(request.path, request.headers, time.time())
        if isinstance(route, Upgrade):
            connection.username = route.user_id
            self._token_expiries[connection] = route.expires_at
            return None
        return _response(route)

    # -- sockets -------------------------------------------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        user_id = connection.username
        token_expires_at = self._token_expiries.pop(connection)
        conn_id = next(self._ids)
        # The wall clock, not a monotonic one: the hub also checks track timestamps against it.
        refused = self.hub.open(conn_id, user_id, time.time())
        if refused:
            self.counts["refused"] += 1
            self._sockets[conn_id] = connection
            await self.carry_out(refused)
            return
        self._sockets[conn_id] = connection
        self._users[conn_id] = user_id
        self._store_slots[conn_id] = asyncio.Semaphore(MAX_STORES_IN_FLIGHT)
        self.counts["opened"] += 1
        expiry = asyncio.get_running_loop().call_later(token_expires_at - time.time(), self._expire, conn_id)
        raw_socket = connection.transport.get_extra_info("socket")
        if raw_socket is not None:
            raw_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER_BYTES)
        try:
            # Presence before the inbox read; the deliverer writes the inbox before it reads presence. So a message
            # racing this connection is found by one or the other (and the hub sends it once).
            await delivery.present(self.redis, self.prefix, [user_id], self.node_id)
            pending = await delivery.inbox(self.redis, self.prefix, user_id, skipped=self.inbox_skipped)
            self.counts["pushed"] += await self.carry_out(self.hub.replay(conn_id, pending))
            async for frame in connection:
                await self.carry_out(self.hub.received(conn_id, frame, time.time()))
        except ConnectionClosed:
            pass
        except RedisError as error:
            # No presence or inbox without Redis: the socket would miss messages. 1013: the client retries later.
            log.warning("closing a socket of %s: Redis is unavailable: %s", user_id, error)
            await connection.close(CLOSE_TRY_AGAIN_LATER, "try again later: the message store is unavailable")
        finally:
            expiry.cancel()
            self.hub.closed(conn_id)
            self._sockets.pop(conn_id, None)
            self._users.pop(conn_id, None)
            self._store_slots.pop(conn_id, None)
            if not self.hub.online(user_id):
                with contextlib.suppress(Exception):  # presence expires by itself if Redis is away
                    await delivery.absent(self.redis, self.prefix, user_id, self.node_id)

    async def carry_out(self, effects: Iterable[Effect]) -> int:
        """Do what the hub decided, in order; returns how many frames were written (pushes, or a pong)."""
        written = 0
        for effect in effects:
            if isinstance(effect, Send):
                written += self._send(effect.conn_id, effect.text)
            elif isinstance(effect, Close):
                connection = self._sockets.pop(effect.conn_id, None)
                if connection is not None:
                    # Closed from this socket's own handler (open, received) or a task of its own (_store):
                    # waiting is safe.
                    log.info("closing a socket of %s: %d %s", connection.username, effect.code, effect.reason)
                    await connection.close(effect.code, effect.reason)
            elif isinstance(effect, Produce):
                # Only ever from the socket's own handler: waiting here holds back its next frame.
                store_slots = self._store_slots[effect.conn_id]
                await store_slots.acquire()
                self.counts["tracked"] += 1
                event = effect.event
                fields = self.settings.all_personal_fields
                if has_personal_fields(event, fields):
                    key = (await self.keys.keys_for([effect.user_id], create=True))[effect.user_id]
                    assert key is not None
                    event = encrypt_fields(event, key, effect.user_id, fields)
                partition = partition_for(effect.user_id, self.settings.partitions)
                self._spawn(
                    self._store(effect.conn_id, event["messageId"], partition, orjson.dumps(event), store_slots)
                )
            elif isinstance(effect, Acked):
                self.counts["acked"] += 1
                self._spawn(delivery.acknowledge(self.redis, self.prefix, effect.user_id, effect.message_id))
        return written

    async def _store(
        self, conn_id: int, message_id: str, partition: int, data: bytes, store_slots: asyncio.Semaphore
    ) -> None:
        """Produce one browser event; then send its receipt, or close the socket so the browser sends it again.
        Releases the socket's store slot (acquired in :meth:`carry_out`) once the broker has answered."""
        try:
            await self._batcher.submit([(partition, data)])
        except Exception as error:
            log.warning("could not store an event of socket %d (%r): closing it, the browser resends", conn_id, error)
            reason = "try again later: events cannot be stored now"
            await self.carry_out([Close(conn_id, CLOSE_TRY_AGAIN_LATER, reason)])
            return
        finally:
            store_slots.release()
        await self.carry_out(self.hub.stored(conn_id, message_id))

    def _expire(self, conn_id: int) -> None:
        """The socket's token has expired: close it (the browser connects again with a new token)."""
        self._spawn(self.carry_out(self.hub.expired(conn_id)))

    def _send(self, conn_id: int, text: str) -> bool:
        connection = self._sockets.get(conn_id)
        if connection is None:
            return False
        if connection.transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            # The client stopped reading: a close frame would queue behind the backlog, so abort the TCP connection.
            log.warning("dropping a socket of %s: its client is not reading", connection.username)
            self.counts["dropped_slow"] += 1
            self._sockets.pop(conn_id, None)
            connection.transport.abort()
            return False
        broadcast([connection], text)
        return True

    async def _listen(self, pubsub: Any) -> None:
        """Push what the deliverers publish to this node, and pass on the withdrawals they publish.

        If Redis goes away, listen again with backoff until it is back: the client then subscribes again by itself,
        and once the channel is confirmed, the online users' inboxes are sent (see :meth:`_resend_inboxes`).
        """
        backoff, lost = 0.1, False
        while True:
            try:
                async for message in pubsub.listen():
                    backoff = 0.1
                    if message.get("type") == "subscribe" and lost:
                        await self._resend_inboxes()
                        lost = False
                    if message.get("type") != "message":
                        continue
                    try:
                        published = orjson.loads(message["data"])
                        withdrawal = published.get("type") == delivery.WITHDRAWN
                        if withdrawal:
                            effects = self.hub.withdraw(published["user"], published["purposes"])
                        else:
                            effects = self.hub.push(published["user"], published["id"], published["payload"])
                    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as error:
                        log.warning("ignoring a malformed publish on the node channel: %s", error)
                        continue
                    written = await self.carry_out(effects)
                    self.counts["withdrawals_sent" if withdrawal else "pushed"] += written
            except (RedisError, OSError) as error:
                lost = True
                log.warning("node channel lost, listening again in %.1f s: %s", backoff, error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, PRESENCE_REFRESH_S)

    async def _resend_inboxes(self) -> None:
        """Send every online user's inbox to their sockets after the node channel was down.

        What was published meanwhile reached no one, but it is in the inboxes (written before the publish). Presence
        is marked again first, in case Redis lost it, then the inboxes are read: the order a new socket follows. The
        hub skips what each socket was already sent.
        """
        users = set(self._users.values())
        if not users:
            return
        await delivery.present(self.redis, self.prefix, users, self.node_id)
        for user_id in users:
            pending = await delivery.inbox(self.redis, self.prefix, user_id, skipped=self.inbox_skipped)
            for conn_id in self.hub.connections(user_id):
                self.counts["pushed"] += await self.carry_out(self.hub.replay(conn_id, pending))
        log.info("node channel back: sent the inboxes of %d online users", len(users))

    async def _refresh_presence(self) -> None:
        while True:
            await asyncio.sleep(PRESENCE_REFRESH_S)
            users = set(self._users.values())
            if users:
                try:
                    await delivery.present(self.redis, self.prefix, users, self.node_id)
                except Exception as error:  # Redis restarting: try again next round; presence has a TTL to spare
                    log.warning("could not refresh presence of %d users: %s", len(users), error)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task failed: %s", task.exception())


def _response(route: Respond) -> Response:
    headers = Headers({"Content-Type": route.content_type, "Content-Length": str(len(route.body)), **route.headers})
    reasons = {200: "OK", 308: "Permanent Redirect", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
    return Response(route.status, reasons.get(route.status, "Upgrade Required"), headers, route.body)


def _bound_port(server: Server) -> int:
    return int(next(iter(server.sockets)).getsockname()[1])
