"""Send the Redis read model's queued updates (:mod:`app.read_model`) every 100 ms, coalesced per user."""

from __future__ import annotations

from agents.ingest import read_model
from app.main import app

FLUSH_EVERY_S = 0.1


@app.timer(FLUSH_EVERY_S, name="publish_read_model")
async def publish_read_model() -> None:
    await read_model.flush()
