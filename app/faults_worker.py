"""Fault suite: worker faults -- a SIGKILL mid-batch, a SIGTERM while the group rebalances (see :mod:`app.faults`).

Each fault feeds the same deterministic stream (simulated shoppers with a fixed seed, packed per partition the way
the collector packs them, paced so that it still flows when the fault strikes) to two fresh stacks of two workers:
one left alone, one disturbed. Once a stack has processed every record, :func:`final_state` reads what the API shows
and :func:`compare` holds the disturbed run against the undisturbed one:

- every user's profile (``GET /v1/users/{id}/profile`` without its reading-time parts): a user missing or with fewer
  events is *lost*, more events *doubled*, any other difference goes to ``diff``;
- every user's decision records (``GET /v1/users/{id}/messages``: id, trigger, outcome, reason) and the decision ids
  on ``nudge.messages``: an id missing from either is lost, an id twice in a user's records doubled;
- how much each partition's models learned (``GET /v1/models``): more than undisturbed is doubled;
- records, events and skipped redeliveries (``GET /v1/stats``), for the details.

The rule files make all of this a function of the stream alone: triggers fire on events and segment entries, never
on inactivity (which the partition clock measures partly in wall time); segments read no clock variable; and the
label horizon (a week) is longer than the stream (about two days of shop time), so labels resolve only at purchases,
in stream order, and every model learns the same labels in every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.devstack import DevStack, Node
from app.events import user_key
from app.faults import Fault, FaultReport
from app.offsets import read_range
from app.settings import DEFAULT_PARTITIONS as PARTITIONS
from app.simulate import simulate_events
from app.stack_client import end_offsets, fetch_profiles, get_json, produce_batched, stable, wait_for

SEED = 61
WORKERS = 2
#: Longer than the simulated stream, so no label expires on the (partly wall-time) partition clock.
LABEL_HORIZON_S = 7 * 86_400
START_TIMEOUT_S = 90.0
#: From the fault (or the end of the stream) until every record is processed and the group has settled.
SETTLE_TIMEOUT_S = 120.0
#: After settling, how long a disturbed run may take to converge on the undisturbed state before it counts as a diff.
CONVERGE_TIMEOUT_S = 30.0
SIGTERM_EXIT_TIMEOUT_S = 30.0
MAX_DIFF_LINES = 12

SEGMENTS = """\
segments:
  deep_browse:
    description: more than 5 views of one category this session
    when: session_top_category_views > 5
  full_cart:
    when: cart_items >= 3
  buyer:
    when: orders >= 1
"""
CONTENT = """\
default:
  banner: {title: "Welcome"}
rules:
  - segment: full_cart
    blocks:
      cta: {text: "Check out", href: "/cart"}
"""
TRIGGERS = """\
cap_per_user_per_day: 4
triggers:
  cart_growing:
    when: {event: Product Added}
    if: cart_items >= 2
    message: {title: "{cart_items} items in your cart"}
    cooldown: 30m
    consent: marketing
    holdout: 20
  thanks:
    when: {event: Order Completed}
    message: {title: "Thank you for your order"}
    consent: marketing
  deep_browse:
    when: {entered: deep_browse}
    message: {title: "You might also like {recommended_item}"}
    cooldown: 6h
    consent: personalization
