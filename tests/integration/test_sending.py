"""The senders behind ``nudge simulate`` and ``nudge demo`` against a real local HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from app.sending import send_http
from app.simulate import simulate_events

pytestmark = pytest.mark.integration


@pytest.fixture
async def stuck_collector() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A collector that takes every request and answers none until told: requests stay in flight."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def batch(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.json_response({"success": True})

    app = web.Application()
    app.router.add_post("/v1/batch", batch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", arrived
    finally:
        release.set()
        await runner.cleanup()


async def test_a_stopped_sender_takes_its_requests_in_flight_with_it(
    stuck_collector: tuple[str, asyncio.Event],
) -> None:
    # Ctrl-C on `nudge demo` cancels the sender while the collector still holds some of its requests; they must end
    # with it. Left running, they failed later on their own as the stack shut down, and asyncio printed "Task
    # exception was never retrieved" with a traceback under the demo's goodbye.
    url, arrived = stuck_collector
    loop = asyncio.get_running_loop()
    started: list[asyncio.Future[object]] = []

    def recording_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[object]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        started.append(task)
        return task

    loop.set_task_factory(recording_factory)
    try:
        events = [e for e in simulate_events(users=20, events=2_000, seed=1) if isinstance(e, dict)]
        sender = asyncio.create_task(send_http(events, url=url, write_key="wk", rate=0, concurrency=4))
        await asyncio.wait_for(arrived.wait(), timeout=10)
        sender.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sender
    finally:
        loop.set_task_factory(None)
    requests = [task for task in started if task is not sender and "send_http" in repr(task)]
    assert requests, "the collector held no request of the sender"
    # Each ended with the sender: cancelled (or answered), not failed on its own against a closed session.
    assert [task for task in requests if not task.done() or (not task.cancelled() and task.exception())] == []
