"""``nudge bench --e2e``: event-to-browser latency through the whole stack, against one Kafka hop, in one run.

Each run starts a fresh embedded stack (broker, Redis, one worker, one gateway) whose only trigger fires on every
``Bench Offer Requested`` event (no cooldown, everyone has consented), and a separate process
(:mod:`app.bench_clients`: its own CPU and GIL) that opens ``clients`` websockets, one user each, and acks every push.
After a short warm-up, this process produces ``rate`` events per second for ``seconds`` seconds straight to
``nudge.events`` (Segment track events, users drawn from the connected ones): ``TRIGGER_SHARE`` of them the
triggering event, the others product views. They are packed as the gateway and the collector pack what browsers and
servers send (:func:`app.batching.topic_batcher`, one record per partition per 5 ms linger), so the worker sees
the records it sees in production; other systems' producers that write one event per record cost the worker more
per event (see the README). Pacing is open-loop: event ``i`` is due at
``start + i / rate`` and latency is measured from that due time, so a stall anywhere, this producer included, counts
against the result.

Matching: each user's events carry strictly increasing millisecond timestamps; a decision records the timestamp of
the event that fired it and the pushed payload carries it, so (user, payload timestamp) names the triggering event
exactly, and latency = receive time (``time.time()`` in the client process) - due time. Reported per run:

- sent: decisions with outcome ``sent`` that the run's events caused, read back from ``nudge.messages`` when the
  wait ends (the truth, whatever the number of triggering events predicts); ``triggers``: triggering events produced;
- delivered: distinct ids of those messages the clients received, waiting up to ``DRAIN_TIMEOUT_S`` after the last
  event; ``missing``: sent and never received; ``duplicates``: frames beyond the first per id; ``other``: ids
  received that are not among those decisions (when the stack runs behind: the warm-up's, or this run's decided
  after the topic was read);
- hops: the decision record's Kafka timestamp (stamped by the worker's producer) splits each latency into event ->
  decision (this producer, the broker, Faust's consumer, the worker's fold and rules) and decision -> browser (the
  worker's producer, the broker, the gateway's deliverer, Redis inbox and pub/sub, the push, the client);
- cpu_percent: CPU used by each process during the run (from ``/proc``), to tell a saturated machine from a slow
  path; ``clients``: the client process's event-loop lag and garbage-collection pauses, ``bench_gc``: this process's
  collections, i.e. the load generators' own share (both freeze their start-up objects, as the gateway does).

Baseline, on the same fresh stack just before the warm-up: the same producer sends the same events at the same rate
to a fresh topic, and a plain aiokafka consumer in this process, with the gateway deliverer's fetch settings, reads
them: one Kafka hop on the same broker and machine. A noisy shared machine moves both alike, so ``ratio_p99`` (e2e
p99 / baseline p99) is the number to compare across machines; the e2e path makes two such hops plus the worker,
Redis and the socket, so about 2 is its floor. A fresh stack per run keeps runs comparable: the embedded broker's
cost per request grows with the size of the topic (measured: one hop at 2,000 records/s took 36 % of a core with
12,000 records in the topic, 91 % with 336,000), so runs on one long-lived stack would each start worse off. Medians
of the runs' percentiles are reported; counts are summed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import resource
import secrets
import statistics
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.batching import topic_batcher
from app.bench_clients import ClientProcess, GcPauses, bench_user
from app.bench_processes import cpu_percent, cpu_seconds
from app.devstack import DevStack, create_topic
from app.events import decode_record, iso_from_ms
from app.offsets import read_range
from app.partitioning import partition_for
from app.percentiles import percentiles
from app.settings import DEFAULT_COLLECTOR_LINGER_MS
from app.settings import DEFAULT_PARTITIONS as PARTITIONS
from app.simulate import load_event
from app.stack_client import end_offsets
from app.tansu_compat import FETCH_MAX_WAIT_MS

GOAL_P99_MS = 50.0
#: Share of the produced events that fire the bench trigger.
TRIGGER_SHARE = 0.05
TRIGGER_EVENT = "Bench Offer Requested"
TRIGGER_NAME = "bench_offer"
TRIGGERS = f"""\
# Written by `nudge bench --e2e`: one trigger, no cooldown, so every triggering event is a message.
cap_per_user_per_day: 1000
triggers:
  {TRIGGER_NAME}:
    description: the end-to-end bench's probe
    when: {{event: {TRIGGER_EVENT}}}
    message: {{title: "Bench offer", body: "An event-to-browser latency probe"}}
    consent: marketing