"""


def stream(size: int) -> list[dict[str, Any]]:
    """The deterministic stream of ``size`` events: about fifty per simulated shopper."""
    events = simulate_events(users=max(100, size // 50), events=size, seed=SEED)
    return [e for e in events if isinstance(e, dict)]


# -- one run -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Strike:
    """What a fault did, from the moment it struck: the measurements start there."""

    at: float
    #: ``nudge.events`` end offsets at the fault (where :func:`_recovery` starts measuring).
    ends: dict[int, int]
    #: The producer had not finished: the fault hit a flowing stream.
    flowing: bool
    #: The worker the fault struck: not counted among the workers that recover.
    victim: Node | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    #: Seconds until a signalled worker exited (``None``: it did not exit within its deadline and was killed).
    exited: asyncio.Task[float | None] | None = None


#: Waits for its moment in a running stack (the stream is being produced by the task), strikes, returns what it did.
Disturb = Callable[[DevStack, asyncio.Task[None], int], Awaitable[Strike]]


@dataclass(frozen=True)
class FinalState:
    """What the API and ``nudge.messages`` show once every record is processed."""

    #: user -> profile view without reading-time parts (``None``: no profile).
    profiles: dict[str, dict[str, Any] | None]
    #: user -> decision records as (id, trigger, outcome, reason), oldest first.
    decisions: dict[str, list[tuple[str, str, str, str | None]]]
    #: partition -> (everything learned, labels the intent model learned).
    learned: dict[int, tuple[int, int]]
    #: Decision ids on ``nudge.messages``, repeats included.
    published: list[str]
    #: ``/v1/stats`` counters summed over the live workers.
    counters: dict[str, int]


@dataclass(frozen=True)
class Run:
    state: FinalState
    strike: Strike | None
    recovery_s: float | None
    drained_s: float
    exited_s: float | None


async def run_stream(
    events: list[dict[str, Any]],
    *,
    rate: float,
    root: Path,
    disturb: Disturb | None = None,
    converge_on: FinalState | None = None,
) -> Run:
    """Produce ``events`` at ``rate`` into a fresh two-worker stack, ``disturb`` it, wait until it has processed
    everything, and read its final state (waiting up to :data:`CONVERGE_TIMEOUT_S` for it to equal ``converge_on``)."""
    users = sorted({user_key(e) for e in events})
    env = _rule_files(root)
    # keep_files: the logs stay (in the caller's scratch directory) until the comparison is done.
    stack = DevStack(
        workers=WORKERS, gateways=0, partitions=PARTITIONS, root=root / "stack", extra_env=env, keep_files=True
    )
    async with stack:
        await wait_for(lambda: _split(stack), timeout=START_TIMEOUT_S, what="every worker to hold partitions")
        started = time.monotonic()
        producing = asyncio.create_task(
            produce_batched(stack.broker.bootstrap, events, partitions=PARTITIONS, rate=rate)
        )
        try:
            strike = await disturb(stack, producing, len(events)) if disturb else None
            recovery_s = await _recovery(stack, strike) if strike is not None else None
            await producing
        finally:
            if not producing.done():
                producing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await producing
        ends = await end_offsets(stack.broker.bootstrap, "nudge.events", PARTITIONS)
        await _wait_processed(stack, ends, what="every record")
        await wait_for(lambda: _settled(stack), timeout=SETTLE_TIMEOUT_S, what="the group to settle")
        drained_s = time.monotonic() - started
        state = await final_state(stack, users)
        deadline = time.monotonic() + CONVERGE_TIMEOUT_S
        while converge_on is not None and _differs(converge_on, state) and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            state = await final_state(stack, users)
        exited_s = await strike.exited if strike is not None and strike.exited is not None else None
        return Run(state, strike, recovery_s, drained_s, exited_s)


def _rule_files(root: Path) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    files = {"SEGMENTS": SEGMENTS, "CONTENT": CONTENT, "TRIGGERS": TRIGGERS}
    env = {}
    for name, text in files.items():
        path = root / f"{name.lower()}.yaml"
        path.write_text(text)
        env[f"NUDGE_{name}_FILE"] = str(path)
    return {**env, "NUDGE_LABEL_HORIZON_S": str(LABEL_HORIZON_S)}


def live(stack: DevStack, *, besides: Node | None = None) -> list[Node]:
    """The worker processes still running, leaving out ``besides`` (one that was told to stop)."""
    return [n for n in stack.nodes if n is not besides and n.process is not None and n.process.poll() is None]


async def _answer(node: Node, api_key: str, path: str) -> Any:
    """``GET path`` on one node; ``None`` while it does not answer 200 (starting, rebalancing, stopping)."""
    try:
        status, body = await get_json(f"{node.url}{path}", api_key=api_key)
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None
    return body if status == 200 else None


async def held_partitions(stack: DevStack, node: Node) -> set[int] | None:
    described = await _answer(node, stack.api_key, "/v1/models")
    return None if described is None else {int(p) for p in described["partitions"]}


async def _split(stack: DevStack, *, besides: Node | None = None) -> bool:
    """Every live worker holds partitions, and each partition has exactly one holder."""
    held = [await held_partitions(stack, node) for node in live(stack, besides=besides)]
    if any(not h for h in held):
        return False
    counts = Counter(p for h in held if h for p in h)
    return sorted(counts) == list(range(PARTITIONS)) and set(counts.values()) == {1}


async def _processed(stack: DevStack, *, besides: Node | None = None) -> dict[int, int]:
    """Per partition, the last offset any live worker processed."""
    last: dict[int, int] = {}
    for node in live(stack, besides=besides):
        for partition, offset in (await _processed_by(stack, node)).items():
            last[partition] = max(offset, last.get(partition, -1))
    return last


async def _processed_by(stack: DevStack, node: Node) -> dict[int, int]:
    counters = await _answer(node, stack.api_key, "/v1/stats")
    return {int(p): last for p, (_, last) in (counters or {}).get("offsets", {}).items()}


async def committed_offsets(stack: DevStack) -> dict[int, int]:
    """The ``nudge.events`` offsets the workers' consumer group has committed (the group id is the app id)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.broker.bootstrap, group_id=stack.app_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        committed = {p: await consumer.committed(TopicPartition("nudge.events", p)) for p in range(PARTITIONS)}
    finally:
        await consumer.stop()
    return {p: offset for p, offset in committed.items() if offset is not None}


