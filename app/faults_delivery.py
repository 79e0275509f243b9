"""Fault suite: delivery faults -- Redis restarted, a gateway killed, a client that never reads (see :mod:`app.faults`).

Each fault plays one deterministic stream twice, each time on a fresh embedded stack (one worker, one or two
gateways), first without the fault and then with it, and compares what the two runs ended with:

- pop-ups: the (user, message id) pairs the clients showed. ``lost`` counts those the fault-free run showed and the
  faulty one did not; frames that came twice on a socket (``socket_duplicates``, which the SDK's dedupe absorbs)
  and pop-ups shown twice (``duplicate_pops``, what a shopper would see) are counted apart;
- the worker's state: decisions on ``nudge.messages`` (id and outcome), every user's profile (without the parts that
  depend on the reading time) and the partitions' model versions. A delivery fault must leave it exactly as it was.

The stream: ``users`` users, each with a tab open (:class:`app.fault_clients.Tab`: reconnects, acks, dedupes like
``nudge.js``), get product views and ``Fault Probe Requested`` events, produced straight to ``nudge.events`` one
event per record keyed by user id and paced open-loop. The probe fires the one trigger rule (an event condition, no
cooldown, a cap the stream stays under, everyone consented), so each probe is one pop-up whose id (a hash of user,
trigger and event time) is the same in both runs: timestamps are fixed once per fault and strictly increase.

``recovery_s`` is the time from the fault until the last pop-up that the fault delayed, i.e. that took more than
``app.faults_compare.DELAYED_BY_S`` longer from its event to the tab than the same pop-up in the fault-free run
(and, for a killed gateway, at least until its tabs were all back): from then on delivery kept the fault-free run's
pace. The rate is one the stack keeps up with on a busy 2-core machine, so that pace is not a backlog of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from app.devstack import DevStack, EmbeddedRedis
from app.fault_clients import SilentSocket, Tab, token
from app.faults import Fault, FaultReport
from app.faults_compare import Outcome, compare_runs, event_total
from app.faults_stream import PROBE_EVENT, Plan, plan, triggers_yaml
from app.offsets import read_range
from app.stack_client import end_offsets, wait_for
from ws.delivery import inbox_key

#: How long to wait for the last pop-ups once the stream is produced, and for no progress at all.
DRAIN_TIMEOUT_S = 60.0
STALL_S = 20.0
REDIS_OUTAGE_S = 3.0
#: Message body length in the slow-client fault: 1 KB pop-ups, so the silent socket's backlog grows fast.
SLOW_BODY_CHARS = 900
OUTAGE_USER = "fault-outage-probe"


#: What a fault does to a running stack once ``fault_at`` events are out: returns its details, sets ``run.fault_time``.
Injection = Callable[["Run"], Awaitable[dict[str, Any]]]


class Run:
    """One run of a plan on a fresh stack; :meth:`play` returns its :class:`Outcome`."""

    def __init__(self, plan: Plan, *, label: str, injection: Injection | None) -> None:
        self.plan = plan
        self.label = label
        self.injection = injection
        self.root = Path("var") / f"faults-{plan.fault}-{label}-{os.getpid()}-{secrets.token_hex(3)}"
        self.tabs: dict[str, Tab] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.produced = 0
        self.due: dict[str, float] = {}
        self.fault_time: float | None = None
        self.stack: DevStack

    async def play(self) -> Outcome:
        self.root.mkdir(parents=True, exist_ok=True)
        rules = self.root / "triggers.yaml"
        rules.write_text(triggers_yaml(self.plan.body_chars))
        env = {"NUDGE_TRIGGERS_FILE": str(rules.resolve())}
        redis = EmbeddedRedis(private_dir=self.root / "redis" if self.plan.private_redis else None)
        stack = DevStack(gateways=self.plan.gateways, root=self.root, extra_env=env, redis=redis, keep_files=True)
        async with stack:
            self.stack = stack
            try:
                return await self._play()
            finally:
                for task in self.tasks.values():
                    task.cancel()
                await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    async def _play(self) -> Outcome:
        stack = self.stack
        if self.plan.gateways > 1:
            await wait_for(self._gateways_share, timeout=60, what="the gateways to share nudge.messages")
        urls = [f"ws://127.0.0.1:{node.port}/v1/ws" for node in stack.gateway_nodes]
        for index, user in enumerate(self.plan.users):
            preferred = index % len(urls)
            tab = Tab(user, urls[preferred:] + urls[:preferred], stack.secret, ack=user != self.plan.silent_user)
            self.tabs[user] = tab
            if user != self.plan.silent_user or self.injection is None:
                self.tasks[user] = asyncio.create_task(tab.run())
        await wait_for(self._all_registered, timeout=60, what="every tab to connect")
        rss = _RssSampler([node.process.pid for node in stack.gateway_nodes if node.process is not None])
        sampler = asyncio.create_task(rss.run())
        producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap, linger_ms=5)
        await producer.start()
        producing = asyncio.create_task(self._produce(producer))
        try:
            details: dict[str, Any] = {}
            if self.injection is not None:
                await wait_for(self._reached_fault, timeout=120, what="the stream to reach the fault")
                details = await self.injection(self)
            await producing
        finally:
            producing.cancel()
            await asyncio.gather(producing, return_exceptions=True)
            await producer.stop()
        drain = await self._drain()
        sampler.cancel()
        outcome = await self._observe(rss.peak_mb)
        outcome.details = {**details, "drain": drain}
        return outcome

    async def _produce(self, producer: AIOKafkaProducer) -> None:
        """Open-loop: event ``i`` goes out at ``start + i / rate``, whatever the stack does."""
        start = time.time()
        for index, event in enumerate(self.plan.events):
            delay = start + index / self.plan.rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send("nudge.events", orjson.dumps(event), key=event["userId"].encode())
            if event["event"] == PROBE_EVENT:
                self.due[event["timestamp"]] = time.time()
            self.produced = index + 1
        await producer.flush()

    async def _drain(self) -> dict[str, Any]:
        """Wait until every probe's pop-up was shown (or no progress for ``STALL_S``); how long it took."""
        started = moved_at = time.monotonic()
        last = -1
        while time.monotonic() - started < DRAIN_TIMEOUT_S:
            shown = sum(len(tab.shown) for user, tab in self.tabs.items() if user in self.tasks)
            expected = self._expected_shown()
            if shown >= expected:
                break
            if shown != last:
                last, moved_at = shown, time.monotonic()
            elif time.monotonic() - moved_at > STALL_S:
                break
            await asyncio.sleep(0.1)
        return {"waited_s": round(time.monotonic() - started, 2)}

    def _expected_shown(self) -> int:
        """Pop-ups the running tabs should show: every probe, except the silent user's while it is not back."""
        silent = self.plan.silent_user
        return sum(
            1
            for event in self.plan.events
            if event["event"] == PROBE_EVENT and (event["userId"] != silent or silent in self.tasks)
        )

    async def _folded(self) -> dict[str, Any]:
        """Every user's profile once it counts all of the user's events (or after ``DRAIN_TIMEOUT_S``)."""
        expected: dict[str, int] = {}
        for event in self.plan.events:
            expected[event["userId"]] = expected.get(event["userId"], 0) + 1
        profiles: dict[str, Any] = {}

        async def all_folded() -> bool:
            nonlocal profiles
            profiles = await _profiles(self.stack, self.plan.users)
            return all(event_total(profiles[user]) >= count for user, count in expected.items())

        with contextlib.suppress(TimeoutError):
            await wait_for(all_folded, timeout=DRAIN_TIMEOUT_S, what="the worker to fold every event")
        return profiles

    async def _observe(self, peak_rss_mb: float) -> Outcome:
        stack = self.stack
        shown: dict[tuple[str, str], int] = {}
        latencies: list[tuple[str, str, float, float]] = []
        frames = duplicates = 0
        for user, tab in self.tabs.items():
            shown.update(((user, message_id), count) for message_id, count in tab.shown.items())
            frames += len(tab.frames)
            duplicates += tab.socket_duplicates
            first: dict[str, tuple[float, str]] = {}
            for message_id, received_at, stamp in tab.frames:
                first.setdefault(message_id, (received_at, stamp))
            for message_id, (received_at, stamp) in first.items():
                if stamp in self.due:
                    latencies.append((user, message_id, received_at, received_at - self.due[stamp]))
        health = [await _json(f"{node.url}/health") for node in stack.gateway_nodes if node.process is not None]
        acking = [user for user, tab in self.tabs.items() if tab.ack]
        decisions, decided_at = await _decisions(stack)
        return Outcome(
            shown=shown,
            socket_frames=frames,
            socket_duplicates=duplicates,
            latencies=latencies,
            decisions=decisions,
            decided_at=decided_at,
            profiles=await self._folded(),
            models=await _models(stack),
            gateways=[h for h in health if h is not None],
            peak_rss_mb=peak_rss_mb,
            fault_time=self.fault_time,
            inbox_left=await _inbox_entries(stack, acking),
        )

    async def _gateways_share(self) -> bool:
        held = [(await _json(f"{node.url}/health") or {}).get("partitions", 0) for node in self.stack.gateway_nodes]
        return min(held) > 0 and sum(held) == self.stack.partitions

    async def _all_registered(self) -> bool:
        return all(self.tabs[user].registered.is_set() for user in self.tasks)

    async def _reached_fault(self) -> bool:
        return self.produced >= self.plan.fault_at


