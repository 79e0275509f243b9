"""The benchmark baseline: a plain Faust agent, one event per record, one table write per event.

This is how a first Faust version of Nudge would look. ``nudge bench`` runs it beside the real pipeline on the same
events and reports the ratio. Configured only from ``BASELINE_*`` variables set by :mod:`app.bench`.
"""

from __future__ import annotations

import os

import faust
import orjson

app = faust.App(
    "nudge-baseline",
    broker=os.environ["BASELINE_BROKER_URL"],
    store="memory://",
    autodiscover=False,
    topic_partitions=8,
    web_port=int(os.environ["BASELINE_WEB_PORT"]),
    web_bind="127.0.0.1",
    web_host="127.0.0.1",
    broker_session_timeout=6.0,
    broker_heartbeat_interval=1.0,
)
events = app.topic("baseline.events", partitions=8, key_serializer="raw", value_serializer="raw")
counts = app.Table("baseline-counts", default=int, partitions=8)
processed = {"events": 0}


@app.agent(events)
async def count_events(stream: faust.StreamT[bytes]) -> None:
    async for value in stream:
        event = orjson.loads(value)
        counts[event.get("userId") or event.get("anonymousId")] += 1
        processed["events"] += 1


@app.page("/stats")
async def stats(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
    return web.json(processed)


if __name__ == "__main__":
    app.main()