async def _wait_processed(stack: DevStack, ends: dict[int, int], *, what: str) -> None:
    async def done() -> bool:
        processed = await _processed(stack)
        return all(processed.get(p, -1) >= end - 1 for p, end in ends.items() if end > 0)

    try:
        await wait_for(done, timeout=SETTLE_TIMEOUT_S, what=f"{what} to be processed")
    except TimeoutError as error:
        raise AssertionError(f"{error}: {await _progress(stack)}") from None


async def _settled(stack: DevStack, *, besides: Node | None = None) -> bool:
    healthy = [await _health(node) == 200 for node in live(stack, besides=besides)]
    return all(healthy) and await _split(stack, besides=besides)


async def _recovery(stack: DevStack, strike: Strike) -> float:
    """Seconds from the fault until the stack is back to live processing: the group has settled without the victim,
    and the other workers have processed every record that was on the topic a moment (one poll) earlier."""
    earlier = strike.ends
    while time.monotonic() - strike.at < SETTLE_TIMEOUT_S:
        if await _settled(stack, besides=strike.victim):
            processed = await _processed(stack, besides=strike.victim)
            if all(processed.get(p, -1) >= end - 1 for p, end in earlier.items() if end > 0):
                return time.monotonic() - strike.at
        earlier = await end_offsets(stack.broker.bootstrap, "nudge.events", PARTITIONS)
        await asyncio.sleep(0.1)
    raise AssertionError(f"not recovered {SETTLE_TIMEOUT_S} s after the fault: {await _progress(stack, strike.victim)}")


async def _progress(stack: DevStack, victim: Node | None = None) -> str:
    """Who holds what and how far each partition is processed, for a failure message."""
    ends = await end_offsets(stack.broker.bootstrap, "nudge.events", PARTITIONS)
    processed = await _processed(stack, besides=victim)
    holders = {node.log_path.name: await held_partitions(stack, node) for node in live(stack, besides=victim)}
    behind = {p: (processed.get(p, -1), end - 1) for p, end in ends.items() if processed.get(p, -1) < end - 1}
    return f"held {holders}; (last processed, last offset) of partitions behind: {behind}"


