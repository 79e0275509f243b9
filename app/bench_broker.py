"""``nudge bench --broker``: what one Kafka hop costs on the embedded broker as the partitions it reads fill up.

The e2e bench's latency has a floor that is not Nudge's: Tansu 0.6's memory engine spends time on each fetch that
grows with the record batches held in the partitions fetched. Every step starts a fresh broker, fills a topic with
``batches`` record batches of one record each (round-robin over ``partitions``), then sends ``rate`` records/s for
``seconds`` through a topic to a consumer that fetches as the worker does (10 ms waits), and reports the latency
from send to receipt and the broker's CPU (records still missing after a minute are counted, not waited for):

- ``fresh``: nothing held (the baseline of the run);
- ``same-topic``: the hop's own topic holds ``batches / 4``, then ``batches`` batches;
- ``other-topic``: another topic holds ``batches`` batches and the hop uses a fresh one.

Medians of ``runs`` runs per step, and each step's p99 as a ratio to ``fresh``.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.bench_processes import cpu_seconds_of
from app.devstack import EmbeddedBroker, create_topic
from app.percentiles import percentiles
from app.sending import Pacer
from app.tansu_compat import FETCH_MAX_WAIT_MS  # as the worker's consumer and the gateway's deliverer

#: As the gateway's and the benches' producers: a few records per batch at most at these rates.
LINGER_MS = 5
DRAIN_TIMEOUT_S = 60.0


async def run(*, rate: float, seconds: float, batches: int, partitions: int, runs: int) -> dict[str, Any]:
    steps = [("fresh", 0), ("same-topic", batches // 4), ("same-topic", batches), ("other-topic", batches)]
    results: dict[tuple[str, int], list[dict[str, Any]]] = {step: [] for step in steps}
    for index in range(runs):
        for where, held in steps:
            result = await _step(where=where, held=held, rate=rate, seconds=seconds, partitions=partitions)
            results[(where, held)].append(result)
            print(
                f"broker bench run {index + 1}/{runs}: {where}, {held:,} batches held: p50 {result['p50_ms']} ms, "
                f"p99 {result['p99_ms']} ms, broker {result['broker_cpu_percent']}% of a core",
                file=sys.stderr,
                flush=True,
            )
    summary = [{"where": where, "held_batches": held, **_medians(results[(where, held)])} for where, held in steps]
    fresh_p99 = summary[0]["p99_ms"]
    for step in summary:
        step["p99_ratio"] = round(step["p99_ms"] / fresh_p99, 2) if fresh_p99 and step["p99_ms"] else None
    return {
        "bench": "broker",
        "rate": rate,
        "seconds": seconds,
        "partitions": partitions,
        "runs": runs,
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
        "steps": summary,
        "runs_detail": {f"{where}:{held}": results[(where, held)] for where, held in steps},
    }


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs; ``unreceived`` counts the records still missing when a run gave up waiting (its
    latencies are then of the records that arrived)."""
    medians: dict[str, Any] = {}
    for key in ("p50_ms", "p99_ms", "max_ms", "broker_cpu_percent"):
        values = [r[key] for r in runs if r[key] is not None]  # None: the run received nothing
        medians[key] = round(statistics.median(values), 2) if values else None
    return {**medians, "unreceived": sum(r["sent"] - r["received"] for r in runs)}


async def _step(*, where: str, held: int, rate: float, seconds: float, partitions: int) -> dict[str, Any]:
    broker = EmbeddedBroker()
    broker.start()
    try:
        bootstrap = broker.bootstrap
        for topic in ("bench.hop", "bench.other"):
            await create_topic(bootstrap, topic, partitions)
        await _fill(bootstrap, "bench.other" if where == "other-topic" else "bench.hop", held, partitions)
        assert broker.pid is not None
        return await _hop(bootstrap, "bench.hop", rate=rate, seconds=seconds, partitions=partitions, pid=broker.pid)
    finally:
        broker.stop()


async def _fill(bootstrap: str, topic: str, batches: int, partitions: int) -> None:
    """``batches`` record batches of one record each: one send per partition, each round delivered before the next."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        for start in range(0, batches, partitions):
            round_ = [
                await producer.send(topic, b"x" * 100, partition=p) for p in range(min(partitions, batches - start))
            ]
            await asyncio.gather(*round_)
    finally:
        await producer.stop()


async def _hop(bootstrap: str, topic: str, *, rate: float, seconds: float, partitions: int, pid: int) -> dict[str, Any]:
    """Send ``rate`` records/s for ``seconds`` round-robin over the partitions; time each from send to receipt."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=LINGER_MS)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await producer.start()
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.getmany(timeout_ms=200)  # positions known before the first record is sent
        total = int(rate * seconds)
        latencies: list[float] = []

        async def consume() -> None:
            while len(latencies) < total:
                fetched = await consumer.getmany(timeout_ms=100)
                now = time.time()
                for records in fetched.values():
                    latencies.extend(now - float(record.value) for record in records)

        consuming = asyncio.create_task(consume())
        cpu_before, started = cpu_seconds_of(pid), time.monotonic()
        pacer = Pacer(rate)
        for index in range(total):
            await producer.send(topic, repr(time.time()).encode(), partition=index % partitions)
            await pacer.advance(1)
        await producer.flush()
        with contextlib.suppress(TimeoutError):  # a broker this slow is a result too: "received" says how slow
            await asyncio.wait_for(asyncio.shield(consuming), DRAIN_TIMEOUT_S)
        consuming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consuming
        busy = (cpu_seconds_of(pid) - cpu_before) / (time.monotonic() - started)
    finally:
        await consumer.stop()
        await producer.stop()
    return {
        **percentiles(latencies),
        "sent": total,
        "received": len(latencies),
        "broker_cpu_percent": round(busy * 100, 1),
    }