# -- the faults ------------------------------------------------------------------------------------------------------


async def redis_restart(size: int) -> FaultReport:
    """Redis (private, append-only) shut down mid-stream and started again ``REDIS_OUTAGE_S`` later."""
    stream = plan("redis-restart", size, private_redis=True)
    return await _compare(stream, _redis_outage)


async def _redis_outage(run: Run) -> dict[str, Any]:
    stack = run.stack
    run.fault_time = time.time()
    await asyncio.to_thread(stack.redis.stop)
    stopped = time.time()
    await asyncio.sleep(0.5)  # let the clients of Redis notice: a probe right away would only time a reconnect
    seen = await _outage_probes(stack)
    await asyncio.sleep(max(0.0, stopped + REDIS_OUTAGE_S - time.time()))
    await asyncio.to_thread(stack.redis.start)
    back = time.time()
    seen["accepted_probe_events_kept"] = await _accepted_kept(stack, seen["collector"])
    return {"outage_s": round(back - stopped, 2), "during_outage": seen}


async def _outage_probes(stack: DevStack) -> dict[str, Any]:
    """What each entry point answers while Redis is away (events of a user outside the compared stream)."""
    auth = aiohttp.BasicAuth(stack.write_key, "")
    plain = {"userId": OUTAGE_USER, "event": "Fault Outage Probe", "messageId": "outage-plain"}
    personal = {"userId": OUTAGE_USER, "traits": {"email": "probe@example.com"}, "messageId": "outage-personal"}
    collector: dict[str, Any] = {}
    async with aiohttp.ClientSession(auth=auth, timeout=aiohttp.ClientTimeout(total=15)) as session:
        for name, path, body in (("track", "track", plain), ("identify_with_email", "identify", personal)):
            try:
                async with session.post(f"{stack.http}/v1/{path}", json=body) as response:
                    collector[name] = {"status": response.status, "body": (await response.text())[:300]}
            except (aiohttp.ClientError, TimeoutError) as error:
                collector[name] = {"error": repr(error)[:300]}
    health = await _json(f"{stack.gateway.url}/health")
    worker = await _status(f"{stack.http}/health")
    return {
        "collector": collector,
        "worker_health": worker,
        "gateway_health": "answers" if health is not None else "no answer",
        "new_socket": await _new_socket(stack),
    }