async def _health(node: Node) -> int | None:
    """The status ``/health`` answers (503 while the worker rebalances); ``None`` if it does not answer."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(f"{node.url}/health") as response,
        ):
            return response.status
    except (TimeoutError, aiohttp.ClientError):
        return None


async def _folded(stack: DevStack) -> int:
    answers = [await _answer(node, stack.api_key, "/v1/stats") for node in live(stack)]
    return sum(a["folded"] for a in answers if a)


async def _strike_now(stack: DevStack, producing: asyncio.Task[None]) -> tuple[float, dict[int, int], bool]:
    at, flowing = time.monotonic(), not producing.done()
    return at, await end_offsets(stack.broker.bootstrap, "nudge.events", PARTITIONS), flowing


# -- the final state and the comparison ----------------------------------------------------------------------------


async def final_state(stack: DevStack, users: list[str]) -> FinalState:
    node = live(stack)[0]
    views = await fetch_profiles(stack, users, base_url=node.url)
    profiles = {user: None if view is None else stable(view) for user, view in views.items()}
    learned: dict[int, tuple[int, int]] = {}
    counters: Counter[str] = Counter()
    for worker in live(stack):
        described = await _answer(worker, stack.api_key, "/v1/models")
        for partition, models in (described or {}).get("partitions", {}).items():
            learned[int(partition)] = (models["learned"], models["intent"]["learned"])
        answered = await _answer(worker, stack.api_key, "/v1/stats") or {}
        counters.update({k: v for k, v in answered.items() if k in ("records", "events", "folded", "duplicates")})
    ends = await end_offsets(stack.broker.bootstrap, "nudge.messages", PARTITIONS)
    published = []
    for partition, end in ends.items():
        records = await read_range(stack.broker.bootstrap, "nudge.messages", partition, 0, end)
        published += [orjson.loads(r.value)["id"] for r in records]
    return FinalState(profiles, await _decisions(stack, node, users), learned, published, dict(counters))


async def _decisions(
    stack: DevStack, node: Node, users: list[str]
) -> dict[str, list[tuple[str, str, str, str | None]]]:
    slots = asyncio.Semaphore(32)
    headers = {"Authorization": f"Bearer {stack.api_key}"}

    async def one(session: aiohttp.ClientSession, user: str) -> tuple[str, list[tuple[str, str, str, str | None]]]:
        async with slots, session.get(f"{node.url}/v1/users/{user}/messages") as response:
            assert response.status == 200, await response.text()
            records = (await response.json())["messages"]
        return user, [(m["id"], m["trigger"], m["outcome"], m["reason"]) for m in reversed(records)]

    async with aiohttp.ClientSession(headers=headers) as session:
        return dict(await asyncio.gather(*(one(session, user) for user in users)))


@dataclass
class Comparison:
    lost: int = 0
    doubled: int = 0
    diff: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def compare(calm: FinalState, hit: FinalState) -> Comparison:
    """Hold a disturbed run's final state against the undisturbed run's; see the module docstring for the rules."""
    result = Comparison()
    _compare_profiles(calm, hit, result)
    _compare_decisions(calm, hit, result)
    _compare_models(calm, hit, result)
    return result


def _differs(calm: FinalState, hit: FinalState) -> bool:
    """Still different (learning lost is left out: it never comes back, so waiting for it is pointless)."""
    result = compare(calm, hit)
    return bool(result.lost or result.doubled or result.diff)


def _events(view: dict[str, Any] | None) -> int:
    return 0 if view is None else sum(view["event_counts"].values())


def _compare_profiles(calm: FinalState, hit: FinalState, result: Comparison) -> None:
    equal = missing = 0
    for user, want in calm.profiles.items():
        got = hit.profiles.get(user)
        short = _events(want) - _events(got)
        if got == want:
            equal += 1
            continue
        if got is None:
            missing += 1
            result.diff.append(f"profile {user}: missing ({_events(want)} events undisturbed)")
        elif want is None:
            result.diff.append(f"profile {user}: {_events(got)} events, no profile undisturbed")
        elif short:
            result.diff.append(f"profile {user}: {_events(got)} events, {_events(want)} undisturbed")
        else:
            fields = sorted(k for k in want if got.get(k) != want[k])
            result.diff.append(f"profile {user}: {', '.join(fields)} differ")
        result.lost += max(short, 0)
        result.doubled += max(-short, 0)
    result.details["profiles"] = {
        "users": len(calm.profiles),
        "equal": equal,
        "missing": missing,
        "events": sum(_events(v) for v in calm.profiles.values()),
        "events_disturbed": sum(_events(v) for v in hit.profiles.values()),
    }


def _compare_decisions(calm: FinalState, hit: FinalState, result: Comparison) -> None:
    lost_records = twice = 0
    for user, want in calm.decisions.items():
        got = hit.decisions.get(user, [])
        if got == want:
            continue
        ids = Counter(d[0] for d in got)
        repeated = sum(n - 1 for n in ids.values())
        missing = [d for d in want if d[0] not in ids]
        twice += repeated
        lost_records += len(missing)
        if missing:
            result.diff.append(f"decisions of {user}: {len(missing)} missing, e.g. {missing[0]}")
        if repeated:
            result.diff.append(f"decisions of {user}: {repeated} recorded twice")
        if not missing and not repeated:
            result.diff.append(f"decisions of {user}: {got} instead of {want}")
    published, published_hit = Counter(calm.published), Counter(hit.published)
    unpublished = sorted(set(published) - set(published_hit))
    if unpublished:
        result.diff.append(f"nudge.messages: {len(unpublished)} decision ids never published, e.g. {unpublished[0]}")
    strange = sorted(set(published_hit) - set(published))
    if strange:
        result.diff.append(f"nudge.messages: {len(strange)} decision ids the undisturbed run never made")
    result.lost += lost_records + len(unpublished)
    result.doubled += twice
    result.details["decisions"] = {
        "records": sum(len(d) for d in calm.decisions.values()),
        "records_disturbed": sum(len(d) for d in hit.decisions.values()),
        "sent": sum(1 for ds in calm.decisions.values() for d in ds if d[2] == "sent"),
        "published": len(calm.published),
        "published_disturbed": len(hit.published),
        # The same record produced again after a redelivery: same id, which the gateway and the SDK drop.
        "republished": sum(published_hit.values()) - len(published_hit),
        "republished_undisturbed": sum(published.values()) - len(published),
    }


def _compare_models(calm: FinalState, hit: FinalState, result: Comparison) -> None:
    lost: dict[str, int] = {}
    for partition, (want, _) in sorted(calm.learned.items()):
        got = hit.learned.get(partition)
        if got is None:
            result.diff.append(f"models of partition {partition}: not held by any worker")
            continue
        if got[0] > want:
            result.doubled += got[0] - want
            result.diff.append(f"models of partition {partition}: learned {got[0]}, {want} undisturbed")
        elif got[0] < want:
            lost[str(partition)] = want - got[0]
    result.details["models"] = {
        "learned": sum(want for want, _ in calm.learned.values()),
        "learned_disturbed": sum(got for got, _ in hit.learned.values()),
        "intent_labels": sum(labels for _, labels in calm.learned.values()),
        "intent_labels_disturbed": sum(labels for _, labels in hit.learned.values()),
    }
    if lost:
        result.details["learning_lost"] = lost


# -- the faults ------------------------------------------------------------------------------------------------------


async def worker_sigkill(size: int) -> FaultReport:
    """SIGKILL one of two workers mid-batch while the stream flows, restart it, and compare."""

    async def disturb(stack: DevStack, producing: asyncio.Task[None], total: int) -> Strike:
        victim = stack.nodes[1]
        held = await held_partitions(stack, victim) or set()
        processed: dict[int, int] = {}

        async def a_third_folded_and_victim_mid_batch() -> bool:
            # Mid-batch: the victim has processed records whose offsets it has not committed yet.
            if await _folded(stack) < total // 3:
                return False
            processed.clear()
            processed.update(await _processed_by(stack, victim))
            committed = await committed_offsets(stack)
            return any(offset >= committed.get(p, 0) for p, offset in processed.items() if p in held)

        await wait_for(a_third_folded_and_victim_mid_batch, timeout=SETTLE_TIMEOUT_S, what="the victim mid-batch")
        victim.kill()
        at, ends, flowing = await _strike_now(stack, producing)
        committed = await committed_offsets(stack)
        # The same worker comes back (same data directory and log), as a supervisor would restart it.
        restarted = stack.new_worker(1)
        restarted.start()
        stack.nodes[1] = restarted
        notes = {
            "victim_partitions": sorted(held),
            # Records the victim processed but had not committed: the survivors read them again.
            "uncommitted_records_at_kill": sum(
                max(last + 1 - committed.get(p, 0), 0) for p, last in processed.items() if p in held
            ),
            "restarted": True,
        }
        return Strike(at, ends, flowing, victim, notes)

    return await _fault(
        "worker-sigkill",
        size,
        disturb,
        duration_s=8.0,
        learning_loss=(
            "a crash loses the learning since the last model snapshot (written at each offset commit, every second; "
            "see app/learning.py): the insights that held the resolved samples were already in their changelog, "
            "so the redelivered records are skipped, not learned again"
        ),
    )


async def worker_sigterm_rebalance(size: int) -> FaultReport:
    """Start a third worker while the stream flows and SIGTERM another one as soon as the group rebalances."""

    async def disturb(stack: DevStack, producing: asyncio.Task[None], total: int) -> Strike:
        victim = stack.nodes[1]

        async def a_tenth_folded() -> bool:
            return await _folded(stack) >= total // 10

        await wait_for(a_tenth_folded, timeout=SETTLE_TIMEOUT_S, what="a tenth of the events folded")
        joiner = stack.new_worker(WORKERS)
        joiner.start()
        stack.nodes.append(joiner)
        joined = time.monotonic()

        async def rebalancing() -> bool:
            joiner.check_alive()
            return await _health(victim) == 503

        await wait_for(rebalancing, timeout=START_TIMEOUT_S, what="the victim to see the group rebalance")
        victim.terminate()
        at, ends, flowing = await _strike_now(stack, producing)
        notes = {"third_worker_to_rebalance_s": round(at - joined, 2)}
        exited = asyncio.create_task(_exit_time(victim, since=at))
        return Strike(at, ends, flowing, victim, notes, exited=exited)

    return await _fault("worker-sigterm-rebalance", size, disturb, duration_s=16.0, learning_loss=None)


async def _exit_time(node: Node, *, since: float) -> float | None:
    """Seconds from ``since`` until ``node`` exits; ``None`` (and a SIGKILL) past :data:`SIGTERM_EXIT_TIMEOUT_S`."""
    assert node.process is not None
    while node.process.poll() is None:
        if time.monotonic() - since > SIGTERM_EXIT_TIMEOUT_S:
            node.kill()
            return None
        await asyncio.sleep(0.1)
    return round(time.monotonic() - since, 2)


async def _fault(
    name: str, size: int, disturb: Disturb, *, duration_s: float, learning_loss: str | None
) -> FaultReport:
    """Run the stream undisturbed, then disturbed, and report the comparison.

    ``duration_s``: how long producing the stream takes (it must outlast the wait for the fault); ``learning_loss``:
    why models may legitimately have learned less in the disturbed run, or ``None`` if that counts as a difference.
    """
    events = stream(size)
    rate = len(events) / duration_s
    with tempfile.TemporaryDirectory(prefix=f"nudge-{name}-") as scratch:
        root = Path(scratch)
        calm = await run_stream(events, rate=rate, root=root / "undisturbed")
        try:
            hit = await run_stream(events, rate=rate, root=root / "disturbed", disturb=disturb, converge_on=calm.state)
        except BaseException:
            print(f"fault {name}: the disturbed run broke; logs kept in {_keep_logs(root, name)}", file=sys.stderr)
            raise
        compared = compare(calm.state, hit.state)
        logs = None
        if not hit.strike or not hit.strike.flowing:
            compared.diff.append("the stream had stopped before the fault: it did not hit a flowing stream")
        if hit.strike is not None and hit.strike.exited is not None and hit.exited_s is None:
            compared.diff.append(f"the signalled worker did not exit within {SIGTERM_EXIT_TIMEOUT_S} s")
        lost_learning = compared.details.get("learning_lost")
        if lost_learning and learning_loss is None:
            compared.diff.append(f"models learned less than undisturbed (partition: labels): {lost_learning}")
        if compared.diff:
            logs = _keep_logs(root, name)
    details: dict[str, Any] = {
        "users": len(calm.state.profiles),
        "workers": WORKERS,
        "partitions": PARTITIONS,
        "rate_per_s": round(rate),
        "fault": {
            **(hit.strike.notes if hit.strike else {}),
            "stream_flowing": bool(hit.strike and hit.strike.flowing),
        },
        **({"signalled_worker_exited_s": hit.exited_s} if hit.exited_s is not None else {}),
        "drained_s": {"undisturbed": round(calm.drained_s, 2), "disturbed": round(hit.drained_s, 2)},
        "stats": {"undisturbed": calm.state.counters, "disturbed": hit.state.counters},
        **compared.details,
        **({"learning_lost_why": learning_loss} if lost_learning and learning_loss else {}),
        "duplicate_pops": "no gateway runs here: repeated decision records on nudge.messages are under "
        "decisions.republished (the gateway and the SDK drop repeats by id); app/faults_delivery.py counts pop-ups",
        **({"logs": logs} if logs else {}),
        "diff": _shorten(compared.diff),
    }
    return FaultReport(
        fault=name,
        events=len(events),
        lost=compared.lost,
        doubled=compared.doubled,
        duplicate_pops=0,
        recovery_s=round(hit.recovery_s or 0.0, 2),
        details=details,
    )


def _shorten(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_DIFF_LINES:
        return lines
    return [*lines[:MAX_DIFF_LINES], f"... and {len(lines) - MAX_DIFF_LINES} more"]


def _keep_logs(root: Path, name: str) -> str:
    """Copy a failed run's logs and rule files out of the scratch directory, to read after the report."""
    kept = Path(tempfile.gettempdir()) / f"nudge-faults-{name}-{int(time.time())}"
    with contextlib.suppress(OSError):
        shutil.copytree(root, kept, ignore=shutil.ignore_patterns("worker-[0-9]", "gateway-[0-9]"))
    return str(kept)


FAULTS: dict[str, Fault] = {
    "worker-sigkill": worker_sigkill,
    "worker-sigterm-rebalance": worker_sigterm_rebalance,
}
