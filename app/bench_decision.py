"""``nudge bench --decision``: decision API latency at a fixed request rate on one worker, against ``/health``.

One embedded stack with one worker is seeded with simulated shoppers (profiles, scores, segments). Then, per run,
an open-loop client sends ``rate`` requests per second for ``seconds`` seconds: request ``i`` is due at
``start + i / rate`` whatever happened to the earlier ones, and its latency is measured from that due time (so a
stall counts against the server, not hidden by a client that waits: no coordinated omission). Each run measures
``GET /v1/users/{id}/decision`` for random seeded users, then ``GET /health`` at the same rate: the web stack's own
floor on this machine, in the same run. Medians of the runs' percentiles are reported.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from app.bench import BACKLOG_ENVELOPE_EVENTS, PARTITIONS, fill, wait_until_processed
from app.devstack import DevStack
from app.events import user_key
from app.percentiles import percentiles
from app.simulate import simulate_events

GOAL_P99_MS = 5.0


async def run(*, rate: float, seconds: float, runs: int, users: int, events: int) -> dict[str, Any]:
    corpus = [e for e in simulate_events(users=users, events=events, seed=5) if isinstance(e, dict)]
    user_ids = sorted({user_key(event) for event in corpus})
    async with DevStack(workers=1, gateways=0, partitions=PARTITIONS) as stack:
        await fill(stack.broker.bootstrap, corpus, BACKLOG_ENVELOPE_EVENTS)  # the shape does not matter here
        await wait_until_processed(stack.nodes[0], stack.api_key, len(corpus))
        headers = {"Authorization": f"Bearer {stack.api_key}"}
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
            picker = random.Random(7)

            def decision_url() -> str:
                return f"{stack.http}/v1/users/{picker.choice(user_ids)}/decision"

            def health_url() -> str:
                return f"{stack.http}/health"

            await _open_loop(session, decision_url, rate=rate, seconds=1.0)  # warm-up: connections, caches
            decision_runs, health_runs = [], []
            for index in range(runs):
                decision_runs.append(await _open_loop(session, decision_url, rate=rate, seconds=seconds))
                health_runs.append(await _open_loop(session, health_url, rate=rate, seconds=seconds))
                print(
                    f"decision bench run {index + 1}/{runs}: decision p99 {decision_runs[-1]['p99_ms']} ms, "
                    f"health p99 {health_runs[-1]['p99_ms']} ms",
                    file=sys.stderr,
                    flush=True,
                )
    decision, health = _median(decision_runs), _median(health_runs)
    return {
        "rate": rate,
        "seconds": seconds,
        "runs": runs,
        "users": len(user_ids),
        "decision": decision,
        "baseline_health": health,
        "p99_ratio_to_health": round(decision["p99_ms"] / max(health["p99_ms"], 1e-9), 2),
        "goal_p99_ms": GOAL_P99_MS,
        "goal_met": decision["p99_ms"] < GOAL_P99_MS and decision["errors"] == 0,
        "decision_runs": decision_runs,
    }


class OpenLoop:
    """GET requests at ``rate`` per second, open-loop: request ``i`` is due at ``start + i / rate`` whatever happened
    to the earlier ones, and its latency is measured from that due time. :meth:`run` for a while, and meanwhile or
    afterwards :meth:`take` what was answered."""

    def __init__(self, session: aiohttp.ClientSession, url: Callable[[], str], *, rate: float) -> None:
        self.session = session
        self.url = url
        self.rate = rate
        self._latencies: list[float] = []
        self._errors = 0

    async def run(self, seconds: float) -> float:
        """Send ``rate * seconds`` requests, wait for their answers and return the rate achieved."""
        total = int(self.rate * seconds)
        pending: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        for index in range(total):
            due = start + index / self.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self._one(due, self.url()))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        return total / (time.perf_counter() - start)

    def take(self) -> tuple[list[float], int]:
        """Latencies (seconds from due time) of the requests answered with 200, and the errors, since the last call."""
        latencies, errors = self._latencies, self._errors
        self._latencies, self._errors = [], 0
        return latencies, errors

    async def _one(self, due: float, target: str) -> None:
        try:
            async with self.session.get(target) as response:
                await response.read()
                if response.status != 200:
                    self._errors += 1
                    return
        except aiohttp.ClientError:
            self._errors += 1
            return
        self._latencies.append(time.perf_counter() - due)


async def _open_loop(
    session: aiohttp.ClientSession, url: Callable[[], str], *, rate: float, seconds: float
) -> dict[str, Any]:
    requests = OpenLoop(session, url, rate=rate)
    achieved = await requests.run(seconds)
    latencies, errors = requests.take()
    return {
        "requests": int(rate * seconds),
        "achieved_rate": round(achieved, 1),
        "errors": errors,
        **percentiles(latencies, digits=3),
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs; a run with no answer at all has no percentiles and counts as NaN (goal not met)."""

    def median(key: str) -> float:
        return round(statistics.median(math.nan if r[key] is None else r[key] for r in runs), 3)

    return {
        "p50_ms": median("p50_ms"),
        "p99_ms": median("p99_ms"),
        "max_ms": max(r["max_ms"] or 0 for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
    }