"""
EVENTS_TOPIC = "nudge.events"
MESSAGES_TOPIC = "nudge.messages"
#: How long to wait after the last event for the last message; a wait with no progress for STALL_S ends sooner.
DRAIN_TIMEOUT_S = 30.0
STALL_S = 5.0
#: A short unmeasured run first: consumers fetching, caches and connections warm.
WARM_UP_S = 3.0
#: The hub closes a socket that sends more than 20 frames/s (acks included): stay well below per user.
MAX_MESSAGES_PER_USER_S = 5.0
#: The trigger file's cap is 1000 messages per user per day: stay well below it on average.
MAX_MESSAGES_PER_USER = 500


async def run(*, clients: int, rate: float, seconds: float, runs: int, partitions: int = PARTITIONS) -> dict[str, Any]:
    check_load(clients=clients, rate=rate, seconds=seconds, runs=runs)
    raise_open_files_limit(clients)
    e2e_runs, baseline_runs, connected = [], [], []
    for index in range(runs):
        _say(f"run {index + 1}/{runs}: starting a fresh stack and {clients:,} clients")
        e2e, baseline, users = await _run_once(
            clients=clients, rate=rate, seconds=seconds, partitions=partitions, label=f"run{index + 1}"
        )
        e2e_runs.append(e2e)
        baseline_runs.append(baseline)
        connected.append(users)
        _say(
            f"run {index + 1}/{runs}: sent {e2e['sent']:,}, delivered {e2e['delivered']:,}, "
            f"p50 {e2e['p50_ms']} ms, p99 {e2e['p99_ms']} ms; baseline p99 {baseline['p99_ms']} ms"
        )
    return _summary(
        e2e_runs,
        baseline_runs,
        clients=clients,
        connected=min(connected),
        rate=rate,
        seconds=seconds,
        partitions=partitions,
    )


async def _run_once(
    *, clients: int, rate: float, seconds: float, partitions: int, label: str
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """One run on a fresh stack: the baseline, a warm-up, then the measured run. Returns both and the clients."""
    budget_s = 300 + 3 * seconds + 2 * DRAIN_TIMEOUT_S
    async with probe_rig(clients=clients, rate=rate, budget_s=budget_s, name="bench-e2e", partitions=partitions) as rig:
        bench = _Bench(rig)
        bench.gc.start()
        try:
            _say(f"{label}: baseline, {rate:,.0f} events/s for {seconds:,.0f} s through one Kafka hop")
            baseline = await bench.baseline_run(label, seconds)
            _say(f"{label}: warming up for {WARM_UP_S:.0f} s")
            await bench.e2e_run("warm-up", WARM_UP_S)
            _say(f"{label}: {rate:,.0f} events/s for {seconds:,.0f} s to {len(rig.users):,} users")
            e2e = await bench.e2e_run(label, seconds)
        finally:
            bench.gc.stop()
    return e2e, baseline, len(rig.users)


@dataclass(frozen=True, slots=True)
class ProbeRig:
    """What :func:`probe_rig` starts: the stack, its connected websocket clients (``users``) and their producer."""

    stack: DevStack
    clients: ClientProcess
    users: list[str]
    events: ProbeProducer


@contextlib.asynccontextmanager
async def probe_rig(
    *, clients: int, rate: float, budget_s: float, name: str, partitions: int = PARTITIONS
) -> AsyncIterator[ProbeRig]:
    """A fresh stack (one worker, one gateway, ``partitions`` per topic) whose only trigger fires on every
    ``TRIGGER_EVENT`` (files under
    ``var/<name>-...``), ``clients`` websocket clients in their own process that stay up at most ``budget_s``, and a
    :class:`ProbeProducer` of ``rate`` events/s for the connected clients' users. Everything stops on exit."""
    root = Path("var") / f"{name}-{os.getpid()}-{secrets.token_hex(3)}"
    root.mkdir(parents=True, exist_ok=True)
    triggers = root / "bench-triggers.yaml"
    triggers.write_text(TRIGGERS)
    env = {
        "NUDGE_TRIGGERS_FILE": str(triggers.resolve()),
        "NUDGE_DEFAULT_CONSENT": "analytics,personalization,marketing",
    }
    async with DevStack(workers=1, gateways=1, partitions=partitions, root=root, extra_env=env) as stack:
        url = f"ws://127.0.0.1:{stack.gateway.port}/v1/ws"
        async with ClientProcess(url, stack.secret, clients, max_seconds=budget_s) as client_process:
            users = [bench_user(index) for index in client_process.connected]
            if not users:
                raise RuntimeError(f"no websocket client could connect; see the gateway log in {root}")
            producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap, linger_ms=DEFAULT_COLLECTOR_LINGER_MS)
            await producer.start()
            try:
                events = ProbeProducer(producer, users, rate=rate, partitions=stack.partitions)
                yield ProbeRig(stack, client_process, users, events)
            finally:
                await producer.stop()