async def _new_socket(stack: DevStack) -> dict[str, Any]:
    """Open a websocket for a new user and ping it: accepted and served, or how it was refused."""
    url = f"ws://127.0.0.1:{stack.gateway.port}/v1/ws?token={token(stack.secret, OUTAGE_USER)}"
    try:
        async with asyncio.timeout(15), connect(url, open_timeout=10, close_timeout=2) as socket:
            try:
                await socket.send('{"type":"ping"}')
                answer = orjson.loads(await socket.recv())
            except ConnectionClosed:
                return {"opened": True, "closed": socket.close_code, "reason": socket.close_reason}
            return {"opened": True, "answered": answer.get("type")}
    except (OSError, TimeoutError, InvalidHandshake) as error:
        return {"opened": False, "error": repr(error)[:300]}


async def _accepted_kept(stack: DevStack, collector: dict[str, Any]) -> dict[str, Any]:
    """Whether the outage probe events the collector accepted (200) reached the user's profile after all."""
    accepted = sum(1 for answer in collector.values() if answer.get("status") == 200)
    if not accepted:
        return {"accepted": 0}

    async def counted() -> bool:
        profile = (await _profiles(stack, [OUTAGE_USER]))[OUTAGE_USER]
        return profile is not None and event_total(profile) >= accepted

    try:
        await wait_for(counted, timeout=30, what="the accepted outage events in the profile")
    except TimeoutError:
        return {"accepted": accepted, "kept": False}
    return {"accepted": accepted, "kept": True}


