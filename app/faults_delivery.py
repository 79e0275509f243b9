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
``DELAYED_BY_S`` longer from its event to the tab than the same pop-up in the fault-free run (and, for a killed
gateway, at least until its tabs were all back): from then on delivery kept the fault-free run's pace. The rate is
one the stack keeps up with on a busy 2-core machine, so that pace is not a backlog of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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
from app.events import iso_from_ms
from app.fault_clients import SilentSocket, Tab, token
from app.faults import Fault, FaultReport
from app.offsets import read_range
from app.percentiles import nearest_rank
from app.stack_client import end_offsets, wait_for
from ws.delivery import inbox_key

PROBE_EVENT = "Fault Probe Requested"
TRIGGER_NAME = "fault_probe"
#: Share of the stream that is probes (each one pop-up).
PROBE_SHARE = 0.2
#: A pop-up this much later than in the fault-free run was delayed by the fault (see the docstring).
DELAYED_BY_S = 1.0
#: Latency of the other users with a silent client: at most this many times the fault-free p99, plus DELAYED_BY_S.
LATENCY_FACTOR = 3.0
#: Recovery slower than this is reported as a difference: "bounded recovery time".
MAX_RECOVERY_S = 45.0
#: How long to wait for the last pop-ups once the stream is produced, and for no progress at all.
DRAIN_TIMEOUT_S = 60.0
STALL_S = 20.0
REDIS_OUTAGE_S = 3.0
#: Pop-ups for the client that never reads: enough to pass the gateway's 256 KB send-buffer limit plus the kernel's.
SILENT_USER_PROBES = 600
#: Message body length in the slow-client fault: 1 KB pop-ups, so the silent socket's backlog grows fast.
SLOW_BODY_CHARS = 900
#: A gateway whose peak RSS grows more than this over the fault-free run's did not stay bounded.
MAX_EXTRA_RSS_MB = 64.0
OUTAGE_USER = "fault-outage-probe"
CATEGORIES = ("shoes", "bags", "shirts", "jackets", "hats", "socks")


@dataclass(frozen=True)
class Plan:
    """One fault's deterministic stream and stack shape, the same for the fault-free and the faulty run."""

    fault: str
    users: tuple[str, ...]
    events: tuple[dict[str, Any], ...]
    #: Events per second, and after how many events the fault strikes.
    rate: float
    fault_at: int
    gateways: int = 1
    body_chars: int = 60
    #: The user whose tab never reads in the faulty run (slow-client); it reads without acking in both runs.
    silent_user: str | None = None
    private_redis: bool = False

    @property
    def probes(self) -> int:
        return sum(1 for event in self.events if event["event"] == PROBE_EVENT)


