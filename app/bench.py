"""``nudge bench``: events/s through ingest and the profile fold, against a plain Faust baseline, in one run.

Each run starts a fresh embedded broker, fills the events topic with the same simulated events, then starts one
worker and times it from its first to its last processed record (worker start-up excluded; the broker is idle
apart from serving the worker):

- nudge: records packed by the collector's :class:`app.batching.PartitionBatcher` into envelopes of about
  ``envelope_events`` events, consumed by ``nudge worker`` (validation, fold, scoring, segments, triggers, bulk
  changelog writes);
- baseline: one event per record keyed by user id, consumed by :mod:`app.baseline` (one table write per event).

Medians of ``runs`` runs of each side are reported with their ratio.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from app.devstack import DevStack, EmbeddedBroker, Node, create_topic, free_port
from app.events import user_key
from app.settings import DEFAULT_COLLECTOR_LINGER_MS
from app.settings import DEFAULT_PARTITIONS as PARTITIONS
from app.simulate import simulate_events
from app.stack_client import end_offsets, produce_batched

RUN_TIMEOUT_S = 600.0
#: The topic is filled before the worker starts, unpaced, ``envelope_events * PARTITIONS`` events per submit.
FILL_LINGER_S = 0.02
#: The issue's goal for one worker, events/s.
GOAL_EVENTS_PER_S = 20_000
#: Events per batch envelope unless told: what the collector's linger packs for one partition at the goal's rate
#: (12 with a 5 ms linger and 8 partitions).
ENVELOPE_EVENTS = GOAL_EVENTS_PER_S * DEFAULT_COLLECTOR_LINGER_MS // 1000 // PARTITIONS
#: What a backlog of simulated events packs (the batcher's 256 KB bound makes it about 480); it flatters Nudge, whose
#: per-user work is per envelope: the simulator's users act a few hundred events apart, real ones much further.
BACKLOG_ENVELOPE_EVENTS = 625


async def run(*, events: int, users: int, runs: int, envelope_events: int = ENVELOPE_EVENTS) -> dict[str, Any]:
    """Nudge's worker against the plain Faust baseline on the same events; ``envelope_events`` shapes the fill.

    Nudge's cost per event depends on the envelopes: a user's events in one envelope are folded, stored and
    written to the changelogs once. The collector's envelopes hold what arrived for a partition in 5 ms, so at a
    live rate of R events/s they hold about R / 200 / partitions events; a backlog is read in fuller ones.
    """
    corpus = [e for e in simulate_events(users=users, events=events, seed=11) if isinstance(e, dict)]
    nudge_rates, baseline_rates, envelopes = [], [], []
    for index in range(runs):
        rate, records = await _run_nudge(corpus, envelope_events)
        nudge_rates.append(rate)
        envelopes.append(len(corpus) / records)
        baseline_rates.append(await _run_baseline(corpus))
        print(
            f"bench run {index + 1}/{runs}: nudge {nudge_rates[-1]:,.0f} events/s, "
            f"baseline {baseline_rates[-1]:,.0f} events/s",
            file=sys.stderr,
            flush=True,
        )
    nudge, baseline = statistics.median(nudge_rates), statistics.median(baseline_rates)
    return {
        "events": len(corpus),
        "users": users,
        "runs": runs,
        "events_per_s": round(nudge),
        "baseline_events_per_s": round(baseline),
        "ratio": round(nudge / baseline, 2),
        "envelope_events": round(statistics.median(envelopes), 1),
        "events_per_s_runs": [round(r) for r in nudge_rates],
        "baseline_events_per_s_runs": [round(r) for r in baseline_rates],
    }


async def _run_nudge(corpus: list[dict[str, Any]], envelope_events: int) -> tuple[float, int]:
    """Events/s of one worker over ``corpus``, and how many records (envelopes) carried them."""
    stack = DevStack(workers=0, gateways=0, partitions=PARTITIONS)
    async with stack:
        await fill(stack.broker.bootstrap, corpus, envelope_events)
        records = sum((await end_offsets(stack.broker.bootstrap, "nudge.events", PARTITIONS)).values())
        worker = stack.new_worker(0)
        worker.start()
        stack.nodes.append(worker)
        stats = await wait_until_processed(worker, stack.api_key, len(corpus))
        return len(corpus) / (stats["last_event_at"] - stats["first_event_at"]), records


async def fill(bootstrap: str, corpus: list[dict[str, Any]], envelope_events: int = ENVELOPE_EVENTS) -> None:
    """``nudge.events`` holding ``corpus`` in envelopes of about ``envelope_events`` events."""
    chunk = envelope_events * PARTITIONS
    await produce_batched(bootstrap, corpus, partitions=PARTITIONS, linger_s=FILL_LINGER_S, chunk=chunk)


async def _run_baseline(corpus: list[dict[str, Any]]) -> float:
    root = Path("var") / f"bench-baseline-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(log_path=root / "tansu.log")
    broker.start()
    port = free_port()
    env = {**os.environ, "BASELINE_BROKER_URL": f"kafka://{broker.bootstrap}", "BASELINE_WEB_PORT": str(port)}
    log = open(root / "worker.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "app.baseline", "--datadir", str(root / "data"), "worker", "-l", "info"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        await _produce_single(broker.bootstrap, corpus)
        started = time.monotonic()
        first: float | None = None
        async with aiohttp.ClientSession() as session:
            while time.monotonic() - started < RUN_TIMEOUT_S:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/stats") as response:
                        done = (await response.json())["events"]
                except aiohttp.ClientError:
                    done = 0
                if process.poll() is not None:
                    raise RuntimeError(f"baseline worker exited with {process.returncode}; see {root}/worker.log")
                now = time.monotonic()
                if done and first is None:
                    first, first_done = now, done
                if done >= len(corpus):
                    assert first is not None
                    return (done - first_done) / max(now - first, 1e-9)
                await asyncio.sleep(0.05)
        raise TimeoutError("baseline did not finish")
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)


async def _produce_single(bootstrap: str, corpus: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        await create_topic(bootstrap, "baseline.events", PARTITIONS)
        for event in corpus:
            await producer.send("baseline.events", orjson.dumps(event), key=user_key(event).encode())
        await producer.flush()
    finally:
        await producer.stop()


async def wait_until_processed(worker: Node, api_key: str, count: int) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {api_key}"}) as session:
        while time.monotonic() < deadline:
            worker.check_alive()
            try:
                async with session.get(f"{worker.url}/v1/stats") as response:
                    stats = await response.json()
                if stats["events"] >= count:
                    return stats
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError(f"worker did not process {count} events in {RUN_TIMEOUT_S} s")