@dataclass
class Produced:
    """What :meth:`ProbeProducer.produce` has sent so far: it fills this in as it goes, so read it while it runs."""

    events: int = 0
    triggers: int = 0
    achieved_rate: float = 0.0
    #: Due time (unix seconds) of each triggering event, by (user id, event timestamp as the payload carries it).
    due: dict[tuple[str, str], float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """One of the probe trigger's decisions, as :func:`probe_decisions` reads it from ``nudge.messages``."""

    user_id: str
    #: The timestamp of the event that fired it, as the pushed payload carries it.
    timestamp: str
    outcome: str
    reason: str | None
    #: The Kafka timestamp of the record: when the worker's producer took it.
    produced_ms: int


class _Bench:
    def __init__(self, rig: ProbeRig) -> None:
        self.stack = rig.stack
        self.clients = rig.clients
        self.events = rig.events
        #: This process's own collections: a pause here delays sends and counts against the stack.
        self.gc = GcPauses()

    async def e2e_run(self, label: str, seconds: float) -> dict[str, Any]:
        bootstrap, partitions = self.stack.broker.bootstrap, self.stack.partitions
        starts = await end_offsets(bootstrap, MESSAGES_TOPIC, partitions)
        await self.clients.ask("messages")  # forget anything received between runs
        await self.clients.ask("stats")
        self.gc.take()
        cpu_before, wall_before = cpu_seconds(), time.monotonic()
        produced = await self.events.produce(EVENTS_TOPIC, label, seconds)
        received = await self._drain(produced.triggers)
        cpu = cpu_percent(cpu_before, cpu_seconds(), time.monotonic() - wall_before)
        # Only the decisions this run's events caused: a backlog can carry the warm-up's into the run.
        decisions = {
            message_id: decision
            for message_id, decision in (await probe_decisions(bootstrap, starts, partitions)).items()
            if (decision.user_id, decision.timestamp) in produced.due
        }
        sent = {message_id for message_id, d in decisions.items() if d.outcome == "sent"}
        # Decisions made while the topic was read are on their way: give them a moment, so that only a message
        # the stack lost counts as missing.
        grace_ends = time.monotonic() + STALL_S
        while not sent <= {m[1] for m in received} and time.monotonic() < grace_ends:
            await asyncio.sleep(0.1)
            received += (await self.clients.ask("messages"))["messages"]
        stats = await self.clients.ask("stats")
        first: dict[str, tuple[str, float, str | None]] = {}
        for index, message_id, received_at, stamp in received:
            first.setdefault(message_id, (bench_user(index), received_at, stamp))
        latencies, to_decision, to_browser = [], [], []
        for message_id, (user, received_at, stamp) in first.items():
            due = produced.due.get((user, stamp or ""))
            if due is None or message_id not in sent:
                continue
            latencies.append(received_at - due)
            produced_at = decisions[message_id].produced_ms / 1000
            to_decision.append(produced_at - due)
            to_browser.append(received_at - produced_at)
        delivered = len(sent & first.keys())
        return {
            "label": label,
            "events": produced.events,
            "achieved_rate": produced.achieved_rate,
            "triggers": produced.triggers,
            "sent": len(sent),
            "suppressed": dict(Counter(d.reason or "?" for d in decisions.values() if d.outcome != "sent")),
            "delivered": delivered,
            "missing": len(sent) - delivered,
            "duplicates": len(received) - len(first),
            "other": len(first.keys() - sent),
            **percentiles(latencies),
            "hops": {"event_to_decision": percentiles(to_decision), "decision_to_browser": percentiles(to_browser)},
            "cpu_percent": cpu,
            "clients": stats,
            "bench_gc": self.gc.take(),
        }

    async def baseline_run(self, label: str, seconds: float) -> dict[str, Any]:
        bootstrap = self.stack.broker.bootstrap
        topic = f"bench.baseline.{label}"
        await create_topic(bootstrap, topic, self.stack.partitions)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,  # as the gateway's deliverer
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, p) for p in range(self.stack.partitions)])
            await consumer.getmany(timeout_ms=200)  # positions known before the first record is due
            latencies: list[float] = []
            total = int(self.events.rate * seconds)

            async def consume() -> None:
                while len(latencies) < total:
                    batches = await consumer.getmany(timeout_ms=100)
                    received_at = time.time()
                    for records in batches.values():
                        for record in records:
                            events: list[Any] = decode_record(record.value)
                            latencies.extend(received_at - event["properties"]["bench_due"] for event in events)

            consuming = asyncio.create_task(consume())
            try:
                await self.events.produce(topic, f"baseline-{label}", seconds, due_in_event=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(consuming), DRAIN_TIMEOUT_S)
            finally:
                consuming.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await consuming
        finally:
            await consumer.stop()
        return {"records": total, "received": len(latencies), **percentiles(latencies)}

    async def _drain(self, expected: int) -> list[list[Any]]:
        """Collect messages until the clients received ``expected``, nothing came for ``STALL_S``, or the timeout."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        received: list[list[Any]] = []
        moved_at = time.monotonic()
        while (now := time.monotonic()) < deadline:
            more = (await self.clients.ask("messages"))["messages"]
            received += more
            if len(received) >= expected:
                break
            if more:
                moved_at = now
            elif now - moved_at > STALL_S:
                break
            await asyncio.sleep(0.1)
        return received


class ProbeProducer:
    """Produces the bench's events open-loop for ``users`` at ``rate``/s: ``TRIGGER_SHARE`` of them trigger.

    Each user's events carry strictly increasing millisecond timestamps, so (user, timestamp) names one event.
    Events are packed per partition as the gateway and the collector pack them (:func:`topic_batcher`).
    """

    def __init__(self, producer: AIOKafkaProducer, users: list[str], *, rate: float, partitions: int) -> None:
        self.producer = producer
        self.users = users
        self.rate = rate
        self.partitions = partitions
        #: Each user's latest event timestamp (ms): the next one is later.
        self._last_ms: dict[str, int] = {}
        self._runs = 0

    async def produce(
        self, topic: str, label: str, seconds: float, *, due_in_event: bool = False, into: Produced | None = None
    ) -> Produced:
        """Produce ``rate`` events/s for ``seconds`` s, open-loop: event ``i`` goes out at ``start + i / rate``.

        Progress goes into ``into`` (a fresh :class:`Produced` if none), which is returned once all are delivered.
        """
        batcher = topic_batcher(self.producer, topic, linger_s=DEFAULT_COLLECTOR_LINGER_MS / 1000)
        #: Submitted and not yet delivered, oldest first: a long soak must not keep every finished one.
        deliveries: deque[asyncio.Task[None]] = deque()
        self._runs += 1
        picker = random.Random(self._runs)
        total = int(self.rate * seconds)
        produced = into if into is not None else Produced()
        start = time.time()
        try:
            while produced.events < total:
                due_now = self._take_due(picker, label, produced, start=start, total=total, due_in_event=due_in_event)
                deliveries.append(asyncio.create_task(batcher.submit(due_now)))
                while deliveries[0].done():
                    deliveries.popleft().result()  # a delivery failure ends the run here
                delay = start + produced.events / self.rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await batcher.drain()
            while deliveries:
                await deliveries.popleft()
        finally:  # stopped (Ctrl-C) or a delivery failed: no delivery left running against a producer about to close
            for task in deliveries:
                task.cancel()
            await asyncio.gather(*deliveries, return_exceptions=True)
        produced.achieved_rate = round(total / (time.time() - start), 1)
        return produced

    def _take_due(
        self, picker: random.Random, label: str, produced: Produced, *, start: float, total: int, due_in_event: bool
    ) -> list[tuple[int, bytes]]:
        """The events due by now (open loop: event ``i`` at ``start + i / rate``), counted into ``produced``."""
        now_due = min(total, int((time.time() - start) * self.rate) + 1)
        due_now: list[tuple[int, bytes]] = []
        while produced.events < now_due:
            due = start + produced.events / self.rate
            user = picker.choice(self.users)
            stamp_ms = max(int(due * 1000), self._last_ms.get(user, 0) + 1)
            self._last_ms[user] = stamp_ms
            stamp = iso_from_ms(stamp_ms)
            triggering = picker.random() < TRIGGER_SHARE
            signal = (TRIGGER_EVENT, {"source": "bench"}) if triggering else None
            event = load_event(user, f"bench-{label}-{produced.events}", stamp, picker=picker, signal=signal)
            if due_in_event:
                event["properties"]["bench_due"] = due
            due_now.append((partition_for(user, self.partitions), orjson.dumps(event)))
            if triggering:
                produced.triggers += 1
                produced.due[(user, stamp)] = due
            produced.events += 1
        return due_now


async def probe_decisions(bootstrap: str, starts: dict[int, int], partitions: int) -> dict[str, Decision]:
    """The bench trigger's decisions put on ``nudge.messages`` since ``starts``, by message id."""
    ends = await end_offsets(bootstrap, MESSAGES_TOPIC, partitions)
    decisions: dict[str, Decision] = {}
    for partition, end in ends.items():
        for record in await read_range(bootstrap, MESSAGES_TOPIC, partition, starts.get(partition, 0), end):
            value = orjson.loads(record.value)
            if value.get("trigger") == TRIGGER_NAME:
                decisions[value["id"]] = Decision(
                    value["userId"], value["timestamp"], value["outcome"], value.get("reason"), record.timestamp
                )
    return decisions


