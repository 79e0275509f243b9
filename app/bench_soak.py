"""``nudge bench --soak``: a steady mixed load for minutes, reported every interval; memory must level off.

One fresh stack as ``nudge bench --e2e`` runs it (:func:`app.bench_e2e.probe_rig`: one worker, one gateway, the
probe trigger, ``clients`` websocket clients in their own process, acking every pop-up). After the same short
warm-up, three loads run side by side for ``minutes``, all open-loop (each item is due at a fixed time and its
latency is measured from that time, so a stall anywhere counts against the result):

- events: ``rate`` per second to ``nudge.events`` for the clients' users, ``TRIGGER_SHARE`` of them firing a
  pop-up (:class:`app.bench_e2e.ProbeProducer`);
- pop-ups: received and acked by the clients, matched to the event that fired each (user, event timestamp);
- decision API reads: ``GET /v1/users/{id}/decision`` for the clients' users at ``rate * DECISION_SHARE`` per second,
  at least ``MIN_DECISION_RATE`` (:class:`app.bench_decision.OpenLoop`).

Every interval (``INTERVAL_S``, shorter for short runs so that there are at least ``MIN_INTERVALS``) one line on
stderr: events/s in, pop-ups/s delivered, event -> browser and decision p50/p99 over the interval, RSS of each
process and how busy the machine was. At the end: totals (pop-ups sent by the worker, delivered, duplicated,
missing; the decisions are read back from ``nudge.messages``), the interval series, overall percentiles, memory per
process and a verdict on it (:mod:`app.bench_soak_report`), and a PNG of the series.

Bounded: at most ``MAX_MINUTES`` and ``MAX_RATE``; the load stops by itself, the drain after it waits at most
``SOAK_DRAIN_TIMEOUT_S``. The bench's own memory grows with the run (it keeps every probe's due time to match
pop-ups); it is neither sampled nor judged.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import sys
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from app.bench_clients import bench_user
from app.bench_decision import OpenLoop
from app.bench_e2e import (
    EVENTS_TOPIC,
    MESSAGES_TOPIC,
    PARTITIONS,
    STALL_S,
    TRIGGER_SHARE,
    WARM_UP_S,
    ProbeRig,
    Produced,
    check_load,
    probe_decisions,
    probe_rig,
    raise_open_files_limit,
)
from app.bench_processes import cpu_percent, cpu_seconds, resident_mb
from app.bench_soak_report import memory_note, memory_report, plot_soak
from app.percentiles import percentiles
from app.stack_client import end_offsets

MAX_MINUTES = 180.0
MAX_RATE = 20_000.0
#: Decision reads per event produced, and the least per second.
DECISION_SHARE = 0.2
MIN_DECISION_RATE = 20.0
#: A progress line this often; shorter runs get MIN_INTERVALS equal intervals.
INTERVAL_S = 10.0
MIN_INTERVALS = 6
#: How often the pop-ups received are fetched from the client process.
COLLECT_S = 0.5
#: Longer than the e2e bench's drain: a soak on a busy machine can end with a backlog of tens of seconds. A drain
#: that stops moving for STALL_S still ends at once.
SOAK_DRAIN_TIMEOUT_S = 120.0


def check_soak(*, minutes: float, rate: float, clients: int) -> None:
    """Raise ``ValueError`` for a soak this bench refuses: out of bounds, or more than the probe trigger carries."""
    if not 0 < minutes <= MAX_MINUTES:
        raise ValueError(f"--minutes must be more than 0 and at most {MAX_MINUTES:g}, not {minutes:g}")
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"--rate must be more than 0 and at most {MAX_RATE:,.0f} events/s, not {rate:g}")
    check_load(clients=clients, rate=rate, seconds=minutes * 60, runs=1)


async def run(*, minutes: float, rate: float, clients: int, plot: Path, partitions: int = PARTITIONS) -> dict[str, Any]:
    """Soak for ``minutes`` (see the module docstring), write the plot to ``plot`` and return the report."""
    check_soak(minutes=minutes, rate=rate, clients=clients)
    raise_open_files_limit(clients)
    seconds = minutes * 60
    intervals = max(MIN_INTERVALS, math.ceil(seconds / INTERVAL_S))
    decision_rate = max(MIN_DECISION_RATE, rate * DECISION_SHARE)
    started = datetime.now(UTC)
    _say(f"starting a fresh stack and {clients:,} clients")
    budget_s = 300 + seconds + 2 * SOAK_DRAIN_TIMEOUT_S
    async with probe_rig(
        clients=clients, rate=rate, budget_s=budget_s, name="bench-soak", partitions=partitions
    ) as rig:
        soak = _Soak(rig, decision_rate=decision_rate, interval_s=seconds / intervals)
        result = await soak.run(seconds, intervals)
    report = {
        "bench": "soak",
        "started": started.isoformat(timespec="seconds"),
        "parameters": {
            "minutes": minutes,
            "rate": rate,
            "trigger_share": TRIGGER_SHARE,
            "clients": clients,
            "connected": len(rig.users),
            "partitions": partitions,
            "decision_rate": decision_rate,
            "interval_s": round(seconds / intervals, 3),
        },
        **result,
        "plot": str(plot),
    }
    title = (
        f"Nudge soak, {started:%Y-%m-%d}: {rate:,.0f} events/s ({TRIGGER_SHARE:.0%} fire a pop-up), "
        f"{len(rig.users):,} clients, {decision_rate:,.0f} decision reads/s, {minutes:g} min"
    )
    plot_soak(plot, result["intervals"], title=title, verdict_line=memory_note(result))
    _say(f"plot written to {plot}")
    return report


class _Pops:
    """The pop-ups received, matched to the events that fired them by (user, event timestamp)."""

    def __init__(self, due: Mapping[tuple[str, str], float]) -> None:
        self._due = due
        #: Every message id received, this run's or not: a second frame with one of them is a duplicate.
        self.ids: set[str] = set()
        self.duplicates = 0
        #: This run's pop-ups (first receipt of each): their ids and latencies from the event's due time.
        self.matched: set[str] = set()
        self.latencies: array[float] = array("d")
        self._interval: list[float] = []

    def add(self, received: Iterable[list[Any]]) -> None:
        for index, message_id, received_at, stamp in received:
            if message_id in self.ids:
                self.duplicates += 1
                continue
            self.ids.add(message_id)
            due = self._due.get((bench_user(index), stamp or ""))
            if due is not None:
                self.matched.add(message_id)
                self.latencies.append(received_at - due)
                self._interval.append(received_at - due)

    def take_interval(self) -> list[float]:
        """Latencies of this run's pop-ups first received since the last call."""
        latencies, self._interval = self._interval, []
        return latencies