def plan(
    fault: str,
    size: int,
    *,
    gateways: int = 1,
    silent_user: bool = False,
    private_redis: bool = False,
    body_chars: int = 60,
    fault_share: float = 0.3,
) -> Plan:
    """The stream for ``size`` events: 10 to 100 users, at least 8 s at 100 to 250 events/s, seeded by the fault."""
    picker = random.Random(fault)
    users = tuple(f"fault-user-{n:03d}" for n in range(max(10, min(100, size // 50))))
    silent = "fault-silent-user" if silent_user else None
    rate = max(100.0, min(250.0, size / 8))
    base_ms = int(time.time() * 1000) - 60_000 - size  # one event a millisecond, all in the past
    silent_share = min(0.5, SILENT_USER_PROBES / size) if silent else 0.0
    events = []
    for index in range(size):
        if silent is not None and picker.random() < silent_share:
            user, probe = silent, True
        else:
            user, probe = picker.choice(users), picker.random() < PROBE_SHARE
        events.append(_event(user, f"{fault}-{index}", iso_from_ms(base_ms + index), probe=probe, picker=picker))
    all_users = (*users, silent) if silent is not None else users
    return Plan(
        fault,
        all_users,
        tuple(events),
        rate,
        int(size * fault_share),
        gateways,
        body_chars,
        silent,
        private_redis,
    )


def _event(user: str, message_id: str, stamp: str, *, probe: bool, picker: random.Random) -> dict[str, Any]:
    properties: dict[str, Any]
    if probe:
        name, properties = PROBE_EVENT, {"source": "faults"}
    else:
        category, product = picker.choice(CATEGORIES), picker.randrange(200)
        name = "Product Viewed"
        properties = {"product_id": f"{category}-{product:03d}", "category": category, "price": 10 + product}
    return {
        "type": "track",
        "userId": user,
        "event": name,
        "properties": properties,
        "messageId": message_id,
        "timestamp": stamp,
    }


def _triggers(body_chars: int) -> str:
    body = ("Every pop-up of the fault suite reads like this one. " * (body_chars // 50 + 1))[:body_chars]
    return f"""\
# Written by `nudge faults`: one trigger on an event, no cooldown, so every probe is exactly one pop-up.
cap_per_user_per_day: 1000
triggers:
  {TRIGGER_NAME}:
    when: {{event: {PROBE_EVENT}}}
    message: {{title: "Fault probe", body: "{body}"}}
    consent: marketing
"""


@dataclass
class Outcome:
    """What one run ended with."""

    #: (user, message id) -> how many times it was shown as a pop-up.
    shown: dict[tuple[str, str], int]
    socket_frames: int
    socket_duplicates: int
    #: Per pop-up: user, message id, receive time of its first frame, seconds since its event was produced.
    latencies: list[tuple[str, str, float, float]]
    #: Decisions on nudge.messages: id -> (user, outcome).
    decisions: dict[str, tuple[str, str]]
    #: When the worker produced each decision record (its Kafka timestamp, unix seconds), by id.
    decided_at: dict[str, float]
    profiles: dict[str, Any]
    models: dict[str, Any]
    gateways: list[dict[str, Any]]
    peak_rss_mb: float
    #: Messages left in the inboxes of users whose tabs ack everything: acks that never reached Redis.
    inbox_left: int
    #: When the fault struck (unix seconds), if there was one.
    fault_time: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


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
        rules.write_text(_triggers(self.plan.body_chars))
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
            return all(_event_total(profiles[user]) >= count for user, count in expected.items())

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
        return profile is not None and _event_total(profile) >= accepted

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
    return {"silent_socket_dropped_after_s": dropped_s, "silent_user_probes": _probes_of(run.plan, user)}


async def _produced_all(run: Run) -> bool:
    return run.produced >= len(run.plan.events)


def _probes_of(stream: Plan, user: str) -> int:
    return sum(1 for event in stream.events if event["event"] == PROBE_EVENT and event["userId"] == user)


async def _compare(stream: Plan, injection: Injection) -> FaultReport:
    """Play ``stream`` without the fault, then with it; the report. Logs are kept only when something differed."""
    runs = [Run(stream, label="clean", injection=None), Run(stream, label="faulty", injection=injection)]
    baseline = await runs[0].play()
    faulty = await runs[1].play()
    report = _report(stream, baseline, faulty)
    if report.ok:
        for run in runs:
            shutil.rmtree(run.root, ignore_errors=True)
    else:
        report.details["logs"] = [str(run.root) for run in runs]
    return report


FAULTS: dict[str, Fault] = {"redis-restart": redis_restart, "gateway-kill": gateway_kill, "slow-client": slow_client}


# -- comparing the two runs ------------------------------------------------------------------------------------------


def _report(stream: Plan, baseline: Outcome, faulty: Outcome) -> FaultReport:
    diff: dict[str, Any] = {}
    clean_shown, fault_shown = set(baseline.shown), set(faulty.shown)
    sent = {(user, message_id) for message_id, (user, outcome) in baseline.decisions.items() if outcome == "sent"}
    if clean_shown != sent:
        diff["fault_free_run_itself"] = {
            "sent_not_shown": len(sent - clean_shown),
            "shown_not_sent": len(clean_shown - sent),
        }
    lost_pops = sorted(clean_shown - fault_shown)
    extra_pops = sorted(fault_shown - clean_shown)
    if lost_pops or extra_pops:
        diff["pop_ups"] = {"lost": [list(p) for p in lost_pops[:10]], "extra": [list(p) for p in extra_pops[:10]]}
    decisions_lost = sorted(baseline.decisions.keys() - faulty.decisions.keys())
    decisions_extra = sorted(faulty.decisions.keys() - baseline.decisions.keys())
    changed = [
        d for d in baseline.decisions.keys() & faulty.decisions.keys() if baseline.decisions[d] != faulty.decisions[d]
    ]
    if decisions_lost or decisions_extra or changed:
        diff["decisions"] = {"lost": decisions_lost[:10], "extra": decisions_extra[:10], "changed": changed[:10]}
    events_lost = events_doubled = 0
    profiles_differ = []
    for user in stream.users:
        clean, hurt = baseline.profiles.get(user), faulty.profiles.get(user)
        if clean != hurt:
            profiles_differ.append(user)
            before, after = _event_total(clean), _event_total(hurt)
            events_lost += max(0, before - after)
            events_doubled += max(0, after - before)
    if profiles_differ:
        diff["profiles"] = {
            "count": len(profiles_differ),
            "first": {
                user: _changes(baseline.profiles.get(user), faulty.profiles.get(user)) for user in profiles_differ[:3]
            },
        }
    if baseline.models != faulty.models:
        diff["model_versions"] = {"fault_free": baseline.models, "faulty": faulty.models}
    clean_latency = [latency for *_, latency in baseline.latencies]
    recovery, delayed = _recovery_s(stream, baseline, faulty)
    if recovery > MAX_RECOVERY_S:
        diff["recovery"] = f"took {recovery:.1f} s, over the {MAX_RECOVERY_S:.0f} s bound"
    details: dict[str, Any] = {
        "compared": "pop-ups shown per (user, message id); decisions (id, outcome) on nudge.messages; every "
        "stream user's profile without rfm and category_affinity; model version per partition",
        "users": len(stream.users),
        "probes": stream.probes,
        "rate": stream.rate,
        "fault_at_event": stream.fault_at,
        "pop_ups": {"fault_free": len(clean_shown), "faulty": len(fault_shown), "lost": len(lost_pops)},
        "socket_frames": {"fault_free": baseline.socket_frames, "faulty": faulty.socket_frames},
        "socket_duplicates": {"fault_free": baseline.socket_duplicates, "faulty": faulty.socket_duplicates},
        "duplicate_pops_after_sdk_dedupe": sum(count - 1 for count in faulty.shown.values()),
        "decisions": {"fault_free": len(baseline.decisions), "faulty": len(faulty.decisions)},
        # Acked but still in the inbox: replayed on the user's next socket, where the SDK drops them by id.
        "inbox_entries_left": {"fault_free": baseline.inbox_left, "faulty": faulty.inbox_left},
        "events_lost": events_lost,
        "events_doubled": events_doubled,
        "latency_ms": {"fault_free": _summary(clean_latency), "faulty": _summary([x for *_, x in faulty.latencies])},
        "delayed_pop_ups": delayed,
        # Where the time went: the worker (event -> decision record) or delivery (decision record -> tab).
        "hops_ms": {"fault_free": _hops(baseline), "faulty": _hops(faulty)},
        "gateway_peak_rss_mb": {"fault_free": baseline.peak_rss_mb, "faulty": faulty.peak_rss_mb},
        "gateways": [_gateway_counts(h) for h in faulty.gateways],
        **faulty.details,
    }
    _fault_specific(stream, baseline, faulty, details, diff)
    if diff:
        details["diff"] = diff
    return FaultReport(
        fault=stream.fault,
        events=len(stream.events),
        lost=len(lost_pops) + len(decisions_lost) + events_lost,
        doubled=len(decisions_extra) + events_doubled,
        duplicate_pops=details["duplicate_pops_after_sdk_dedupe"],
        recovery_s=round(recovery, 2),
        details=details,
    )


def _fault_specific(
    stream: Plan, baseline: Outcome, faulty: Outcome, details: dict[str, Any], diff: dict[str, Any]
) -> None:
    if stream.fault == "redis-restart":
        kept = faulty.details.get("during_outage", {}).get("accepted_probe_events_kept", {})
        if kept.get("accepted") and not kept.get("kept"):
            diff["outage_events"] = "the collector accepted events during the outage that never reached a profile"
        collector = faulty.details.get("during_outage", {}).get("collector", {})
        unclear = {name: answer for name, answer in collector.items() if not _clear_answer(answer)}
        if unclear:
            diff["collector_refusals"] = {"expected": "200, or 503 with a JSON message", "seen": unclear}
        socket = faulty.details.get("during_outage", {}).get("new_socket", {})
        if socket.get("answered") != "pong" and not (socket.get("closed") == 1013 and socket.get("reason")):
            diff["new_socket_during_outage"] = {"expected": "served, or closed 1013 with a reason", "seen": socket}
    if stream.silent_user is not None:
        silent = stream.silent_user
        dropped = sum(int(h.get("dropped_slow", 0)) for h in faulty.gateways)
        details["dropped_slow_sockets"] = dropped
        if dropped != 1:
            diff["dropped_slow"] = f"{dropped} sockets dropped as slow; expected exactly the silent one"
        if faulty.details.get("silent_socket_dropped_after_s") is None:
            diff["silent_socket"] = "the gateway never dropped the socket that does not read"
        # Everyone else: the silent user's pop-ups come from its inbox when it returns, late by design.
        clean_p99 = _percentile([x for user, *_, x in baseline.latencies if user != silent], 0.99)
        fault_p99 = _percentile([x for user, *_, x in faulty.latencies if user != silent], 0.99)
        details["others_p99_ms"] = {"fault_free": round(clean_p99 * 1000, 1), "faulty": round(fault_p99 * 1000, 1)}
        # A loose bar: this machine is shared, so p99s wander between runs; a stalled gateway would pass it by far.
        if fault_p99 > LATENCY_FACTOR * clean_p99 + DELAYED_BY_S:
            diff["latency"] = (
                f"others' p99 {fault_p99 * 1000:.0f} ms with the silent client, {clean_p99 * 1000:.0f} ms without"
            )
        extra_rss = faulty.peak_rss_mb - baseline.peak_rss_mb
        if extra_rss > MAX_EXTRA_RSS_MB:
            diff["gateway_memory"] = f"peak RSS {extra_rss:.0f} MB above the fault-free run's"


def _changes(clean: Any, hurt: Any) -> dict[str, Any]:
    """The top-level fields of two profiles that differ, as ``[fault-free, faulty]``."""
    if not isinstance(clean, dict) or not isinstance(hurt, dict):
        return {"profile": [clean is not None, hurt is not None]}
    return {
        key: [clean.get(key), hurt.get(key)]
        for key in sorted(clean.keys() | hurt.keys())
        if clean.get(key) != hurt.get(key)
    }


def _hops(outcome: Outcome) -> dict[str, dict[str, float]]:
    to_decision, to_tab = [], []
    for _, message_id, received, latency in outcome.latencies:
        decided = outcome.decided_at.get(message_id)
        if decided is not None:
            to_decision.append(decided - (received - latency))
            to_tab.append(received - decided)
    return {"event_to_decision": _summary(to_decision), "decision_to_tab": _summary(to_tab)}


def _clear_answer(answer: dict[str, Any]) -> bool:
    """A collector answer during the outage: accepted, or refused as retryable with the reason."""
    if answer.get("status") == 200:
        return True
    if answer.get("status") != 503:
        return False
    try:
        return bool(orjson.loads(answer.get("body", "")).get("message"))
    except (orjson.JSONDecodeError, AttributeError):
        return False


def _recovery_s(stream: Plan, baseline: Outcome, faulty: Outcome) -> tuple[float, int]:
    """From the fault to the last pop-up it delayed (and to the last reconnect, for a killed gateway); how many.

    The silent user's pop-ups wait in its inbox until it comes back: delayed by design, not counted.
    """
    if faulty.fault_time is None:
        return 0.0, 0
    clean = {message_id: latency for _, message_id, _, latency in baseline.latencies}
    delayed = [
        received
        for user, message_id, received, latency in faulty.latencies
        if user != stream.silent_user
        and received >= faulty.fault_time
        and latency - clean.get(message_id, latency) > DELAYED_BY_S
    ]
    recovered = max(delayed, default=faulty.fault_time) - faulty.fault_time
    return max(recovered, float(faulty.details.get("all_reconnected_s", 0.0))), len(delayed)


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


def _event_total(profile: Any) -> int:
    counts = profile.get("event_counts", {}) if isinstance(profile, dict) else {}
    return sum(int(n) for n in counts.values()) if isinstance(counts, dict) else 0


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


def _gateway_counts(health: dict[str, Any]) -> dict[str, Any]:
    keys = ("node", "connections", "opened", "pushed", "acked", "dropped_slow", "delivered", "published")
    return {key: health[key] for key in keys if key in health}


def _percentile(values: list[float], q: float) -> float:
    return nearest_rank(sorted(values), q) if values else 0.0


def _summary(seconds: list[float]) -> dict[str, float]:
    return {
        "p50": round(_percentile(seconds, 0.5) * 1000, 1),
        "p99": round(_percentile(seconds, 0.99) * 1000, 1),
        "max": round(max(seconds, default=0.0) * 1000, 1),
    }


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