def _summary(
    e2e_runs: list[dict[str, Any]],
    baseline_runs: list[dict[str, Any]],
    *,
    clients: int,
    connected: int,
    rate: float,
    seconds: float,
    partitions: int,
) -> dict[str, Any]:
    def median(runs: list[dict[str, Any]], key: str) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return round(statistics.median(values), 2) if values else None

    def total(key: str) -> int:
        return sum(int(r[key]) for r in e2e_runs)

    p99, baseline_p99 = median(e2e_runs, "p99_ms"), median(baseline_runs, "p99_ms")
    sent, delivered = total("sent"), total("delivered")
    return {
        "bench": "e2e",
        "clients": clients,
        "connected": connected,
        "rate": rate,
        "seconds": seconds,
        "partitions": partitions,
        "runs": len(e2e_runs),
        "trigger_share": TRIGGER_SHARE,
        "triggers": total("triggers"),
        "sent": sent,
        "delivered": delivered,
        "missing": total("missing"),
        "duplicates": total("duplicates"),
        "p50_ms": median(e2e_runs, "p50_ms"),
        "p99_ms": p99,
        "max_ms": max((r["max_ms"] for r in e2e_runs if r["max_ms"] is not None), default=None),
        "hops": {
            hop: {
                "p50_ms": median([r["hops"][hop] for r in e2e_runs], "p50_ms"),
                "p99_ms": median([r["hops"][hop] for r in e2e_runs], "p99_ms"),
            }
            for hop in ("event_to_decision", "decision_to_browser")
        },
        "baseline": {
            "kind": "one Kafka hop: same producer, events and rate; aiokafka consumer with "
            f"fetch_max_wait_ms={FETCH_MAX_WAIT_MS}",
            "p50_ms": median(baseline_runs, "p50_ms"),
            "p99_ms": baseline_p99,
            "max_ms": max((r["max_ms"] for r in baseline_runs if r["max_ms"] is not None), default=None),
        },
        "ratio_p99": round(p99 / baseline_p99, 2) if p99 is not None and baseline_p99 else None,
        "goal_p99_ms": GOAL_P99_MS,
        "goal_met": p99 is not None and p99 < GOAL_P99_MS and delivered == sent and connected == clients,
        "runs_detail": [{**e2e, "baseline": base} for e2e, base in zip(e2e_runs, baseline_runs, strict=True)],
    }


def check_load(*, clients: int, rate: float, seconds: float, runs: int) -> None:
    """Raise ``ValueError`` for a load the probe trigger cannot carry: the gateway's rate limit, the daily cap."""
    if clients < 1 or rate <= 0 or seconds <= 0 or runs < 1:
        raise ValueError("--clients, --rate, --seconds and --runs must be positive")
    per_user_s = rate * TRIGGER_SHARE / clients
    if per_user_s > MAX_MESSAGES_PER_USER_S:
        raise ValueError(
            f"{per_user_s:.1f} messages/s per user would trip the gateway's rate limit on acks: "
            f"use at least {rate * TRIGGER_SHARE / MAX_MESSAGES_PER_USER_S:.0f} clients for this rate"
        )
    if per_user_s * (WARM_UP_S + seconds) > MAX_MESSAGES_PER_USER:
        raise ValueError("so many messages per user would reach the daily cap: use more clients or fewer seconds")


def raise_open_files_limit(clients: int) -> None:
    """Each socket is a file in the clients and in the gateway (children inherit the limit): make room."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = clients + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def _say(line: str) -> None:
    print(f"e2e bench: {line}", file=sys.stderr, flush=True)