async def gateway_kill(size: int) -> FaultReport:
    """Two gateways; one SIGKILLed mid-stream with half the tabs on it, which reconnect to the other."""
    stream = plan("gateway-kill", size, gateways=2)
    return await _compare(stream, _kill_gateway)


async def _kill_gateway(run: Run) -> dict[str, Any]:
    victim = run.stack.gateway_nodes[1]
    on_victim = [tab for index, tab in enumerate(run.tabs.values()) if index % 2 == 1]
    run.fault_time = killed = time.time()
    await asyncio.to_thread(victim.kill)
    victim.process = None  # gone: nothing to ask for /health, nothing to stop

    async def all_back() -> bool:
        return all(tab.registered.is_set() and tab.reconnected_at for tab in on_victim)

    await wait_for(all_back, timeout=60, what="the killed gateway's tabs to reconnect")
    back = max(tab.reconnected_at[0] for tab in on_victim)
    return {"tabs_on_killed_gateway": len(on_victim), "all_reconnected_s": round(back - killed, 2)}


async def slow_client(size: int) -> FaultReport:
    """One tab connects and never reads while pushes pour in; only its socket may go, and it loses nothing."""
    stream = plan("slow-client", size, silent_user=True, body_chars=SLOW_BODY_CHARS, fault_share=0.0)
    return await _compare(stream, _silent_tab)


async def _silent_tab(run: Run) -> dict[str, Any]:
    """Open the silent socket before the stream; after it, bring the user back with a reading tab."""
    user = run.plan.silent_user
    assert user is not None
    stack = run.stack
    silent = SilentSocket(stack.gateway.port, user, stack.secret)
    await silent.open()
    run.fault_time = opened = time.time()
    try:

        async def dropped() -> bool:
            return int((await _json(f"{stack.gateway.url}/health") or {}).get("dropped_slow", 0)) > 0

        async def dropped_or_produced() -> bool:
            return await dropped() or await _produced_all(run)

        await wait_for(dropped_or_produced, timeout=120, what="the silent socket's drop or the stream's end")
        try:
            await wait_for(dropped, timeout=30, what="the gateway to drop the silent socket")
            dropped_s: float | None = round(time.time() - opened, 2)
        except TimeoutError:
            dropped_s = None
    finally:
        silent.close()
    # The user comes back and reads: the inbox must give it every pop-up exactly once.
    run.tasks[user] = asyncio.create_task(run.tabs[user].run())
    return {"silent_socket_dropped_after_s": dropped_s, "silent_user_probes": run.plan.probes_of(user)}