class _Soak:
    def __init__(self, rig: ProbeRig, *, decision_rate: float, interval_s: float) -> None:
        self.rig = rig
        self.interval_s = interval_s
        self.decision_rate = decision_rate
        self.produced = Produced()
        self.pops = _Pops(self.produced.due)
        self.decision_latencies: array[float] = array("d")
        self.decision_errors = 0

    async def run(self, seconds: float, intervals: int) -> dict[str, Any]:
        stack = self.rig.stack
        headers = {"Authorization": f"Bearer {stack.api_key}"}
        async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=256)) as session:
            picker = random.Random(11)
            users = self.rig.users

            def decision_url() -> str:
                return f"{stack.http}/v1/users/{picker.choice(users)}/decision"

            reads = OpenLoop(session, decision_url, rate=self.decision_rate)
            _say(f"warming up for {WARM_UP_S:.0f} s")
            await asyncio.gather(self.rig.events.produce(EVENTS_TOPIC, "warm-up", WARM_UP_S), reads.run(WARM_UP_S))
            reads.take()
            starts = await end_offsets(stack.broker.bootstrap, MESSAGES_TOPIC, stack.partitions)
            await self.rig.clients.ask("messages")
            _say(
                f"{self.rig.events.rate:,.0f} events/s, {self.decision_rate:,.0f} decision reads/s for "
                f"{seconds / 60:g} min to {len(users):,} users; a line every {self.interval_s:g} s"
            )
            series, memory = await self._load(reads, seconds, intervals)
        received_all = await self._drain()
        decisions = {
            message_id: decision
            for message_id, decision in (
                await probe_decisions(stack.broker.bootstrap, starts, stack.partitions)
            ).items()
            if (decision.user_id, decision.timestamp) in self.produced.due
        }
        sent = {message_id for message_id, d in decisions.items() if d.outcome == "sent"}
        # Decisions read while their pop-ups were on the way: give them a moment, so only a lost one is missing.
        grace_ends = time.monotonic() + STALL_S
        while not sent <= self.pops.matched and time.monotonic() < grace_ends:
            await asyncio.sleep(0.1)
            self.pops.add((await self.rig.clients.ask("messages"))["messages"])
        delivered = len(sent & self.pops.matched)
        return {
            "totals": {
                "events": self.produced.events,
                "achieved_rate": self.produced.achieved_rate,
                "triggers": self.produced.triggers,
                "sent": len(sent),
                # Triggering events the worker had not decided on when the drain ended: it ran that far behind.
                "undecided": self.produced.triggers - len(decisions),
                "suppressed": dict(Counter(d.reason or "?" for d in decisions.values() if d.outcome != "sent")),
                "delivered": delivered,
                "missing": len(sent) - delivered,
                "duplicates": self.pops.duplicates,
                "other": len(self.pops.ids - sent),
                "drained": received_all,
                "decision_reads": len(self.decision_latencies) + self.decision_errors,
                "decision_errors": self.decision_errors,
            },
            "event_to_browser": percentiles(self.pops.latencies),
            "decision": percentiles(self.decision_latencies),
            **memory,
            "clients": await self.rig.clients.ask("stats"),
            "intervals": series,
        }

    async def _load(
        self, reads: OpenLoop, seconds: float, intervals: int
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Run the events and the decision reads for ``seconds``, one report per interval; the series and memory."""
        start = time.monotonic()
        producing = asyncio.create_task(self.rig.events.produce(EVENTS_TOPIC, "soak", seconds, into=self.produced))
        reading = asyncio.create_task(reads.run(seconds))
        samples: list[tuple[float, dict[str, float]]] = [(0.0, _resident_mb())]
        series: list[dict[str, Any]] = []
        events_before, cpu_before, at_before = 0, cpu_seconds(), start
        psutil.cpu_percent()  # the machine's busy share is measured from here
        try:
            for index in range(1, intervals + 1):
                ends = start + index * self.interval_s
                while (now := time.monotonic()) < ends:
                    await asyncio.sleep(min(COLLECT_S, ends - now))
                    self.pops.add((await self.rig.clients.ask("messages"))["messages"])
                if index == intervals:  # the last events and reads are answered before the last line
                    await asyncio.gather(producing, reading)
                    self.pops.add((await self.rig.clients.ask("messages"))["messages"])
                row = self._interval(reads, at_before, events_before, cpu_before, elapsed_s=time.monotonic() - start)
                series.append(row)
                samples.append((row["elapsed_s"], row["rss_mb"]))
                _say(_line(row))
                events_before, cpu_before, at_before = self.produced.events, cpu_seconds(), time.monotonic()
        finally:
            for task in (producing, reading):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        last = series[-1]["event_to_browser"]["p50_ms"]
        behind_s = None if last is None else round(last / 1000, 1)
        return series, memory_report(samples, minutes=seconds / 60, behind_s=behind_s)

    def _interval(
        self, reads: OpenLoop, at_before: float, events_before: int, cpu_before: dict[str, float], *, elapsed_s: float
    ) -> dict[str, Any]:
        wall_s = time.monotonic() - at_before
        pops = self.pops.take_interval()
        decisions, errors = reads.take()
        self.decision_latencies.extend(decisions)
        self.decision_errors += errors
        event_to_browser, decision = percentiles(pops), percentiles(decisions)
        return {
            "elapsed_s": round(elapsed_s, 1),
            "events_per_s": round((self.produced.events - events_before) / wall_s, 1),
            "pops_per_s": round(len(pops) / wall_s, 1),
            "event_to_browser": {"p50_ms": event_to_browser["p50_ms"], "p99_ms": event_to_browser["p99_ms"]},
            "decision": {
                "p50_ms": decision["p50_ms"],
                "p99_ms": decision["p99_ms"],
                "reads": len(decisions),
                "errors": errors,
            },
            "rss_mb": _resident_mb(),
            "cpu_percent": cpu_percent(cpu_before, cpu_seconds(), wall_s),
            "machine_busy_cores": round(psutil.cpu_percent() / 100 * (psutil.cpu_count() or 1), 2),
        }

    async def _drain(self) -> bool:
        """Collect pop-ups until every triggering event's arrived, none came for ``STALL_S``, or the timeout.

        True if every one arrived."""
        deadline = time.monotonic() + SOAK_DRAIN_TIMEOUT_S
        moved_at = time.monotonic()
        while (now := time.monotonic()) < deadline and len(self.pops.matched) < self.produced.triggers:
            before = len(self.pops.matched)
            self.pops.add((await self.rig.clients.ask("messages"))["messages"])
            if len(self.pops.matched) > before:
                moved_at = now
            elif now - moved_at > STALL_S:
                break
            await asyncio.sleep(0.1)
        return len(self.pops.matched) >= self.produced.triggers


def _resident_mb() -> dict[str, float]:
    """RSS by process, the broker named as such rather than by its executable."""
    return {("broker" if role.startswith("tansu") else role): mb for role, mb in resident_mb().items()}


def _line(row: Mapping[str, Any]) -> str:
    minutes, seconds = divmod(int(row["elapsed_s"]), 60)
    rss = ", ".join(f"{role} {mb:,.0f}" for role, mb in sorted(row["rss_mb"].items()))
    e2b, decision = row["event_to_browser"], row["decision"]
    return (
        f"{minutes}:{seconds:02d} in {row['events_per_s']:,.0f}/s, pops {row['pops_per_s']:,.1f}/s | "
        f"event->browser p50 {e2b['p50_ms']} p99 {e2b['p99_ms']} ms | "
        f"decision p50 {decision['p50_ms']} p99 {decision['p99_ms']} ms | RSS MB {rss} | "
        f"cores busy: machine {row['machine_busy_cores']:g}, this soak {sum(row['cpu_percent'].values()) / 100:.2f}"
    )


def _say(line: str) -> None:
    print(f"soak: {line}", file=sys.stderr, flush=True)