async def _produced_all(run: Run) -> bool:
    return run.produced >= len(run.plan.events)


async def _compare(stream: Plan, injection: Injection) -> FaultReport:
    """Play ``stream`` without the fault, then with it; the report. Logs are kept only when something differed."""
    runs = [Run(stream, label="clean", injection=None), Run(stream, label="faulty", injection=injection)]
    baseline = await runs[0].play()
    faulty = await runs[1].play()
    report = compare_runs(stream, baseline, faulty)
    if report.ok:
        for run in runs:
            shutil.rmtree(run.root, ignore_errors=True)
    else:
        report.details["logs"] = [str(run.root) for run in runs]
    return report


FAULTS: dict[str, Fault] = {"redis-restart": redis_restart, "gateway-kill": gateway_kill, "slow-client": slow_client}


# -- reading the stack -----------------------------------------------------------------------------------------------


async def _json(url: str, *, api_key: str | None = None) -> Any:
    """The JSON body of a 200 answer, else ``None`` (an error status, or no answer within 5 s)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with (
            aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url) as response,
        ):
            return await response.json(content_type=None) if response.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def _status(url: str) -> int | str:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url) as response,
        ):
            return response.status
    except (aiohttp.ClientError, TimeoutError) as error:
        return repr(error)[:200]


async def _profiles(stack: DevStack, users: Any) -> dict[str, Any]:
    """Each user's profile without the parts that depend on the reading time; ``None`` for an unknown user."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    slots = asyncio.Semaphore(16)

    async def one(session: aiohttp.ClientSession, user: str) -> tuple[str, Any]:
        async with slots, session.get(f"{stack.http}/v1/users/{user}/profile") as response:
            if response.status == 404:
                return user, None
            if response.status != 200:
                raise RuntimeError(f"profile of {user}: {response.status} {await response.text()}")
            view = await response.json()
            return user, {k: v for k, v in view.items() if k not in {"rfm", "category_affinity"}}

    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as session:
        return dict(await asyncio.gather(*(one(session, user) for user in users)))


async def _models(stack: DevStack) -> dict[str, Any]:
    """The model version of each partition the worker holds."""
    described = await _json(f"{stack.http}/v1/models", api_key=stack.api_key) or {}
    return {p: m.get("version") for p, m in described.get("partitions", {}).items()}


async def _decisions(stack: DevStack) -> tuple[dict[str, tuple[str, str]], dict[str, float]]:
    """Every decision on ``nudge.messages``: id -> (user, outcome), and id -> when the worker produced it."""
    bootstrap = stack.broker.bootstrap
    decisions: dict[str, tuple[str, str]] = {}
    decided_at: dict[str, float] = {}
    for partition, end in (await end_offsets(bootstrap, "nudge.messages", stack.partitions)).items():
        for record in await read_range(bootstrap, "nudge.messages", partition, 0, end):
            value = orjson.loads(record.value)
            decisions[value["id"]] = (value["userId"], value["outcome"])
            decided_at[value["id"]] = record.timestamp / 1000
    return decisions, decided_at


async def _inbox_entries(stack: DevStack, users: list[str]) -> int:
    redis = Redis.from_url(stack.redis.url)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.hlen(inbox_key(stack.app_id, user))
            return sum(await pipe.execute())
    finally:
        await redis.aclose()


class _RssSampler:
    """The gateways' resident memory, sampled every 0.2 s until cancelled; ``peak_mb`` is the largest sum seen."""

    def __init__(self, pids: list[int]) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.peak_mb = 0.0

    async def run(self) -> None:
        while True:
            total = 0
            for process in self.processes:
                with contextlib.suppress(psutil.Error):
                    total += process.memory_info().rss
            self.peak_mb = max(self.peak_mb, round(total / 2**20, 1))
            await asyncio.sleep(0.2)
